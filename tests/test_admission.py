"""Admission (transports/admission.py) and the shared client's turn to connect."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.support import FAST, running_server, wait_until
from transports.admission import Admission
from transports.client import ClientEvent, Connected, StreamClient
from transports.registry import get

WAIT_S = 10.0


async def test_at_most_limit_hold_a_turn_first_come_first_served() -> None:
    admission = Admission(2)
    entered: list[int] = []
    holders: list[int] = []
    release = asyncio.Event()

    async def holder(i: int) -> None:
        async with admission:
            entered.append(i)
            holders.append(admission.holders)
            await release.wait()

    tasks = [asyncio.create_task(holder(i)) for i in range(5)]
    await wait_until(lambda: admission.waiting == 3, WAIT_S, "three waiting")
    assert entered == [0, 1]
    release.set()
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(*tasks)
    assert entered == [0, 1, 2, 3, 4]
    assert max(holders) == 2
    assert admission.holders == 0


async def test_a_waiter_cancelled_passes_its_turn_on() -> None:
    admission = Admission(1)
    got: list[str] = []

    async def waiter(name: str) -> None:
        async with admission:
            got.append(name)

    async with admission:
        first = asyncio.create_task(waiter("first"))
        second = asyncio.create_task(waiter("second"))
        await wait_until(lambda: admission.waiting == 2, WAIT_S, "two waiting")
        first.cancel()
    async with asyncio.timeout(WAIT_S):
        await second
    assert got == ["second"]
    assert first.cancelled()
    assert admission.holders == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        Admission(0)


async def test_a_client_waits_its_turn_to_connect_but_not_to_reconnect() -> None:
    admission = Admission(1)
    events: list[ClientEvent] = []

    def connections() -> int:
        return sum(isinstance(e, Connected) for e in events)

    async with running_server(get("tcp"), FAST, rate_hz=500) as server:
        client = StreamClient(
            get("tcp"), "127.0.0.1", server.port, FAST, on_event=events.append, admission=admission
        )

        async def read() -> None:
            async for _ in client:
                pass

        async with admission:  # the only turn is the test's
            reading = asyncio.create_task(read())
            await wait_until(lambda: admission.waiting == 1, WAIT_S, "the client's wait")
            assert events == []  # no attempt made
            assert client.attempts == 1  # the one waiting
        try:
            await wait_until(lambda: connections() == 1, WAIT_S, "the first connection")
            async with admission:  # held again: a reconnect does not wait for it
                await server.restart()
                await wait_until(lambda: connections() == 2, WAIT_S, "the reconnection")
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
