"""The fault proxy on its own: plain asyncio sockets on both sides, every toxic."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from experiments.faults.proxy import FaultProxy, slice_sizes

#: Generous bound for anything that should happen; only failures ever wait this long.
WAIT_S = 5.0
#: How long a negative check ("nothing arrives") listens.
QUIET_S = 0.3

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Upstream:
    """A server on port 0 that hands every accepted connection to the test."""

    accepted: asyncio.Queue[Stream] = field(default_factory=asyncio.Queue)
    server: asyncio.Server | None = None

    async def start(self) -> int:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.accepted.put((reader, writer))

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def next(self) -> Stream:
        return await asyncio.wait_for(self.accepted.get(), WAIT_S)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    await server.start()
    yield server
    assert server.server is not None
    server.server.close()


@pytest.fixture
async def proxy(upstream: Upstream) -> AsyncIterator[FaultProxy]:
    assert upstream.server is not None
    port = upstream.server.sockets[0].getsockname()[1]
    fault_proxy = FaultProxy("127.0.0.1", port)
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.stop()


async def connect(proxy: FaultProxy, upstream: Upstream) -> tuple[Stream, Stream]:
    """A client connected through the proxy, and the server's side of that connection."""
    client = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), WAIT_S)
    server = await upstream.next()
    await proxy.wait_until(lambda: proxy.connection_count >= 1, WAIT_S)
    return client, server


async def read_until_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), WAIT_S)


