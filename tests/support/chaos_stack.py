"""The whole stack as separate processes, for chaos, soak and security tests.

``chaos_stack(workdir, options)`` starts, all on 127.0.0.1 and free ports:

- a private ``redis-server`` (append-only with ``appendfsync always`` by default, so a
  SIGKILL loses nothing acknowledged), restartable on the same port and data;
- the emulator in a thread, wrapped in ``RestRecorder`` so every REST answer it gives
  (method, path, status, when it was asked and answered) is counted, and sending its
  webhooks to the ingress;
- ``switchboard ingress``, ``switchboard worker`` and ``switchboard runner`` processes,
  each with its output in ``workdir/<name>.log`` (workers and runners also serve
  ``/metrics`` when ``StackOptions.metrics`` is set); any of them can be SIGKILLed and
  started again.

The scenarios' Python tool calls send their own tool-call id as the order number
(the emulator's ``{call_id}`` placeholder), and ``tests.support.chaos_tools`` logs it
on every run: ``ChaosStack.tool_run_ids`` is then the id of every tool run, in order.

Everything is stopped at the end, whatever happened. ``ChaosStack.place`` places calls
through the emulator (and remembers them all); ``tests.support.reconcile`` checks the
result.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import textwrap
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator.app import create_app
from emulator.config import EmulatorConfig
from emulator.response import CALL_ID_PLACEHOLDER
from emulator.scenarios import BUILTIN_DIR
from ingress.verify import sign, signing_key
from tests.support.chaos_tools import CHAOS_TOOL_LOG_ENV
from tests.support.emulator import EmulatorHandle, serve_in_thread
from tests.support.ports import free_port
from tests.support.procs import Child, http_ok, spawn, switchboard_argv, wait_until
from tests.support.runner_stack import STEADY_CALL, STEADY_ORDER

CHAOS_POLICY = """\
transfer_targets:
  human: sip:agent@pbx.example.com
tools:
  lookup_order:
    description: Look up an order by its number.
    parameters:
      type: object
      properties: {{order_id: {{type: string}}}}
      required: [order_id]
    handler: {{type: python, function: "tests.support.chaos_tools:lookup_order", timeout_s: 3}}
  hanging_lookup:
    description: Look up an order in the slow archive.
    parameters:
      type: object
      properties: {{order_id: {{type: string}}}}
      required: [order_id]
    handler:
      type: python
      function: "tests.support.chaos_tools:hanging_lookup"
      timeout_s: 0.5
profiles:
  support:
    instructions: You help {{caller}} who dialled {{called}}.
    greeting: Hello, thanks for calling. How can I help?
    transcription: {{model: gpt-4o-mini-transcribe}}
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    tools: [lookup_order, hanging_lookup, transfer_call, end_call]
  steady:
    instructions: You help {{caller}} who dialled {{called}}.
    transcription: {{model: gpt-4o-mini-transcribe}}
    turn_detection: {{type: server_vad, silence_duration_ms: 400}}
    tools: [lookup_order, transfer_call, end_call]
routes:
  - name: blocked
    match: {{caller: "{blocked}"}}
    action: {{type: reject, code: 603, reason: blocked}}
  - match: {{called: "{steady}"}}
    action: {{type: accept, profile: steady}}
  - action: {{type: accept, profile: support}}
{capacity}"""

STEADY_LINE = "+18005550199"
"""Calls to this number get the ``steady`` profile (no greeting)."""
BLOCKED_CALLER = "+15550006660"
"""Calls from this number are rejected with 603 by the policy."""

HANGING_TOOL = """\
name: hanging-tool
description: The caller asks for an archived order; the archive lookup never answers.
steps:
  - say: Hi, can you find my order from last year? The number is 777.
    reply: I'm sorry, I can't look that up.
    tool:
      name: hanging_lookup
      arguments: {order_id: "{call_id}"}
      then_say: "Here is what the archive said: {output}"
  - say: Okay, thanks anyway. Bye.
    pause_s: 0.3
    reply: Goodbye!
"""


FIXED_ORDER = 'order_id: "12345"'
TOOL_CALL_ORDER = f'order_id: "{CALL_ID_PLACEHOLDER}"'


def tool_call_ids_as_order_ids(scenario: str) -> str:
    """``scenario`` with its lookup's fixed order number replaced by the tool-call id."""
    if FIXED_ORDER not in scenario:
        raise ValueError(f"no {FIXED_ORDER} in the scenario to replace")
    return scenario.replace(FIXED_ORDER, TOOL_CALL_ORDER)


