"""``switchboard calls tail``: a call's transcript and events as they happen, until it ends.

One blocking ``XREAD`` over the call's transcript and event streams, from their start,
so a late ``tail`` shows the whole call so far and then follows it. Between reads the
call record is checked: once the call is over and both streams are drained, the tail
prints the end and returns. Lines are ``HH:MM:SS caller: ...`` for the transcript and
``HH:MM:SS * event key=value`` for events; ``--json`` prints one JSON object per line.
"""

from __future__ import annotations

import sys
import time
from typing import Any, cast

import orjson
import redis

from shared import keys
from shared.models import TERMINAL_STATES, CallState
from switchboard.output import when

BLOCK_MS = 500
SETTLE_S = 1.0
BATCH = 200


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def entry_line(stream: str, entry_id: str, fields: dict[str, str]) -> str:
    """One human line for one stream entry."""
    at = when(_number(fields.get("at")))
    if stream == "transcript":
        return f"{at} {fields.get('role', '?')}: {fields.get('text', '')}"
    rest = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("type", "at"))
    return f"{at} * {fields.get('type', '?')} {rest}".rstrip()


def entry_json(stream: str, entry_id: str, fields: dict[str, str]) -> str:
    """One JSON line for one stream entry; ``at`` as a number when it is one."""
    document: dict[str, Any] = {"stream": stream, "id": entry_id, **fields}
    if "at" in fields:
        document["at"] = _number(fields["at"])
    return orjson.dumps(document).decode()


def _state(client: redis.Redis, call_id: str) -> tuple[str | None, str | None]:
    state, reason = cast(
        "list[str | None]", client.hmget(keys.call_record(call_id), ["state", "end_reason"])
    )
    return state, reason


def follow_call(client: redis.Redis, call_id: str, json_out: bool) -> None:
    """Print the call's entries until it is over and both streams are drained.

    ``client`` must decode responses to ``str``.
    """
    names = {keys.call_transcript(call_id): "transcript", keys.call_events(call_id): "events"}
    positions: dict[Any, Any] = dict.fromkeys(names, "0")
    terminal = {state.value for state in TERMINAL_STATES}
    render = entry_json if json_out else entry_line
    out = sys.stdout
    over_at: float | None = None
    seen_end = False
    while True:
        state, reason = _state(client, call_id)
        if over_at is None and (state is None or state in terminal):
            over_at = time.monotonic()
        # The runner ends the record a moment before it writes its last events: once the
        # call is over, keep reading until its "ended" event or a quiet ``SETTLE_S``.
        block = None if seen_end and over_at is not None else BLOCK_MS
        raw = client.xread(positions, count=BATCH, block=block)
        batch = []
        for key, entries in cast("list[Any]", raw or []):
            for entry_id, fields in entries:
                positions[key] = entry_id
                batch.append((_order(entry_id), names[key], entry_id, fields))
                seen_end = seen_end or (names[key] == "events" and fields.get("type") == "ended")
        # Entry ids are times: sorting merges the two streams into one timeline.
        for _, stream, entry_id, fields in sorted(batch, key=lambda item: item[0]):
            out.write(render(stream, entry_id, fields) + "\n")
        out.flush()
        settled = seen_end or (over_at is not None and time.monotonic() - over_at >= SETTLE_S)
        if over_at is not None and not batch and settled:
            break
    ended = state or CallState.ENDED.value
    if json_out:
        out.write(orjson.dumps({"stream": "end", "state": ended, "end_reason": reason}).decode())
        out.write("\n")
    else:
        out.write(f"call {call_id} {ended}" + (f": {reason}" if reason else "") + "\n")
    out.flush()
