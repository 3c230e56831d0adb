"""The biller counts a call's bills one at a time, in order, beside the pump."""

from __future__ import annotations

import asyncio

import pytest

from workers.sessions.biller import Biller


class Books:
    """Counts bills only when the test lets it, and remembers the order."""

    def __init__(self) -> None:
        self.counted: list[str] = []
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    def gate(self, bill: str) -> asyncio.Event:
        return self.gates.setdefault(bill, asyncio.Event())

    async def count(self, bill: str) -> None:
        self.started.append(bill)
        await self.gate(bill).wait()
        if bill == "bad":
            raise RuntimeError("the books are closed")
        self.counted.append(bill)


async def test_put_returns_at_once_and_the_bills_are_counted_in_order() -> None:
    books = Books()
    biller = Biller(books.count, "bills of rtc_1")
    biller.put("r1")
    biller.put("r2")
    assert len(biller) == 2
    await asyncio.sleep(0)
    assert books.started == ["r1"]  # one at a time
    books.gate("r2").set()
    books.gate("r1").set()
    await biller.counted()
    assert books.counted == ["r1", "r2"]
    assert len(biller) == 0


async def test_counted_waits_for_bills_put_while_it_waits() -> None:
    books = Books()
    biller = Biller(books.count, "bills of rtc_1")
    biller.put("r1")
    waiting = asyncio.create_task(biller.counted())
    await asyncio.sleep(0)
    biller.put("r2")
    books.gate("r1").set()
    async with asyncio.timeout(1.0):
        while books.started != ["r1", "r2"]:
            await asyncio.sleep(0)
    assert books.counted == ["r1"]
    assert not waiting.done()
    books.gate("r2").set()
    await asyncio.wait_for(waiting, 1.0)
    assert books.counted == ["r1", "r2"]


async def test_counted_with_nothing_to_count_returns_at_once() -> None:
    biller = Biller(Books().count, "bills of rtc_1")
    await asyncio.wait_for(biller.counted(), 1.0)


async def test_a_bill_that_fails_does_not_stop_the_next(caplog: pytest.LogCaptureFixture) -> None:
    books = Books()
    biller = Biller(books.count, "bills of rtc_1")
    for bill in ("bad", "r2"):
        books.gate(bill).set()
        biller.put(bill)
    await biller.counted()
    assert books.counted == ["r2"]
    assert "bills of rtc_1: a bill was not counted" in caplog.text


async def test_a_cancelled_wait_leaves_the_counting_alone() -> None:
    books = Books()
    biller = Biller(books.count, "bills of rtc_1")
    biller.put("r1")
    waiting = asyncio.create_task(biller.counted())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    books.gate("r1").set()
    await biller.counted()
    assert books.counted == ["r1"]


async def test_the_biller_starts_again_after_it_ran_dry() -> None:
    books = Books()
    biller = Biller(books.count, "bills of rtc_1")
    books.gate("r1").set()
    biller.put("r1")
    await biller.counted()
    books.gate("r2").set()
    biller.put("r2")
    await biller.counted()
    assert books.counted == ["r1", "r2"]
