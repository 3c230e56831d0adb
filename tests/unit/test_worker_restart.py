"""The restart backoff of ``switchboard worker`` and the exit status it reports."""

from __future__ import annotations

import signal

from switchboard.worker_restart import Backoff, exit_status


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(first_s=0.5, max_s=4.0, stable_s=60.0)
    delays = [backoff.next_delay(ran_s=1.0) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_starts_over_after_a_stable_run() -> None:
    backoff = Backoff(first_s=0.5, max_s=30.0, stable_s=60.0)
    assert [backoff.next_delay(ran_s=2.0) for _ in range(3)] == [0.5, 1.0, 2.0]
    assert backoff.next_delay(ran_s=60.0) == 0.5
    assert backoff.next_delay(ran_s=0.1) == 1.0


def test_exit_status_maps_signals_like_a_shell() -> None:
    assert exit_status(0) == 0
    assert exit_status(1) == 1
    assert exit_status(-signal.SIGKILL) == 137
    assert exit_status(-signal.SIGTERM) == 143
