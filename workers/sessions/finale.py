"""How a call leaves: a transfer or hangup held until the agent's last words have played.

Ending a call cuts its audio, so a decided end (a transfer or hangup command with an
announcement, the ``transfer_call``/``end_call`` tools, a limit's wrap-up, the idle
goodbye) waits for one response: either one we asked for (recognised by the tag in its
``metadata``, or, when the server echoes no metadata, as the first response created
after ours was sent) or the response that called the tool. The finale is ready when
that response is done and its audio has stopped playing (``output_audio_buffer.stopped``
or ``.cleared``; responses that never start audio are ready at ``response.done``), or
at ``deadline_at`` whatever happens: the hard stop. A finale that does not wait for
words (``wait_for_words`` false) simply fires at its deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from shared.models import EndReason
from workers.sessions.client_events import response_tag

FinaleAction = Literal["refer", "hangup"]


@dataclass(slots=True)
class Finale:
    """A pending transfer or hangup, with what it waits for and who asked for it."""

    action: FinaleAction
    reason: EndReason
    deadline_at: float
    target_uri: str | None = None
    detail: str | None = None
    wait_for_words: bool = True
    tag: str | None = None
    """Event id (and metadata tag) of the response we asked for to speak the last words."""
    sent: bool = False
    """Whether our tagged response.create has left the gate."""
    response_id: str | None = None
    response_done: bool = False
    playing: bool = False
    command_id: str | None = None
    command_at: float | None = None
    """When the command was issued or received, to measure its latency."""

    def on_sent(self, event_id: str) -> None:
        if event_id == self.tag:
            self.sent = True

    def on_created(self, response_id: str, metadata: object) -> None:
        if not self.wait_for_words or self.tag is None or self.response_id is not None:
            return
        tag = response_tag(metadata)
        # Without echoed metadata, the first response after ours was sent is taken as ours.
        if tag == self.tag or (self.sent and tag is None and not metadata):
            self.response_id = response_id

    def on_refused(self, event_id: object) -> None:
        """The server refused our ``response.create``: no response of ours exists, so one
        taken for ours (the server's own, created as ours was on its way) is forgotten;
        the gate sends ours again when the floor is free."""
        if self.tag is None or event_id != self.tag:
            return
        self.sent = False
        self.response_id = None
        self.response_done = False
        self.playing = False

    def on_audio_started(self, response_id: str) -> None:
        if response_id == self.response_id:
            self.playing = True

    def on_done(self, response_id: str) -> bool:
        """Whether the finale is ready after this ``response.done``."""
        if response_id != self.response_id or not self.wait_for_words:
            return False
        self.response_done = True
        return not self.playing

    def on_audio_stopped(self, response_id: str) -> bool:
        """Whether the finale is ready after the audio of this response stopped."""
        if response_id != self.response_id or not self.wait_for_words:
            return False
        self.playing = False
        return self.response_done

    def due(self, now_s: float) -> bool:
        return now_s >= self.deadline_at

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["reason"] = self.reason.value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finale:
        fields = dict(data)
        fields["reason"] = EndReason(fields["reason"])
        finale = cls(**fields)
        if (
            finale.action not in ("refer", "hangup")
            or (finale.action == "refer" and not isinstance(finale.target_uri, str))
            or not isinstance(finale.deadline_at, int | float)
        ):
            raise ValueError(f"malformed finale: {data!r}")
        return finale
