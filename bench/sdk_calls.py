"""The straightforward way to hold calls, as a baseline: one ``openai`` SDK socket per call.

    python -m bench.sdk_calls --base-url URL --api-key KEY --calls FILE [--warm-up CALL_ID]
        [--lag-sample S]

One process, plain asyncio, ``AsyncOpenAI().realtime.connect(call_id=...)`` per call,
reading every event the way the SDK hands them out (parsed into its models) and
handling the ones a runner must act on (a tool call gets an output and
``response.create``). It counts the events it receives, and with ``--lag-sample`` it
samples its event loop's lag exactly as a runner does (``workers.sessions.loop_lag``,
into the runner's histogram), which costs it the same CPU and gives the same figure.

The benchmark drives it with one line at a time on stdin, and reads one line back on
stdout for each, so that it can read the process at known moments:

- once its imports are done, and with ``--warm-up CALL_ID`` once it has held that call
  until its first ``response.done`` (whatever the SDK loads on first use is then
  loaded), it prints ``ready`` and waits: its resident memory then is the empty
  process's;
- ``go [SPREAD_S]``: attach to every call id listed in FILE (read now), the attaches
  spread evenly over ``SPREAD_S`` seconds (default 0: all at once); prints ``going``;
- ``count``: prints a JSON object: ``events`` received so far, sockets ``open`` now,
  ``closed`` (ended by the server) and ``failed`` (with the ``last_error``), ``at``
  (``time.time()``) and ``lag``, the lag histogram in Prometheus text format;
- ``stop``, or the end of stdin: close every socket and exit.

``SdkCalls`` is the benchmark's side: it starts the process and speaks that protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry, generate_latest

from shared import metrics
from tests.support.procs import wait_until
from workers.sessions.loop_lag import sample_lag

READY_TIMEOUT_S = 90.0


@dataclass
class Tally:
    """What the process has received and held so far."""

    events: int = 0
    open: int = 0
    closed: int = 0
    failed: int = 0
    last_error: str = ""


async def hold(
    client: AsyncOpenAI,
    call_id: str,
    tally: Tally,
    until: str | None = None,
    after_s: float = 0.0,
) -> None:
    """After ``after_s``, attach to ``call_id`` and handle its events until it ends (or
    ``until`` arrives)."""
    await asyncio.sleep(after_s)
    try:
        async with client.realtime.connect(call_id=call_id) as conn:
            tally.open += 1
            try:
                async for event in conn:
                    tally.events += 1
                    if event.type == "response.function_call_arguments.done":
                        output = orjson.dumps({"status": "shipped"}).decode()
                        await conn.conversation.item.create(
                            item={
                                "type": "function_call_output",
                                "call_id": event.call_id,
                                "output": output,
                            }
                        )
                        await conn.response.create()
                    elif event.type == until:
                        return
            finally:
                tally.open -= 1
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        tally.failed += 1
        tally.last_error = f"{type(exc).__name__}: {exc}"[:300]
    else:
        tally.closed += 1


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(
    base_url: str, api_key: str, calls: Path, warm_up: str | None, lag_sample_s: float | None
) -> None:
    client = AsyncOpenAI(base_url=base_url, api_key=api_key)
    registry = CollectorRegistry()
    lag = metrics.histogram(metrics.RUNNER_LOOP_LAG, registry)
    sampler = asyncio.create_task(sample_lag(lag_sample_s, lag.observe)) if lag_sample_s else None
    if warm_up:
        warm = Tally()
        async with asyncio.timeout(READY_TIMEOUT_S - 10):
            await hold(client, warm_up, warm, until="response.done")
        if warm.failed or warm.closed:
            problem = warm.last_error or "it ended first"
            raise RuntimeError(f"warm-up call {warm_up} never had a turn: {problem}")
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    tally = Tally()
    tasks: list[asyncio.Task[None]] = []
    _say("ready")
    while line := (await commands.readline()).decode().strip():
        command, _, argument = line.partition(" ")
        if command == "go" and not tasks:
            try:
                spread_s = float(argument or 0)
            except ValueError:
                _say(f"error: not a number of seconds: {argument!r}")
                continue
            call_ids = (await asyncio.to_thread(calls.read_text)).split()
            tasks = [
                asyncio.create_task(
                    hold(client, call_id, tally, after_s=i * spread_s / len(call_ids))
                )
                for i, call_id in enumerate(call_ids)
            ]
            _say("going")
        elif line == "count":
            lag_text = generate_latest(registry).decode()
            _say(json.dumps(asdict(tally) | {"at": time.time(), "lag": lag_text}))
        elif line == "stop":
            break
        else:
            _say(f"error: unexpected command {line!r}")
    for task in [*tasks, *([sampler] if sampler else [])]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class SdkCalls:
    """The benchmark's handle on a ``bench.sdk_calls`` process (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        calls: Path,
        log: Path,
        warm_up: str | None = None,
        lag_sample_s: float | None = None,
    ) -> None:
        self.calls = calls
        argv = [
            sys.executable, "-m", "bench.sdk_calls",
            "--base-url", base_url, "--api-key", api_key, "--calls", str(calls),
        ]  # fmt: skip
        if warm_up:
            argv += ["--warm-up", warm_up]
        if lag_sample_s:
            argv += ["--lag-sample", str(lag_sample_s)]
        with log.open("wb") as log_file:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                bufsize=0,  # unbuffered: select() sees every line the process wrote
                start_new_session=True,
            )
        self._log = log
        try:
            self._expect("ready", READY_TIMEOUT_S)
        except BaseException:
            self.proc.kill()
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _stdio(self) -> tuple[IO[bytes], IO[bytes]]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        return self.proc.stdin, self.proc.stdout

    def _line(self, timeout_s: float) -> str:
        _, stdout = self._stdio()
        readable, _, _ = select.select([stdout], [], [], timeout_s)
        line = stdout.readline().decode().strip() if readable else ""
        if not line:
            tail = self._log.read_text(errors="replace")[-2000:]
            state = "exited" if self.proc.poll() is not None else f"silent for {timeout_s:g} s"
            raise RuntimeError(f"bench.sdk_calls {state}:\n{tail}")
        return line

    def _expect(self, word: str, timeout_s: float) -> None:
        line = self._line(timeout_s)
        if line != word:
            raise RuntimeError(f"bench.sdk_calls said {line!r}, expected {word!r}")

    def _send(self, command: str) -> None:
        stdin, _ = self._stdio()
        stdin.write(command.encode() + b"\n")
        stdin.flush()

    def go(self, call_ids: list[str], spread_s: float = 0.0) -> None:
        """Attach to ``call_ids`` (written to the calls file first) over ``spread_s``."""
        self.calls.write_text("\n".join(call_ids))
        self._send(f"go {spread_s:g}")
        self._expect("going", 30.0)

    def count(self) -> dict[str, Any]:
        """The process's tally now (see the module docstring)."""
        self._send("count")
        tally: dict[str, Any] = json.loads(self._line(30.0))
        return tally

    def wait_open(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until ``count`` sockets are open."""
        wait_until(lambda: self.count()["open"] >= count, timeout_s, "SDK sockets open")

    def stop(self, timeout_s: float = 20.0) -> None:
        """Close every socket and wait for the process to exit (killed if it does not)."""
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self._send("stop")
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in self._stdio():
            pipe.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="sk-bench")
    parser.add_argument("--calls", type=Path, required=True)
    parser.add_argument("--warm-up", metavar="CALL_ID")
    parser.add_argument("--lag-sample", type=float, metavar="S")
    args = parser.parse_args()
    asyncio.run(main(args.base_url, args.api_key, args.calls, args.warm_up, args.lag_sample))
