"""Helpers for call-control tests: incoming records, policy files, a REST-counting proxy."""

from __future__ import annotations

import datetime as dt
import os
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.models import CallRecord, SipHeader
from shared.store import CallStore, CreateResult
from tests.support.emulator import serve_in_thread

TEST_POLICY = """\
schedules:
  closed_now:
    timezone: {tz}
    windows: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: "{start}", end: "{end}"}}]
transfer_targets:
  human: sip:agent@pbx.example.com
profiles:
  support:
    instructions: You help {{caller}} who dialled {{called}}.
    greeting: Hello {{caller}}, how can I help?
    voice: cedar
    transcription: {{model: gpt-4o-mini-transcribe}}
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    tools: [transfer_call, end_call]
routes:
  - name: blocked
    match: {{caller: "+15550006660"}}
    action: {{type: reject, code: 603, reason: blocked}}
  - name: after hours
    match: {{called: "+18005550199", outside: closed_now}}
    action: {{type: reject, code: 480, reason: after_hours}}
  - name: everyone else
    action: {{type: accept, profile: support}}
capacity:
  max_calls: {max_calls}
  when_full: {{code: 486, max_wait_s: {max_wait_s}, poll_s: 0.1}}
"""


FORWARDED_REQUEST = ("authorization", "content-type")
FORWARDED_ANSWER = ("content-type", "retry-after", "retry-after-ms", "x-should-retry")


def policy_text(max_calls: int = 50, max_wait_s: float = 0.0) -> str:
    """The test policy; its schedule is never open (a window that starts in two hours)."""
    zone = "America/New_York"
    local = dt.datetime.now(ZoneInfo(zone))
    start = (local + dt.timedelta(hours=2)).strftime("%H:%M")
    end = (local + dt.timedelta(hours=3)).strftime("%H:%M")
    return TEST_POLICY.format(
        tz=zone, start=start, end=end, max_calls=max_calls, max_wait_s=max_wait_s
    )


def write_policy(path: Path, text: str) -> None:
    """Replace the policy file atomically, as a config manager would."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(textwrap.dedent(text))
    os.replace(temp, path)


def create_incoming(
    store: CallStore,
    call_id: str,
    from_: str = "+14155550100",
    to: str = "+18005550100",
    headers: dict[str, str] | None = None,
) -> CallRecord:
    """The ``incoming`` record the ingress would have written for this call."""
    record = CallRecord.model_validate(
        {
            "id": call_id,
            "from": from_,
            "to": to,
            "sip_headers": [SipHeader(name=k, value=v) for k, v in (headers or {}).items()],
            "webhook_id": f"wh_{call_id}",
            "created_at": time.time(),
        }
    )
    assert store.create_incoming(record) is CreateResult.CREATED
    return record


@dataclass
class Exchange:
    """One request that went through the proxy and the status it got."""

    method: str
    path: str
    status: int
    at_s: float


@dataclass
class RecordingProxy:
    """Forwards every request to the upstream API and records what happened."""

    url: str
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to(self, path_suffix: str) -> list[Exchange]:
        with self.lock:
            return [e for e in self.exchanges if e.path.endswith(path_suffix)]

    def clear(self) -> None:
        with self.lock:
            self.exchanges.clear()


@contextmanager
def recording_proxy(upstream: str) -> Iterator[RecordingProxy]:
    """A real uvicorn proxy in front of ``upstream``; yields it once it serves."""
    holder: list[RecordingProxy] = []
    clients: list[httpx.AsyncClient] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=upstream, timeout=30.0) as client:
            clients.append(client)
            yield

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_REQUEST}
        path = request.scope["raw_path"].decode()
        answer = await clients[0].request(request.method, path, content=body, headers=headers)
        proxy = holder[0]
        with proxy.lock:
            proxy.exchanges.append(
                Exchange(request.method, request.url.path, answer.status_code, time.monotonic())
            )
        passed = {k: v for k, v in answer.headers.items() if k.lower() in FORWARDED_ANSWER}
        return Response(answer.content, answer.status_code, headers=passed)

    routes = [Route("/{path:path}", forward, methods=["GET", "POST"])]
    with serve_in_thread(Starlette(routes=routes, lifespan=lifespan)) as url:
        holder.append(RecordingProxy(url=url))
        yield holder[0]
