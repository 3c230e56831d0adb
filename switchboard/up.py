"""``switchboard up``: the whole stack on one machine, started in order and stopped cleanly.

Order: Redis (embedded unless ``SWITCHBOARD_REDIS_URL`` is set), the ingress, Celery
workers, session runners and, last, the emulator (unless the real API is used) with its
simulated callers, so that the first simulated call finds everything it needs. The
addresses go to ``.switchboard/up.json`` so that the other commands find the stack.

Stopping drains in waves (``switchboard.supervisor``): runners and workers first while
the ingress, the API and Redis are still up, then the ingress and the emulator, then
Redis; the whole stop fits in ``STOP_GRACE_S``. Secrets reach the children through
their environment, never their command lines, so ``ps`` shows none.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from base64 import b64encode
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import redis

from switchboard.cluster import (
    STATE_DIR,
    UP_FILE_NAME,
    process_running,
    read_up_file,
    write_up_file,
)
from switchboard.embedded_redis import EmbeddedRedis, free_port, start_embedded_redis
from switchboard.supervisor import ChildDied, Supervisor

STOP_GRACE_S = 9.0
"""Ctrl-C to exit in under ten seconds, with a second to spare for the SIGKILL sweep."""
READY_TIMEOUT_S = 30.0
DRAIN_GRACE_S = 3.0
"""How long a stopping runner waits for its calls to end before handing them back."""


class UpRefused(RuntimeError):
    """``up`` cannot start as configured; the message says what to change."""


@dataclass
class UpOptions:
    """What ``switchboard up`` was asked for."""

    demo: bool = False
    runners: int = 1
    workers: int = 1
    calls_per_second: float = 1.0
    duration_s: float | None = None
    """How long simulated callers keep calling; None: until stopped."""
    scenario: str = "mix"
    host: str = "127.0.0.1"
    ingress_port: int | None = None
    time_scale: float = 1.0
    state_dir: Path = STATE_DIR


@dataclass
class StackAddresses:
    """Where the started services listen; written to ``up.json``."""

    redis_url: str
    ingress_url: str
    emulator_url: str | None
    webhook_url: str
    metrics_urls: dict[str, str]
    """Prometheus endpoints by child name (ingress, worker-N, runner-N)."""
    admin_url: str
    admin_token: str
    pid: int
    children: dict[str, int]

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _switchboard(*args: str) -> list[str]:
    return [sys.executable, "-m", "switchboard", *args]


def check_redis(url: str, timeout_s: float = 2.0) -> None:
    """Raise ``UpRefused`` unless the Redis at ``url`` answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except (redis.RedisError, OSError) as err:
        # Name host and port only: the URL may hold a password.
        where = client.connection_pool.connection_kwargs.get("host", "?")
        port = client.connection_pool.connection_kwargs.get("port", "?")
        raise UpRefused(
            f"SWITCHBOARD_REDIS_URL: redis at {where}:{port} is unreachable ({type(err).__name__})"
        ) from None
    finally:
        client.close()


