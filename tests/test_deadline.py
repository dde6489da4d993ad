"""The shared dead-peer read deadline: read_within and the per-connection ReadDeadline."""

from __future__ import annotations

import asyncio

import pytest

from model.errors import PeerSilent
from transports.deadline import ReadDeadline, read_within


def _resolved_later(delay_s: float, value: int) -> asyncio.Future[int]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    loop.call_later(delay_s, future.set_result, value)
    return future


async def test_read_within_returns_a_prompt_read_and_times_out_a_silent_one() -> None:
    assert await read_within(_resolved_later(0.0, 7), 5.0) == 7
    with pytest.raises(PeerSilent):
        async with asyncio.timeout(5):
            await read_within(asyncio.get_running_loop().create_future(), 0.05)


async def test_deadline_returns_every_read_and_keeps_one_timer() -> None:
    deadline = ReadDeadline(5.0)
    async with asyncio.timeout(5):
        values = [await deadline.read(_resolved_later(0.0, i)) for i in range(100)]
        timer = deadline._timer
        assert timer is not None
        for i in range(100):
            await deadline.read(_resolved_later(0.0, i))
            assert deadline._timer is timer  # no timer armed per read
    assert values == list(range(100))
    deadline.close()
    assert timer.cancelled() and deadline._timer is None


async def test_deadline_counts_each_read_not_the_connection() -> None:
    # Eight reads of 0.1 s outlast the 0.5 s deadline together, never one by one.
    deadline = ReadDeadline(0.5)
    async with asyncio.timeout(10):
        for i in range(8):
            assert await deadline.read(_resolved_later(0.1, i)) == i
    deadline.close()


async def test_deadline_raises_peer_silent_for_a_read_that_waits_too_long() -> None:
    deadline = ReadDeadline(0.2)
    async with asyncio.timeout(10):
        assert await deadline.read(_resolved_later(0.05, 1)) == 1
        with pytest.raises(PeerSilent, match=r"0\.2 s"):
            await deadline.read(asyncio.get_running_loop().create_future())
        # The connection's later reads start a fresh wait.
        assert await deadline.read(_resolved_later(0.05, 2)) == 2
    deadline.close()


async def test_deadline_passes_an_outside_cancellation_through() -> None:
    deadline = ReadDeadline(5.0)
    started = asyncio.Event()

    async def reader() -> None:
        started.set()
        await deadline.read(asyncio.get_running_loop().create_future())

    task = asyncio.create_task(reader())
    async with asyncio.timeout(5):
        await started.wait()  # set in the same step that starts the read
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    deadline.close()


async def test_no_deadline_waits_as_long_as_it_takes() -> None:
    deadline = ReadDeadline(None)
    async with asyncio.timeout(5):
        assert await deadline.read(_resolved_later(0.05, 3)) == 3
    assert deadline._timer is None
