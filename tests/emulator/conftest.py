"""Fixtures for emulator tests: an emulator in a thread and a webhook receiver."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.emulator import EmulatorHandle, running_emulator, serve_in_thread
from tests.support.procs import wait_until

SDP_OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"
)


class WebhookReceiver:
    """A real HTTP endpoint that records every webhook and answers scripted statuses."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.statuses: list[int] = []
        """Statuses to answer, in order; 200 once they run out."""
        self.url = ""
        self.app = Starlette(routes=[Route("/webhooks/openai", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        self.received.append((body, dict(request.headers)))
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(b"", status)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[tuple[bytes, dict[str, str]]]:
        wait_until(lambda: len(self.received) >= count, timeout_s, f"{count} webhooks")
        return list(self.received)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver()
    with serve_in_thread(hooks.app) as url:
        hooks.url = f"{url}/webhooks/openai"
        yield hooks


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    """An emulator that sends no webhooks, shared by a module's tests (each uses new calls)."""
    with running_emulator(ring_timeout_s=5.0) as emu:
        yield emu


SdkFactory = Callable[..., openai.OpenAI]


@pytest.fixture
def sdk() -> Iterator[SdkFactory]:
    """Makes official SDK clients for an emulator (no retries unless asked); closes them."""
    made: list[openai.OpenAI] = []

    def make(
        emu: EmulatorHandle, api_key: str | None = None, max_retries: int = 0
    ) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=emu.api_url, api_key=api_key or emu.api_key, max_retries=max_retries
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
