"""The websockets transport's fan-out: ``broadcast()`` for subscribers in step, a writer of its
own for one that falls behind, and no sample lost or doubled on the way between the two.

What every transport does (resume, faults, limits) is the contract suite's; the wire, close
codes and handshake errors every WebSocket transport shares are ``test_ws_interop.py``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from experiments.faults.hostile import non_readers, request_head, target_of
from experiments.faults.proxy import FaultProxy
from model.sample import Sample
from tests.support import (
    EPOCH,
    FAST,
    Receiver,
    make_samples,
    running_server,
    serving,
    wait_until,
)
from transports.client import Disconnected
from transports.resume import ResumeToken
from transports.websockets_ws import WEBSOCKETS, WebsocketsServer


def _fanout(server: object) -> tuple[int, int]:
    assert isinstance(server, WebsocketsServer)
    return server.fanout


@contextlib.asynccontextmanager
async def _proxied(port: int) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_subscribers_in_step_are_written_by_broadcast_and_miss_nothing() -> None:
    # Pings relaxed: ten clients, the server and the test share one loop here.
    settings = FAST.with_changes(heartbeat_s=1.0, dead_after_s=5.0)
    async with running_server(WEBSOCKETS, settings, rate_hz=200) as server:
        async with contextlib.AsyncExitStack() as stack:
            receivers = [
                await stack.enter_async_context(
                    Receiver(WEBSOCKETS, server.port, server.source, settings)
                )
                for _ in range(10)
            ]
            for rx in receivers:
                await rx.receive(100)
            await wait_until(lambda: _fanout(server.server) == (10, 0), 5, "all in step")
            for rx in receivers:
                await rx.receive(100)
    for rx in receivers:
        counts = rx.ledger.counts()
        assert (counts.lost, counts.duplicated, counts.reordered, counts.corrupted) == (0,) * 4
        assert rx.client.connection == 1


async def test_a_reader_that_stops_leaves_the_broadcast_and_is_cut_alone() -> None:
    # No pings: the raw peers never answer them, and the hub's bound is what is tested.
    settings = FAST.with_changes(heartbeat_s=0, dead_after_s=10.0, queue_size=2_000)
    async with running_server(WEBSOCKETS, settings, rate_hz=4_000) as server:
        async with Receiver(WEBSOCKETS, server.port, server.source, settings) as normal:
            await normal.receive(100)
            target = target_of(WEBSOCKETS, "127.0.0.1", server.port)
            stuck = await non_readers(target, request_head("websocket", target), 1)
            try:
                await wait_until(lambda: server.hub.cut_count >= 1, 15, "the stuck reader's cut")
                await normal.receive(2_000)
            finally:
                for sock in stuck:
                    sock.close()
            await wait_until(lambda: _fanout(server.server) == (1, 0), 5, "only the normal one")
    counts = normal.ledger.counts()
    assert (counts.lost, counts.duplicated) == (0, 0)
    assert normal.client.connection == 1


async def test_a_slow_reader_catches_up_on_its_own_and_rejoins_without_loss() -> None:
    # Room to fall far behind without being cut, and no pings (they queue behind the data).
    settings = FAST.with_changes(
        heartbeat_s=0, dead_after_s=10.0, queue_size=100_000, history=100_000
    )
    async with (
        running_server(WEBSOCKETS, settings, rate_hz=4_000) as server,
        _proxied(server.port) as proxy,
    ):
        async with Receiver(WEBSOCKETS, proxy.port, server.source, settings) as rx:
            await rx.receive(500)
            await wait_until(lambda: _fanout(server.server) == (1, 0), 5, "in step")
            proxy.bandwidth(10_000)  # far below the ~300 kB/s of the stream
            await wait_until(lambda: _fanout(server.server) == (0, 1), 15, "left the broadcast")
            proxy.heal()
            await wait_until(lambda: _fanout(server.server) == (1, 0), 15, "back in step")
            await rx.receive(2_000)
    counts = rx.ledger.counts()
    assert (counts.lost, counts.duplicated, counts.reordered) == (0, 0, 0), counts
    assert not any(isinstance(e, Disconnected) for e in rx.events)
    seqs = [s.seq for s in rx.samples]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def _take(samples: AsyncIterator[Sample], count: int) -> list[int]:
    return [(await anext(samples)).seq for _ in range(count)]


async def test_a_resumed_subscriber_gets_the_history_then_joins_the_broadcast() -> None:
    settings = FAST.with_changes(heartbeat_s=0)
    async with serving(WebsocketsServer, settings, WEBSOCKETS.options, held=500) as server:
        token = ResumeToken(EPOCH, 99)
        async with WEBSOCKETS.connect(
            "127.0.0.1", server.port, token, settings, WEBSOCKETS.options
        ) as stream:
            samples = aiter(stream)
            assert await _take(samples, 400) == list(range(100, 500))
            await wait_until(lambda: server.fanout == (1, 0), 5, "in step once caught up")
            server.hub.publish(make_samples(500, 700))
            assert await _take(samples, 200) == list(range(500, 700))


@pytest.mark.parametrize("subscribers", [1, 20])
async def test_a_backlog_goes_to_every_subscriber_whole(subscribers: int) -> None:
    """A batch bigger than a socket takes at once: some leave the broadcast, none misses."""
    settings = FAST.with_changes(heartbeat_s=0, dead_after_s=10.0, queue_size=20_000)
    async with serving(WebsocketsServer, settings, WEBSOCKETS.options) as server:
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                aiter(
                    await stack.enter_async_context(
                        WEBSOCKETS.connect(
                            "127.0.0.1", server.port, None, settings, WEBSOCKETS.options
                        )
                    )
                )
                for _ in range(subscribers)
            ]
            await wait_until(
                lambda: server.hub.subscriber_count == subscribers, 5, "everyone subscribed"
            )
            for start in range(0, 5_000, 1_000):
                server.hub.publish(make_samples(start, start + 1_000))
            for samples in streams:
                assert await _take(samples, 5_000) == list(range(5_000))
