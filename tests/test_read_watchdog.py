"""The timer-kept read deadline: a silent peer noticed, a busy consumer or a steady stream not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from model.errors import PeerSilent
from transports.read_watchdog import TICKS, ReadWatchdog


async def _read(watch: ReadWatchdog, read: Awaitable[int]) -> int:
    """One read the way a client's reading loop does it."""
    watch.reads += 1
    watch.waiting = True
    try:
        return await read
    except asyncio.CancelledError as exc:
        silent = watch.silent(exc)
        if silent is None:
            raise
        raise silent from exc
    finally:
        watch.waiting = False


def _resolved_later(delay_s: float, value: int) -> asyncio.Future[int]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    loop.call_later(delay_s, future.set_result, value)
    return future


async def test_a_read_that_waits_past_the_deadline_raises_peer_silent_not_before() -> None:
    seconds = 0.2
    watch = ReadWatchdog(seconds)
    watch.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(PeerSilent, match=r"nothing received for 0\.2 s"):
            async with asyncio.timeout(5):
                await _read(watch, loop.create_future())
    finally:
        watch.close()
    waited = loop.time() - started
    assert seconds <= waited < seconds * (1 + 2 / TICKS) + 0.5


async def test_a_steady_stream_and_a_busy_consumer_are_never_cut() -> None:
    watch = ReadWatchdog(0.5)
    watch.start()
    try:
        async with asyncio.timeout(10):
            # Reads that each wait far less than the deadline, for longer than it.
            for i in range(40):
                assert await _read(watch, _resolved_later(0.02, i)) == i
            # The consumer holds the reader (not waiting in a read) well past the deadline.
            await asyncio.sleep(1.2)
            assert await _read(watch, _resolved_later(0.0, 7)) == 7
    finally:
        watch.close()


async def test_a_cancellation_from_elsewhere_passes_through() -> None:
    watch = ReadWatchdog(5.0)

    async def reader() -> int:
        watch.start()
        return await _read(watch, asyncio.get_running_loop().create_future())

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    watch.close()


async def test_no_deadline_means_no_timer() -> None:
    watch = ReadWatchdog(None)
    watch.start()
    assert watch._timer is None
    assert await _read(watch, _resolved_later(0.0, 3)) == 3
    watch.close()
