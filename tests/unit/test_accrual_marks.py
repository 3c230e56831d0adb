"""When the pending accrual marks a takeover left come due (pure: ``TAKE_PENDING``'s
reply read)."""

from __future__ import annotations

import pytest

from shared.accrual import taken_pending


def test_no_pending_mark_left_is_never_due() -> None:
    taken = taken_pending([-1, b"1000", b"0", b"resp_1", b'{"profile": null, "counters": []}'], 3)
    assert taken.due_in_s is None
    assert [step.response_id for step in taken.steps] == ["resp_1"]


@pytest.mark.parametrize(
    ("youngest", "now", "due_s"),
    [
        (1000, (1000, 250000), 2.75),
        (1000, (1003, 0), 0.0),
        (990, (1000, 0), 0.0),
        (1001, (1000, 500000), 3.5),
    ],
)
def test_the_youngest_mark_left_sets_when_all_are_due(
    youngest: int, now: tuple[int, int], due_s: float
) -> None:
    taken = taken_pending([youngest, str(now[0]), str(now[1])], 3)
    assert taken.steps == []
    assert taken.due_in_s == pytest.approx(due_s)