def write_chaos_scenarios(folder: Path) -> Path:
    """The chaos scenarios; ``order-status`` replaces the built-in one of that name."""
    folder.mkdir(parents=True, exist_ok=True)
    order_status = (BUILTIN_DIR / "order-status.yaml").read_text()
    (folder / "order-status.yaml").write_text(tool_call_ids_as_order_ids(order_status))
    (folder / "steady-call.yaml").write_text(STEADY_CALL)
    (folder / "steady-order.yaml").write_text(tool_call_ids_as_order_ids(STEADY_ORDER))
    (folder / "hanging-tool.yaml").write_text(HANGING_TOOL)
    return folder


@dataclass
class RestExchange:
    method: str
    path: str
    status: int
    asked_at: float
    """``time.monotonic()`` when the request arrived."""
    answered_at: float
    """``time.monotonic()`` when its answer started."""


class RestRecorder:
    """ASGI middleware: records the status of every HTTP answer under ``/v1``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exchanges: list[RestExchange] = []
        self._by_path: dict[str, list[int]] = {}
        self._asked: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        asked_at = time.monotonic()
        path = str(scope["path"])
        with self.lock:
            self._asked[path] += 1

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                exchange = RestExchange(scope["method"], path, status, asked_at, time.monotonic())
                with self.lock:
                    self._asked[path] -= 1
                    self.exchanges.append(exchange)
                    self._by_path.setdefault(path, []).append(status)
            await send(message)

        await self.app(scope, receive, recording_send)

    def in_flight(self, verb: str) -> int:
        """Requests to ``.../{verb}`` asked and not answered yet."""
        with self.lock:
            return sum(n for path, n in self._asked.items() if path.endswith("/" + verb))

    def spanning(self, verb: str, at: float) -> list[RestExchange]:
        """Answered requests to ``.../{verb}`` that were in flight at ``at`` (monotonic)."""
        with self.lock:
            return [
                e
                for e in self.exchanges
                if e.path.endswith("/" + verb) and e.asked_at <= at <= e.answered_at
            ]

    def statuses(self, call_id: str, verb: str) -> list[int]:
        """Statuses answered to ``POST /v1/realtime/calls/{call_id}/{verb}``, in order."""
        path = f"/v1/realtime/calls/{call_id}/{verb}"
        with self.lock:
            return list(self._by_path.get(path, ()))

    def counts(self, verb: str) -> Counter[int]:
        with self.lock:
            return Counter(e.status for e in self.exchanges if e.path.endswith("/" + verb))


@dataclass
class HeldDelivery:
    """A webhook the relay took from the emulator and did not pass on."""

    webhook_id: str
    body: bytes


class WebhookRelay:
    """The network between the emulator and the ingress: passes webhooks on, or holds them.

    While ``holding``, a delivery is answered 200 (so the emulator does not retry) and
    kept; the test then delivers held ones itself, in any order, as often as it likes,
    signed with any timestamp (``deliver``).
    """

    def __init__(self, ingress_url: str, secret: str) -> None:
        self.target = f"{ingress_url}/webhooks/openai"
        self.key = signing_key(secret)
        self.holding = False
        self.held: list[HeldDelivery] = []
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=10.0)

    def app(self) -> Starlette:
        clients: list[httpx.AsyncClient] = []

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with httpx.AsyncClient(timeout=10.0) as client:
                clients.append(client)
                yield

        async def relay(request: Request) -> Response:
            body = await request.body()
            if self.holding:
                with self.lock:
                    self.held.append(HeldDelivery(request.headers["webhook-id"], body))
                return Response(b"{}", 200, media_type="application/json")
            headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
            headers["content-type"] = "application/json"
            try:
                answer = await clients[0].post(self.target, content=body, headers=headers)
            except httpx.HTTPError:
                return Response(b"{}", 502, media_type="application/json")
            return Response(answer.content, answer.status_code, media_type="application/json")

        return Starlette(routes=[Route("/", relay, methods=["POST"])], lifespan=lifespan)

    def take_held(self) -> list[HeldDelivery]:
        with self.lock:
            taken, self.held = self.held, []
        return taken

    def deliver(self, delivery: HeldDelivery, *, skew_s: int = 0) -> httpx.Response:
        """Sign ``delivery`` afresh with ``now + skew_s`` and post it to the ingress."""
        timestamp = str(int(time.time()) + skew_s)
        signature = sign(self.key, delivery.webhook_id, timestamp, delivery.body)
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": f"v1,{signature}",
        }
        return self.http.post(self.target, content=delivery.body, headers=headers)


@dataclass
class StackOptions:
    """What to start; defaults suit a short chaos test on a 2-core machine."""

    workers: int = 1
    worker_concurrency: int = 2
    runners: int = 1
    runner_capacity: int = 1000
    max_calls: int | None = None
    time_scale: float = 0.05
    ring_timeout_s: float = 20.0
    appendonly: bool = True
    api_key: str = "sk-chaos-test-key"
    emulator_api_key: str | None = None
    """The key the emulator demands (default: ``api_key``)."""
    webhook_secret: str = EmulatorConfig().webhook_secret
    admin_token: str = "chaos-admin-token"
    metrics: bool = False
    """Workers and runners serve ``/metrics`` (on ports in ``ChaosStack.metrics_urls``)."""
    redis_password: str | None = None
    redis_tls: bool = False
    """Serve Redis over TLS only (a self-signed certificate made with ``openssl``)."""
    extra_env: dict[str, str] = field(default_factory=dict)
    webhook_retry_schedule_s: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])


class RedisProcess:
    """A private redis-server that can be killed and started again on the same port."""

    def __init__(self, workdir: Path, options: StackOptions) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found on PATH: run `make install` first")
        self.workdir = workdir / "redis-data"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = workdir
        self.port = free_port()
        self.password = options.redis_password
        self.argv = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if options.appendonly else "no",
            "--appendfsync", "always",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        if self.password:
            self.argv += ["--requirepass", self.password]
        self.ca_path: Path | None = None
        if options.redis_tls:
            self.ca_path = self.workdir / "redis-cert.pem"
            key_path = self.workdir / "redis-key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-keyout", str(key_path), "-out", str(self.ca_path),
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self.argv[self.argv.index("--port") + 1] = "0"
            self.argv += [
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.ca_path),
                "--tls-key-file", str(key_path),
                "--tls-ca-cert-file", str(self.ca_path),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.starts = 0
        self.child: Child | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.ca_path is not None:
            query = f"ssl_cert_reqs=required&ssl_ca_certs={self.ca_path}"
            return f"rediss://{auth}127.0.0.1:{self.port}/0?{query}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        self.child = spawn(f"redis-{self.port}-{self.starts}", self.argv, self.log_dir)
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_until(answers, 15.0, "redis-server PING", self.child)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.child is not None:
            self.child.stop(sig)


class ChaosStack:
    """Handles on every process of one stack, and what a test does with them."""

    def __init__(self, workdir: Path, options: StackOptions) -> None:
        self.workdir = workdir
        self.options = options
        self.redis_proc = RedisProcess(workdir, options)
        self.policy_path = workdir / "policy.yaml"
        self.tool_log = workdir / "tool-runs.log"
        self.tool_log.touch()
        self.ingress_port = free_port()
        self.ingress_url = f"http://127.0.0.1:{self.ingress_port}"
        self.emu: EmulatorHandle | None = None
        self.recorder: RestRecorder | None = None
        self.relay = WebhookRelay(self.ingress_url, options.webhook_secret)
        self.ingress: Child | None = None
        self.workers: list[Child] = []
        self.runners: dict[str, Child] = {}
        self.metrics_urls: dict[str, str] = {}
        """``/metrics`` of each worker and runner started with a metrics port, by child name."""
        self.placed: list[str] = []
        """Every call placed through this stack, in order."""
        self._serial = 0
        self.write_policy(options.max_calls)

    # -- configuration -------------------------------------------------------------

    def write_policy(self, max_calls: int | None) -> None:
        capacity = ""
        if max_calls is not None:
            capacity = f"capacity:\n  max_calls: {max_calls}\n  when_full: {{code: 486}}\n"
        text = CHAOS_POLICY.format(blocked=BLOCKED_CALLER, steady=STEADY_LINE, capacity=capacity)
        temp = self.policy_path.with_suffix(".tmp")
        temp.write_text(textwrap.dedent(text))
        temp.replace(self.policy_path)

    @property
    def redis_url(self) -> str:
        return self.redis_proc.url

    def env(self) -> dict[str, str]:
        assert self.emu is not None
        return {
            "SWITCHBOARD_REDIS_URL": self.redis_url,
            "OPENAI_BASE_URL": self.emu.api_url,
            "OPENAI_API_KEY": self.options.api_key,
            "OPENAI_WEBHOOK_SECRET": self.options.webhook_secret,
            "SWITCHBOARD_ADMIN_TOKEN": self.options.admin_token,
            "SWITCHBOARD_CONFIG": str(self.policy_path),
            CHAOS_TOOL_LOG_ENV: str(self.tool_log),
            **self.options.extra_env,
        }

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    # -- processes -----------------------------------------------------------------

    def start_ingress(self) -> Child:
        argv = switchboard_argv("ingress", "--host", "127.0.0.1", "--port", str(self.ingress_port))
        child = spawn(f"ingress-{self.ingress_port}", argv, self.workdir, env=self.env())
        self.ingress = child
        wait_until(http_ok(f"{self.ingress_url}/healthz"), 30.0, "ingress /healthz", child)
        return child

    def _metrics_args(self, name: str) -> list[str]:
        if not self.options.metrics:
            return []
        port = free_port()
        self.metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
        return ["--metrics-port", str(port)]

    def start_worker(self) -> Child:
        self._serial += 1
        name = f"worker-{self._serial}"
        argv = switchboard_argv(
            "worker",
            "--concurrency",
            str(self.options.worker_concurrency),
            *self._metrics_args(name),
        )
        child = spawn(name, argv, self.workdir, env=self.env())
        self.workers.append(child)
        wait_until(lambda: " ready." in child.tail(400), 60.0, "celery worker ready", child)
        return child

    def start_runner(self, runner_id: str | None = None) -> Child:
        self._serial += 1
        runner_id = runner_id or f"chaos-runner-{self._serial}"
        name = f"runner-{runner_id}"
        argv = switchboard_argv(
            "runner",
            "--id",
            runner_id,
            "--capacity",
            str(self.options.runner_capacity),
            *self._metrics_args(name),
        )
        child = spawn(name, argv, self.workdir, env=self.env())
        self.runners[runner_id] = child
        rdb = self.client()
        try:
            wait_until(
                lambda: rdb.zscore("sb:runners", runner_id) is not None,
                30.0,
                f"runner {runner_id} registered",
                child,
            )
        finally:
            rdb.close()
        return child

    def kill_worker(self, index: int = 0) -> None:
        """SIGKILL a worker's whole process group (the main process and its pool)."""
        self.workers[index].stop(signal.SIGKILL)

    def kill_runner(self, runner_id: str) -> None:
        self.runners[runner_id].stop(signal.SIGKILL)

    def restart_redis(self, sig: int = signal.SIGKILL) -> None:
        """Stop Redis (SIGKILL by default) and start it again on the same port and data."""
        self.redis_proc.stop(sig)
        self.redis_proc.start()

    def all_children(self) -> list[Child]:
        found = [*self.workers, *self.runners.values()]
        if self.ingress is not None:
            found.append(self.ingress)
        if self.redis_proc.child is not None:
            found.append(self.redis_proc.child)
        return found

    def log_text(self) -> str:
        """Everything every process of the stack wrote so far."""
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.workdir.glob("*.log"))
        )

    # -- traffic -------------------------------------------------------------------

    @property
    def emulator(self) -> EmulatorHandle:
        assert self.emu is not None
        return self.emu

    def place(self, scenario: str, *, caller: str = "+14155550100", to: str | None = None) -> str:
        line = to or (STEADY_LINE if scenario.startswith("steady-") else "+18005550100")
        call_id = self.emulator.place_call(scenario=scenario, from_=caller, to=line)
        self.placed.append(call_id)
        return call_id

    def tool_runs(self) -> list[str]:
        """One ``<tool> <tool-call id>`` line per run of a chaos tool, in order."""
        return [line for line in self.tool_log.read_text().splitlines() if line]

    def tool_run_ids(self) -> list[str]:
        """The tool-call id of every run of a chaos tool, in order (repeated if rerun)."""
        return [line.split(" ", 1)[1] for line in self.tool_runs()]

    def close(self) -> None:
        for child in [*self.runners.values(), *self.workers]:
            child.stop(signal.SIGKILL)
        if self.ingress is not None:
            self.ingress.stop()
        self.redis_proc.stop()
        self.relay.http.close()


