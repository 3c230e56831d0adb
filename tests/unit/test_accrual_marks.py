"""When a call's pending accrual marks come due for a takeover (pure)."""

from __future__ import annotations

import pytest

from shared.accrual import pending_due_in_s


def test_no_pending_mark_is_never_due() -> None:
    assert pending_due_in_s(["done", "1", b"done"], 1000.0, 3) is None


@pytest.mark.parametrize(
    ("marks", "now_s", "due_s"),
    [
        (["pending:1000:{}"], 1000.25, 2.75),
        ([b"pending:1000:{}", "done"], 1003.0, 0.0),
        (["pending:990:{}"], 1000.0, 0.0),
        (["pending:999:{}", "pending:1001:{}", "done"], 1000.5, 3.5),
    ],
)
def test_the_youngest_pending_mark_sets_when_all_are_due(
    marks: list[str | bytes], now_s: float, due_s: float
) -> None:
    assert pending_due_in_s(marks, now_s, 3) == pytest.approx(due_s)
