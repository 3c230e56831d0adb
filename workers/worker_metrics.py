"""A Celery worker's Prometheus metrics, and their export from a prefork pool.

``WorkerMetrics`` holds what one worker process records: task runs by final state and
their run time (from Celery's ``task_prerun``/``task_postrun`` signals, connected by
``install``), Realtime REST attempts by endpoint and status (the REST client's
``observe`` hook) and call setup latency (``workers.actions.route_call``). Each process
builds its own with ``current()``, after the fork.

Under the prefork pool the tasks run in forked children, so the numbers are kept in
prometheus_client's multiprocess mode: ``prepare_multiprocess`` points
``PROMETHEUS_MULTIPROC_DIR`` at an empty folder before any metric exists, every child
writes its values there, and ``serve`` exports the sum over all of them from the parent
on ``switchboard worker --metrics-port``. Counters of children that exit stay in the
sum, so totals never go backwards. The folder belongs to one worker: it is emptied at
start, and any other process writing there would be summed in, so
``PROMETHEUS_MULTIPROC_DIR`` is set for workers only (unset, each worker makes its own).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from shared import metrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class WorkerMetrics:
    """The instruments of one worker process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tasks = metrics.counter(metrics.TASKS, registry)
        self.task_duration_s = metrics.histogram(metrics.TASK_DURATION, registry)
        self.rest_duration_s = metrics.histogram(metrics.REST_DURATION, registry)
        self.call_setup_s = metrics.histogram(metrics.CALL_SETUP, registry)
        self._started: dict[str, float] = {}

    def observe_rest(self, endpoint: str, status: str, seconds: float) -> None:
        """One REST attempt (the ``shared.realtime_client`` observer)."""
        self.rest_duration_s.labels(endpoint, status).observe(seconds)

    def task_started(self, task_id: str) -> None:
        self._started[task_id] = time.perf_counter()

    def task_finished(self, task_id: str, task: str, state: str) -> None:
        """Count a task attempt by its final state and time it if its start was seen."""
        self.tasks.labels(task, state.lower()).inc()
        started = self._started.pop(task_id, None)
        if started is not None:
            self.task_duration_s.labels(task).observe(time.perf_counter() - started)


_current: WorkerMetrics | None = None
_current_pid = 0


def current() -> WorkerMetrics:
    """This process's metrics; rebuilt in a forked child, never shared across a fork."""
    global _current, _current_pid
    if _current is None or _current_pid != os.getpid():
        _current, _current_pid = WorkerMetrics(CollectorRegistry()), os.getpid()
    return _current


def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        current().task_started(task_id)


def _on_postrun(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    if task_id and task is not None:
        current().task_finished(task_id, str(task.name), state or "unknown")


def _on_process_init(**_: Any) -> None:
    # Built when the pool process starts, so its series exist (at zero) before the first
    # task: a rate over them then counts that task too.
    current()


def install() -> None:
    """Connect the signals (idempotent: Celery dedupes by ``dispatch_uid``)."""
    from celery import signals

    signals.worker_process_init.connect(
        _on_process_init, weak=False, dispatch_uid="switchboard-metrics"
    )
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="switchboard-prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="switchboard-postrun")


def prepare_multiprocess(directory: Path | None = None) -> Path:
    """Switch this process (and its future children) to multiprocess mode in ``directory``.

    Must run before any metric is built. A given folder is emptied (stale files of an
    earlier run would add to the sums); without one, a private folder is made and
    removed at exit.
    """
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="switchboard-metrics-"))
        atexit.register(shutil.rmtree, directory, True)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus_client picks its value store when first imported; pick again now.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Export the sum over every process of this worker on ``host:port`` (``/metrics``)."""
    from prometheus_client import multiprocess

    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        raise RuntimeError("prepare_multiprocess() must run before serve()")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
