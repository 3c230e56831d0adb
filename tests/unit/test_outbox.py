"""The outbox of a session worker: effects in order, snapshots only when nothing is
queued, and what a stopped pump left undone."""

from __future__ import annotations

import asyncio

import pytest

from workers.sessions.outbox import Outbox


async def test_effects_are_carried_out_in_order_and_idle_follows() -> None:
    done: list[int] = []

    async def carry_out(batch: list[int]) -> None:
        done.extend(batch)

    async def save() -> None:
        pass

    outbox: Outbox[int] = Outbox(carry_out, save, snapshot_every_s=0.0)
    pump = asyncio.create_task(outbox.run())
    outbox.put([1, 2])
    outbox.put([3])
    await outbox.idle.wait()
    pump.cancel()
    assert done == [1, 2, 3]
    assert outbox.pending() == []


async def test_a_pump_that_fails_leaves_its_batch_and_the_queue_pending() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def carry_out(batch: list[int]) -> None:
        entered.set()
        await release.wait()
        raise ConnectionError("Redis went away")

    async def save() -> None:
        pass

    outbox: Outbox[int] = Outbox(carry_out, save, snapshot_every_s=0.0)
    pump = asyncio.create_task(outbox.run())
    outbox.put([1, 2])
    await entered.wait()
    outbox.put([3])
    release.set()
    with pytest.raises(ConnectionError):
        await pump
    assert outbox.pending() == [1, 2, 3]
    assert not outbox.idle.is_set()


async def test_a_snapshot_is_saved_only_while_nothing_is_queued() -> None:
    saved_with: list[list[int]] = []
    done: list[int] = []

    async def carry_out(batch: list[int]) -> None:
        done.extend(batch)

    async def save() -> None:
        saved_with.append(list(done))

    outbox: Outbox[int] = Outbox(carry_out, save, snapshot_every_s=0.0)
    pump = asyncio.create_task(outbox.run())
    outbox.put([1])
    outbox.mark_dirty()
    outbox.put([2])
    await outbox.idle.wait()
    pump.cancel()
    assert saved_with == [[1, 2]]