async def assert_quiet(reader: asyncio.StreamReader) -> None:
    """Neither data nor EOF arrives within QUIET_S."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), QUIET_S)


def close(*writers: asyncio.StreamWriter) -> None:
    for writer in writers:
        writer.close()


async def test_forwards_both_ways_and_large_payloads(proxy: FaultProxy, upstream: Upstream) -> None:
    (c_reader, c_writer), (s_reader, s_writer) = await connect(proxy, upstream)
    c_writer.write(b"hello upstream")
    assert await asyncio.wait_for(s_reader.readexactly(14), WAIT_S) == b"hello upstream"
    payload = random.Random(1).randbytes(3 * 1024 * 1024 + 17)
    s_writer.write(payload)
    assert await asyncio.wait_for(c_reader.readexactly(len(payload)), WAIT_S) == payload
    await proxy.wait_until(lambda: proxy.forwarded_bytes == len(payload), WAIT_S)
    close(c_writer, s_writer)


async def test_client_close_reaches_server_and_is_recorded(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    (_, c_writer), (s_reader, s_writer) = await connect(proxy, upstream)
    c_writer.write(b"bye")
    c_writer.close()
    assert await read_until_eof(s_reader) == b"bye"
    s_writer.close()
    await proxy.wait_until(lambda: proxy.connection_count == 0, WAIT_S)
    assert len(proxy.downstream_closed_ns) == 1


async def test_server_close_reaches_client_and_is_recorded(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    (c_reader, c_writer), (_, s_writer) = await connect(proxy, upstream)
    before = time.monotonic_ns()
    s_writer.write(b"last words")
    s_writer.close()
    assert await read_until_eof(c_reader) == b"last words"
    c_writer.close()
    await proxy.wait_until(lambda: proxy.connection_count == 0, WAIT_S)
    assert len(proxy.upstream_closed_ns) == 1
    assert proxy.upstream_closed_ns[0] >= before
    assert [(c.connection, c.side) for c in proxy.peer_closes] == [
        (1, "upstream"),
        (1, "downstream"),
    ]


async def test_blackhole_forwards_nothing_and_closes_nothing(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    (c_reader, c_writer), (s_reader, s_writer) = await connect(proxy, upstream)
    proxy.blackhole()
    c_writer.write(b"up" * 50)
    s_writer.write(b"down" * 50)
    await proxy.wait_until(lambda: proxy.discarded_bytes == 300, WAIT_S)
    await assert_quiet(c_reader)
    await assert_quiet(s_reader)
    assert proxy.connection_count == 1

    # A connection opened during the black hole is accepted and then hears nothing either.
    (n_reader, n_writer), (_, ns_writer) = await connect(proxy, upstream)
    ns_writer.write(b"x" * 10)
    await proxy.wait_until(lambda: proxy.discarded_bytes == 310, WAIT_S)
    await assert_quiet(n_reader)
    assert proxy.connection_count == 2

    proxy.heal()
    c_writer.write(b"after")
    s_writer.write(b"AFTER")
    assert await asyncio.wait_for(s_reader.readexactly(5), WAIT_S) == b"after"
    assert await asyncio.wait_for(c_reader.readexactly(5), WAIT_S) == b"AFTER"
    ns_writer.write(b"new")
    assert await asyncio.wait_for(n_reader.readexactly(3), WAIT_S) == b"new"
    close(c_writer, s_writer, n_writer, ns_writer)


async def test_blackhole_holds_a_server_close_until_heal(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    (c_reader, c_writer), (_, s_writer) = await connect(proxy, upstream)
    assert proxy.connection_ids == {1}
    proxy.blackhole()
    s_writer.close()
    await proxy.wait_until(lambda: len(proxy.upstream_closed_ns) == 1, WAIT_S)
    await assert_quiet(c_reader)  # no FIN passes the black hole
    proxy.heal()
    assert await read_until_eof(c_reader) == b""
    c_writer.close()


async def test_reset_peer_resets_both_sides(proxy: FaultProxy, upstream: Upstream) -> None:
    (c_reader, c_writer), (s_reader, s_writer) = await connect(proxy, upstream)
    proxy.reset_peer()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(c_reader.read(), WAIT_S)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(s_reader.read(), WAIT_S)
    assert proxy.connection_count == 0
    # The proxy made these closes: they are not the peers closing.
    assert proxy.upstream_closed_ns == []
    assert proxy.downstream_closed_ns == []
    close(c_writer, s_writer)


async def test_down_refuses_and_up_accepts_again(proxy: FaultProxy, upstream: Upstream) -> None:
    (c_reader, c_writer), (s_reader, s_writer) = await connect(proxy, upstream)
    port = proxy.port
    proxy.down()
    assert await read_until_eof(c_reader) == b""
    assert await read_until_eof(s_reader) == b""
    assert proxy.connection_count == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT_S)
    close(c_writer, s_writer)

    await proxy.up()
    assert proxy.port == port
    (c_reader, c_writer), (s_reader, s_writer) = await connect(proxy, upstream)
    s_writer.write(b"back")
    assert await asyncio.wait_for(c_reader.readexactly(4), WAIT_S) == b"back"
    close(c_writer, s_writer)


async def test_limit_data_cuts_after_exactly_n_bytes(proxy: FaultProxy, upstream: Upstream) -> None:
    (c_reader, c_writer), (_, s_writer) = await connect(proxy, upstream)
    s_writer.write(b"a" * 300)  # before the toxic: not counted
    assert await asyncio.wait_for(c_reader.readexactly(300), WAIT_S) == b"a" * 300
    proxy.limit_data(1000)
    payload = bytes(range(256)) * 20
    s_writer.write(payload[:600])
    s_writer.write(payload[600:])
    assert await read_until_eof(c_reader) == payload[:1000]
    await proxy.wait_until(lambda: proxy.connection_count == 0, WAIT_S)
    close(c_writer, s_writer)


async def test_slicer_delivers_the_same_bytes_in_smaller_pieces(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    (c_reader, c_writer), (_, s_writer) = await connect(proxy, upstream)
    proxy.slicer(average_size=50, size_variation=20, delay_us=1000)
    payload = random.Random(2).randbytes(2000)
    s_writer.write(payload)
    reads: list[bytes] = []
    while sum(map(len, reads)) < len(payload):
        reads.append(await asyncio.wait_for(c_reader.read(65536), WAIT_S))
    assert b"".join(reads) == payload
    assert len(reads) > 1
    close(c_writer, s_writer)


async def test_latency_delays_and_heal_restores(proxy: FaultProxy, upstream: Upstream) -> None:
    (c_reader, c_writer), (s_reader, s_writer) = await connect(proxy, upstream)
    proxy.latency(200)
    sent = time.monotonic()
    s_writer.write(b"late")
    assert await asyncio.wait_for(c_reader.readexactly(4), WAIT_S) == b"late"
    # A lower bound: the proxy held the chunk at least the configured latency.
    assert time.monotonic() - sent >= 0.2
    proxy.heal()
    s_writer.write(b"free")
    c_writer.write(b"ping")
    assert await asyncio.wait_for(c_reader.readexactly(4), WAIT_S) == b"free"
    assert await asyncio.wait_for(s_reader.readexactly(4), WAIT_S) == b"ping"
    close(c_writer, s_writer)


async def test_bandwidth_paces_and_pushes_back_on_the_server(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    (c_reader, c_writer), (_, s_writer) = await connect(proxy, upstream)
    proxy.bandwidth(20_000)
    sent = time.monotonic()
    s_writer.write(b"b" * 10_000)
    assert await asyncio.wait_for(c_reader.readexactly(10_000), WAIT_S) == b"b" * 10_000
    # 10 kB at 20 kB/s in reads of 1 kB: the first read is free, the other nine wait 50 ms.
    assert time.monotonic() - sent >= 0.4

    # The proxy reads no faster than the rate, so the server's buffers fill and drain blocks.
    flood = 32 * 1024 * 1024
    received = asyncio.create_task(asyncio.wait_for(c_reader.readexactly(flood), WAIT_S * 2))
    s_writer.write(b"c" * flood)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(s_writer.drain(), QUIET_S)
    proxy.heal()
    await asyncio.wait_for(s_writer.drain(), WAIT_S)
    assert len(await received) == flood
    close(c_writer, s_writer)


async def test_stop_closes_every_connection(proxy: FaultProxy, upstream: Upstream) -> None:
    (c_reader, c_writer), (s_reader, s_writer) = await connect(proxy, upstream)
    await proxy.stop()
    assert await read_until_eof(c_reader) == b""
    assert await read_until_eof(s_reader) == b""
    assert proxy.connection_count == 0
    close(c_writer, s_writer)


async def test_upstream_refusing_closes_the_client(upstream: Upstream) -> None:
    assert upstream.server is not None
    port = upstream.server.sockets[0].getsockname()[1]
    upstream.server.close()
    await upstream.server.wait_closed()
    fault_proxy = FaultProxy("127.0.0.1", port)
    await fault_proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", fault_proxy.port)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), WAIT_S)
        writer.close()
    finally:
        await fault_proxy.stop()


@pytest.mark.parametrize("total", [0, 1, 49, 50, 51, 999])
@pytest.mark.parametrize(("average", "variation"), [(1, 0), (50, 0), (50, 20)])
def test_slice_sizes_cover_the_chunk_within_bounds(
    total: int, average: int, variation: int
) -> None:
    sizes = list(slice_sizes(total, average, variation, random.Random(total)))
    assert sum(sizes) == total
    assert all(1 <= size <= average + variation for size in sizes)
    assert all(size >= average - variation for size in sizes[:-1])


@pytest.mark.parametrize(("average", "variation"), [(0, 0), (10, 10), (10, -1)])
def test_slice_sizes_reject_bad_parameters(average: int, variation: int) -> None:
    with pytest.raises(ValueError):
        list(slice_sizes(10, average, variation, random.Random(0)))


def test_toxic_parameters_are_checked_when_set() -> None:
    fault_proxy = FaultProxy("127.0.0.1", 1)
    with pytest.raises(ValueError):
        fault_proxy.slicer(average_size=0)
    with pytest.raises(ValueError):
        fault_proxy.bandwidth(0)
    with pytest.raises(ValueError):
        fault_proxy.limit_data(-1)
