"""The processes a benchmark runs: Redis, ingress, Celery workers, emulator, runners.

``BenchStack`` starts each as a real child process (``tests.support`` helpers), on
loopback ports, in a temporary folder that holds their logs, and stops every one of
them when the ``with`` block ends, whatever happens.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import redis

from bench.procstat import children
from bench.report import RESULTS
from shared import keys
from tests.support.emulator import EmulatorHandle, spawned_emulator
from tests.support.ports import free_port
from tests.support.procs import Child, http_ok, spawn, switchboard_argv, wait_until
from tests.support.redis_server import start_redis
from tests.support.webhook_sender import start_ingress

WEBHOOK_SECRET = "whsec_" + "YmVuY2htYXJrLXdlYmhvb2stc2VjcmV0LTMyYnl0ZXMh"
API_KEY = "sk-bench"

BENCH_POLICY = """\
transfer_targets:
  human: sip:agent@pbx.example.com
tools:
  lookup_order:
    description: Look up an order by its number.
    parameters:
      type: object
      properties: {order_id: {type: string}}
      required: [order_id]
    handler: {type: python, function: "bench.bench_tools:lookup_order", timeout_s: 5}
  lookup_order_blocking:
    description: Look up an order by its number (a blocking function, run by Celery).
    parameters:
      type: object
      properties: {order_id: {type: string}}
      required: [order_id]
    handler: {type: python, function: "bench.bench_tools:lookup_order_blocking", timeout_s: 5}
profiles:
  support:
    instructions: You help {caller} who dialled {called}.
    transcription: {model: gpt-4o-mini-transcribe}
    turn_detection: {type: server_vad, silence_duration_ms: 400}
    tools: [lookup_order, lookup_order_blocking, transfer_call, end_call]
routes:
  - action: {type: accept, profile: support}
"""
"""No capacity limit and no greeting: what is measured is our path, not admission."""


class BenchStack:
    """Child processes of one benchmark; ``close`` (or leaving ``with``) stops them all."""

    def __init__(self, name: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.log_dir = RESULTS / "logs" / name
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._exit = contextlib.ExitStack()
        self.children: list[Child] = []
        self.redis_url = ""
        self.policy_path = self.workdir / "policy.yaml"
        self.policy_path.write_text(BENCH_POLICY)
        self.emu: EmulatorHandle | None = None

    def __enter__(self) -> BenchStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop(signal.SIGTERM, timeout_s=10.0)
        self.children.clear()
        self._exit.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _own(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def env(self) -> dict[str, str]:
        """What every Switchboard process of the stack reads from its environment."""
        env = {
            "SWITCHBOARD_REDIS_URL": self.redis_url,
            "OPENAI_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "OPENAI_API_KEY": API_KEY,
            "SWITCHBOARD_CONFIG": str(self.policy_path),
        }
        if self.emu is not None:
            env["OPENAI_BASE_URL"] = self.emu.api_url
        return env

    def start_redis(self) -> str:
        child, self.redis_url = start_redis(self.workdir / "redis")
        self._own(child)
        return self.redis_url

    def rdb(self) -> redis.Redis:
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self._exit.callback(client.close)
        return client

    def ingress(self) -> tuple[Child, str]:
        child, url = start_ingress(self.log_dir, self.redis_url, secret=WEBHOOK_SECRET)
        self._own(child)
        return child, url

    def python_server(self, module: str, *args: str) -> tuple[Child, str]:
        """``python -m module --port P args`` serving ``/healthz``; it and its URL."""
        port = free_port()
        argv = [sys.executable, "-m", module, "--port", str(port), *args]
        child = self._own(spawn(f"{module.rsplit('.', 1)[-1]}-{port}", argv, self.log_dir))
        url = f"http://127.0.0.1:{port}"
        wait_until(http_ok(f"{url}/healthz"), 30.0, f"{module} /healthz", child)
        return child, url

    def emulator(self, webhook_url: str | None, *args: str) -> EmulatorHandle:
        extra = ["--webhook-url", webhook_url] if webhook_url else []
        env = {"OPENAI_WEBHOOK_SECRET": WEBHOOK_SECRET}
        self.emu = self._exit.enter_context(
            spawned_emulator(self.log_dir, *extra, *args, api_key=API_KEY, env=env)
        )
        return self.emu

    def worker(
        self, queues: str, concurrency: int, loglevel: str = "info", pool: str = "prefork"
    ) -> Child:
        """A Celery worker (``switchboard worker``) on ``queues``, ready once it consumes.

        Run with ``--no-restart``: the Celery worker is then this child itself, with its
        pool processes as its children, which is what the benchmarks count CPU over.
        """
        argv = switchboard_argv(
            "worker", "--no-restart", "-Q", queues, "-c", str(concurrency),
            "--loglevel", loglevel, "-P", pool,
        )  # fmt: skip
        name = f"worker-{queues.replace(',', '-')}-{len(self.children)}"
        child = self._own(spawn(name, argv, self.log_dir, env=self.env()))
        if loglevel.lower() in ("info", "debug"):
            wait_until(lambda: " ready." in child.tail(400), 60.0, "celery worker ready", child)
        elif pool == "threads":
            # No pool processes to wait for: wait until it has declared its queues.
            rdb = self.rdb()
            first = queues.split(",")[0]
            wait_until(
                lambda: bool(rdb.exists(f"_kombu.binding.{first}")), 60.0, "celery worker", child
            )
            time.sleep(2.0)
        else:
            # Its "ready." line is not logged: wait for its pool processes instead.
            wait_until(
                lambda: len(children(child.proc.pid)) >= concurrency, 60.0, "celery pool", child
            )
            time.sleep(2.0)
        return child

    def runner(self, runner_id: str, *args: str) -> Child:
        argv = switchboard_argv("runner", "--id", runner_id, "--loglevel", "warning", *args)
        child = self._own(spawn(f"runner-{runner_id}", argv, self.log_dir, env=self.env()))
        client = redis.Redis.from_url(self.redis_url)
        try:
            wait_until(
                lambda: client.zscore(keys.RUNNERS, runner_id) is not None,
                30.0,
                f"runner {runner_id} registered",
                child,
            )
        finally:
            client.close()
        return child


@contextlib.contextmanager
def bench_stack(name: str) -> Iterator[BenchStack]:
    with BenchStack(name) as stack:
        yield stack
