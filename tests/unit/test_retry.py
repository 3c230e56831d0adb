"""Backoff, deadlines and Retry-After as pure functions: tables and properties."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.retry import Backoff, backoff_delay_s, next_delay_s, parse_retry_after_s, remaining_s

NO_JITTER = Backoff(base_s=0.1, factor=2.0, max_s=1.0, jitter=0.0)


@pytest.mark.parametrize(
    ("attempt", "expected_s"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (50, 1.0), (10_000, 1.0)],
)
def test_delay_doubles_up_to_the_cap(attempt: int, expected_s: float) -> None:
    assert backoff_delay_s(attempt, 0.7, NO_JITTER) == pytest.approx(expected_s)


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    full = Backoff(base_s=0.1, factor=2.0, max_s=1.0, jitter=1.0)
    assert backoff_delay_s(3, 0.0, full) == pytest.approx(0.4)
    assert backoff_delay_s(3, 0.5, full) == pytest.approx(0.2)
    assert backoff_delay_s(3, 0.999, full) < 0.001


@given(
    attempt=st.integers(min_value=1, max_value=200),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_delay_stays_within_the_jitter_band(attempt: int, rand: float, jitter: float) -> None:
    backoff = Backoff(base_s=0.05, factor=2.0, max_s=2.0, jitter=jitter)
    ceiling_s = min(2.0, 0.05 * 2.0 ** min(attempt - 1, 64))
    delay_s = backoff_delay_s(attempt, rand, backoff)
    assert ceiling_s * (1 - jitter) - 1e-12 <= delay_s <= ceiling_s + 1e-12


@pytest.mark.parametrize(
    ("retry_after_s", "remaining", "expected"),
    [
        (None, 10.0, 0.4),  # plain backoff
        (0.1, 10.0, 0.4),  # Retry-After below the backoff: backoff wins
        (2.5, 10.0, 2.5),  # Retry-After is a floor
        (None, 0.4, None),  # the pause would end exactly at the deadline: give up now
        (2.5, 2.0, None),  # the server asks for longer than we have
        (None, 0.0, None),
    ],
)
def test_next_delay_honours_retry_after_and_the_deadline(
    retry_after_s: float | None, remaining: float, expected: float | None
) -> None:
    got = next_delay_s(3, 0.0, NO_JITTER, remaining, retry_after_s)
    assert got == (pytest.approx(expected) if expected is not None else None)


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "value_ms", "expected"),
    [
        ("2", None, 2.0),
        ("0.25", None, 0.25),
        (" 3 ", None, 3.0),
        ("-4", None, 0.0),
        ("soon", None, None),
        ("", None, None),
        ("nan", None, None),
        ("inf", None, None),
        (None, None, None),
        ("2", "150", 0.15),  # the millisecond header is more precise and wins
        ("2", "junk", 2.0),
        (None, "40", 0.04),
        (email.utils.formatdate(NOW + 30, usegmt=True), None, 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), None, 0.0),
        ("Mon, 99 Foo 2020 99:99:99 GMT", None, None),
    ],
)
def test_retry_after_parsing(
    value: str | None, value_ms: str | None, expected: float | None
) -> None:
    got = parse_retry_after_s(value, NOW, value_ms)
    assert got == (pytest.approx(expected, abs=1e-6) if expected is not None else None)


def test_remaining_is_never_negative() -> None:
    assert remaining_s(10.0, 4.0) == 6.0
    assert remaining_s(10.0, 12.0) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"base_s": -1.0}, {"max_s": -1.0}, {"factor": 0.5}, {"jitter": 1.5}, {"jitter": -0.1}],
)
def test_bad_backoff_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**kwargs)


@pytest.mark.parametrize(("attempt", "rand"), [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_bad_arguments_are_refused(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError, match=r"attempt|rand"):
        backoff_delay_s(attempt, rand, NO_JITTER)
