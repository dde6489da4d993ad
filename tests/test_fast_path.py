"""The hub's fast path on the servers whose library allows it (issue 13's write path).

While a subscriber is caught up, ``publish`` writes each batch to its socket itself, encoded
once for all; a subscriber whose socket is full leaves for its own task, catches up with
awaited writes and rejoins. Checked end to end on the real servers and clients: the writes
really are the hub's, and nothing is lost, duplicated or reordered across the switch.
"""

from __future__ import annotations

import contextlib

import pytest

from experiments.faults.proxy import FaultProxy
from tests.support import FAST, Receiver, running_server, wait_until
from transports.client import Disconnected
from transports.registry import get
from transports.settings import Settings

#: The transports whose server writes through the hub's fast path.
FAST_PATH = ("tcp", "tornado-ws", "aiohttp-ws")


def test_the_fast_path_transports_say_so_on_their_record() -> None:
    for name in FAST_PATH:
        assert get(name).write_path.startswith("hub fast path"), name


@pytest.mark.parametrize("name", FAST_PATH)
async def test_caught_up_subscribers_are_written_by_publish_and_miss_nothing(name: str) -> None:
    transport = get(name)
    async with running_server(transport, rate_hz=500) as server:
        async with contextlib.AsyncExitStack() as stack:
            readers = [
                await stack.enter_async_context(Receiver(transport, server.port, server.source))
                for _ in range(3)
            ]
            for rx in readers:
                await rx.receive(100)
            await wait_until(lambda: server.hub.fast_count == 3, 10, "all three on the fast path")
            written = server.hub.direct_writes
            for rx in readers:
                await rx.receive(200)
            assert server.hub.direct_writes > written  # the new samples went out that way
    for rx in readers:
        counts = rx.ledger.counts()
        assert (counts.lost, counts.duplicated, counts.reordered) == (0, 0, 0), counts
        assert rx.client.connection == 1


@pytest.mark.parametrize("name", FAST_PATH)
async def test_a_full_socket_leaves_the_fast_path_and_rejoins_without_loss(name: str) -> None:
    transport = get(name)
    # Room to fall far behind without being cut; pings off (they queue behind the data).
    settings: Settings = FAST.with_changes(
        heartbeat_s=0, dead_after_s=10.0, queue_size=100_000, history=100_000
    )
    async with running_server(transport, settings, rate_hz=4_000) as server:
        proxy = FaultProxy("127.0.0.1", server.port)
        await proxy.start()
        try:
            async with Receiver(transport, proxy.port, server.source, settings) as rx:
                await rx.receive(500)
                await wait_until(lambda: server.hub.fast_count == 1, 10, "on the fast path")
                proxy.bandwidth(10_000)  # far below the ~300 kB/s of the stream
                await wait_until(lambda: server.hub.fast_count == 0, 15, "left the fast path")
                proxy.heal()
                await wait_until(lambda: server.hub.fast_count == 1, 15, "back on it")
                await rx.receive(2_000)
        finally:
            await proxy.stop()
    counts = rx.ledger.counts()
    assert (counts.lost, counts.duplicated, counts.reordered) == (0, 0, 0), counts
    assert not any(isinstance(e, Disconnected) for e in rx.events)
    seqs = [s.seq for s in rx.samples]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
