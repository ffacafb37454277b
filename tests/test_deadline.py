"""The attempt's Deadline: asyncio.timeout_at's behaviour, as the upstream job relies on it."""

from __future__ import annotations

import asyncio

import pytest

from modelrouter.deadline import Deadline


async def test_expiry_becomes_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError), Deadline(loop, loop.time() + 0.01):
        await asyncio.sleep(5)


async def test_work_that_ends_in_time_is_untouched() -> None:
    loop = asyncio.get_running_loop()
    with Deadline(loop, loop.time() + 5) as deadline:
        await asyncio.sleep(0.01)
    assert not deadline.expired
    await asyncio.sleep(0.02)  # the timer was cancelled: no late cancellation of this task


async def test_rescheduling_moves_the_deadline_both_ways() -> None:
    loop = asyncio.get_running_loop()
    with Deadline(loop, loop.time() + 0.02) as deadline:
        deadline.reschedule(loop.time() + 5)
        await asyncio.sleep(0.05)  # past the first deadline: still running

    async def shortened() -> None:
        with Deadline(loop, loop.time() + 5) as deadline:
            deadline.reschedule(loop.time() + 0.01)
            await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await shortened()


async def test_pushed_back_it_expires_at_the_last_time_only() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def streaming() -> None:
        with Deadline(loop, started + 0.05) as deadline:
            for _ in range(3):  # a read every 40 ms pushes the deadline 50 ms past it
                await asyncio.sleep(0.04)
                deadline.reschedule(loop.time() + 0.05)
            await asyncio.sleep(5)  # then nothing more arrives

    with pytest.raises(TimeoutError):
        await streaming()
    assert loop.time() - started >= 0.16, "not cut while the reads kept coming"


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    loop = asyncio.get_running_loop()

    async def attempt() -> None:
        with Deadline(loop, loop.time() + 5):
            await asyncio.sleep(5)

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_outside_cancellation_racing_the_deadline_wins() -> None:
    loop = asyncio.get_running_loop()

    async def attempt() -> None:
        with Deadline(loop, loop.time()):
            await asyncio.sleep(5)

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0)  # the task is inside; its deadline is due
    task.cancel()  # the client went away at the same moment
    with pytest.raises(asyncio.CancelledError):
        await task


def test_outside_a_task_it_refuses() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="inside a task"):
            Deadline(loop, 0.0)
    finally:
        loop.close()