@contextmanager
def chaos_stack(
    workdir: Path,
    options: StackOptions | None = None,
    *,
    emulator_config: dict[str, Any] | None = None,
) -> Iterator[ChaosStack]:
    """Start a whole stack in ``workdir``; everything is stopped on exit."""
    options = options or StackOptions()
    workdir.mkdir(parents=True, exist_ok=True)
    stack = ChaosStack(workdir, options)
    scenarios = write_chaos_scenarios(workdir / "scenarios")
    relay = contextlib.ExitStack()
    relay_url = relay.enter_context(serve_in_thread(stack.relay.app()))
    config = EmulatorConfig(
        api_key=options.emulator_api_key or options.api_key,
        webhook_url=f"{relay_url}/",
        webhook_secret=options.webhook_secret,
        webhook_retry_schedule_s=options.webhook_retry_schedule_s,
        ring_timeout_s=options.ring_timeout_s,
        time_scale=options.time_scale,
        scenario_dirs=[scenarios],
        **(emulator_config or {}),
    )
    app = create_app(config)
    recorder = RestRecorder(app)
    stack.recorder = recorder
    try:
        stack.redis_proc.start()
        with serve_in_thread(recorder) as url:
            stack.emu = EmulatorHandle(
                base_url=url,
                webhook_secret=options.webhook_secret,
                api_key=options.api_key,
                app=app,
            )
            try:
                stack.start_ingress()
                for _ in range(options.workers):
                    stack.start_worker()
                for _ in range(options.runners):
                    stack.start_runner()
                yield stack
            finally:
                with contextlib.suppress(Exception):
                    stack.close()
                stack.emu.http.close()
    finally:
        stack.close()
        relay.close()