class Stack:
    """A started stack: the supervisor, its addresses and the environment of its children."""

    def __init__(self, options: UpOptions, environ: Mapping[str, str] | None = None) -> None:
        self.options = options
        self.environ = dict(os.environ if environ is None else environ)
        self.supervisor = Supervisor(options.state_dir / "logs")
        self.addresses: StackAddresses | None = None
        self.env: dict[str, str] = {}
        self.redis: EmbeddedRedis | None = None
        self.drained: set[str] = set()
        # The demo's callers are simulated, so it always runs against the emulator.
        self.uses_emulator = options.demo or not self.environ.get("OPENAI_API_KEY")

    @property
    def up_file(self) -> Path:
        return self.options.state_dir / UP_FILE_NAME

    def _environment(self, emulator_url: str | None) -> dict[str, str]:
        env: dict[str, str] = {}
        if emulator_url is not None:
            env["OPENAI_API_KEY"] = "sk-emulator-" + secrets.token_hex(8)
            env["OPENAI_BASE_URL"] = f"{emulator_url}/v1"
            env["OPENAI_WEBHOOK_SECRET"] = "whsec_" + b64encode(secrets.token_bytes(32)).decode()
            env["SWITCHBOARD_EMULATOR_API_KEY"] = env["OPENAI_API_KEY"]
        elif not self.environ.get("OPENAI_WEBHOOK_SECRET"):
            raise UpRefused(
                "OPENAI_WEBHOOK_SECRET must be set when OPENAI_API_KEY is set "
                "(the whsec_... secret of your OpenAI webhook)"
            )
        env["SWITCHBOARD_ADMIN_TOKEN"] = self.environ.get(
            "SWITCHBOARD_ADMIN_TOKEN"
        ) or secrets.token_urlsafe(24)
        return env

    def start(self) -> StackAddresses:
        """Start every service in order; raise ``ChildDied`` or ``UpRefused`` on failure.

        Whatever was started before a failure stays in ``supervisor``: call ``stop``.
        """
        opts, sup = self.options, self.supervisor
        running = read_up_file(self.up_file)
        pid = running.get("pid") if running is not None else None
        if isinstance(pid, int) and pid != os.getpid() and process_running(pid):
            raise UpRefused(
                f"switchboard up is already running here (pid {pid}); stop it first "
                "or give this one another --state-dir"
            )
        ingress_port = opts.ingress_port or free_port()
        host = f"[{opts.host}]" if ":" in opts.host else opts.host
        ingress_url = f"http://{host}:{ingress_port}"
        emulator_url = f"http://127.0.0.1:{free_port()}" if self.uses_emulator else None
        # Configuration problems first, before anything is started.
        env = self._environment(emulator_url)
        redis_url = self.environ.get("SWITCHBOARD_REDIS_URL")
        if redis_url:
            check_redis(redis_url)
        else:
            self.redis = start_embedded_redis(sup, opts.state_dir)
            sup.wait_ready(self.redis.child, self.redis.ready, 10.0)
            redis_url = self.redis.url
        env["SWITCHBOARD_REDIS_URL"] = redis_url
        self.env = env

        ingress = sup.start(
            "ingress",
            _switchboard("ingress", "--host", opts.host, "--port", str(ingress_port)),
            env,
            stop_wave=1,
        )
        local = (
            f"http://127.0.0.1:{ingress_port}" if opts.host in ("0.0.0.0", "::") else ingress_url
        )
        sup.wait_ready(ingress, _http_ok(f"{local}/readyz"), READY_TIMEOUT_S)
        metrics_urls = {"ingress": f"{ingress_url}/metrics"}
        for index in range(opts.workers):
            name, metrics_port = f"worker-{index + 1}", free_port()
            argv = _switchboard("worker", "--metrics-port", str(metrics_port))
            sup.start(name, argv, env, stop_budget_s=5.5)
            metrics_urls[name] = f"http://127.0.0.1:{metrics_port}/metrics"
        for index in range(opts.runners):
            name, metrics_port = f"runner-{index + 1}", free_port()
            # A short drain grace: with the whole stack stopping, no runner is left to
            # take the calls over, so they go back to the queue instead of being waited on.
            argv = _switchboard(
                "runner", "--metrics-port", str(metrics_port), "--drain-grace", str(DRAIN_GRACE_S)
            )
            sup.start(name, argv, env, stop_budget_s=5.5)
            metrics_urls[name] = f"http://127.0.0.1:{metrics_port}/metrics"

        if emulator_url is not None:
            port = emulator_url.rsplit(":", 1)[1]
            args = [
                "emulator", "--host", "127.0.0.1", "--port", port,
                "--webhook-url", f"{local}/webhooks/openai",
                "--time-scale", str(opts.time_scale),
            ]  # fmt: skip
            if opts.demo and opts.calls_per_second > 0:
                args += ["--calls-per-second", str(opts.calls_per_second)]
                args += ["--scenario", opts.scenario]
                if opts.duration_s is not None:
                    args += ["--duration", str(opts.duration_s)]
            emulator = sup.start("emulator", _switchboard(*args), env, stop_wave=1)
            sup.wait_ready(emulator, _http_ok(f"{emulator_url}/healthz"), READY_TIMEOUT_S)

        self.addresses = StackAddresses(
            redis_url=redis_url,
            ingress_url=ingress_url,
            emulator_url=emulator_url,
            webhook_url=f"{ingress_url}/webhooks/openai",
            metrics_urls=metrics_urls,
            admin_url=f"{ingress_url}/v1",
            admin_token=env["SWITCHBOARD_ADMIN_TOKEN"],
            pid=os.getpid(),
            children={child.name: child.pid for child in sup.children},
        )
        write_up_file(self.up_file, self.addresses.as_json())
        return self.addresses

    def stop(self) -> list[str]:
        """Stop every child, remove ``up.json`` and the embedded Redis's files."""
        killed = self.supervisor.stop_all(grace_s=STOP_GRACE_S)
        if self.addresses is not None:  # only our own up.json, never another up's
            self.up_file.unlink(missing_ok=True)
        if self.redis is not None:
            self.redis.remove_files()
        return killed

    def check_children(self) -> list[str]:
        """Raise ``ChildDied`` for a child that stopped; return notes on drained runners.

        A runner that exits 0 was drained (``switchboard runners drain``): it handed its
        calls to the other runners, which is an operator's decision, not a failure.
        """
        notes = []
        for child in self.supervisor.children:
            if child.alive() or child.name in self.drained:
                continue
            if child.name.startswith("runner-") and child.proc.returncode == 0:
                self.drained.add(child.name)
                notes.append(f"{child.name} was drained and has stopped")
                continue
            raise ChildDied(child.name, child.proc.returncode, child.last_lines())
        return notes


def stop_report(stack: Stack) -> None:
    """Stop ``stack`` and say on stderr how long it took and what had to be killed."""
    if not stack.supervisor.children:
        stack.stop()  # nothing ran: nothing to report
        return
    started = time.monotonic()
    killed = stack.stop()
    if killed:
        print(f"switchboard up: killed {', '.join(killed)} after the grace period", file=sys.stderr)
    print(f"switchboard up: stopped in {time.monotonic() - started:.1f}s", file=sys.stderr)
