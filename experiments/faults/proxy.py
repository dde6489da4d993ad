"""An asyncio TCP fault proxy with Toxiproxy's semantics.

The harness puts one ``FaultProxy`` between a client and a server and switches faults on and
off while samples flow:

- ``latency(ms, jitter_ms)``: every chunk is held until ``arrival + ms (± jitter)``; chunks
  stay in order and are pipelined, so throughput is kept (Toxiproxy's latency toxic).
- ``bandwidth(bytes_per_s)``: the upstream socket is read no faster than the rate, so the
  server's own send buffer fills and its backpressure is real.
- ``slicer(average_size, size_variation, delay_us)``: each chunk is written as small pieces
  with a pause between them (several writes per message, stresses the receiver's framing).
- ``limit_data(nbytes)``: a connection is closed after exactly ``nbytes`` more bytes went
  downstream (cuts a message in half).
- ``blackhole()``: nothing is forwarded in either direction, nothing is closed: no FIN, no RST,
  both sockets are still read and what arrives is discarded (Toxiproxy's ``timeout`` = 0).
  A close by either peer during the black hole is recorded but not passed on until ``heal()``.
- ``reset_peer()``: SO_LINGER 0 then close on both sockets of every open connection; each
  peer sees "connection reset".
- ``down()`` / ``up()``: close every connection and stop listening (connect is refused), then
  listen again on the same port.
- ``heal()``: remove every toxic; connections that survived go on forwarding.

Shaping toxics (latency, bandwidth, slicer, limit_data) apply downstream only, server to
client, the direction the stream flows (Toxiproxy's default stream). Black hole, reset and down
apply to both directions.

``tap``, when set, is called with (connection number, downstream?, chunk) for every chunk,
either way, just before the proxy writes it on (so a clock read in the tap precedes the
peer's receipt): what a scenario counts bytes on the wire with.

``upstream_closed_ns`` and ``downstream_closed_ns`` record ``time.monotonic_ns()`` each time
the server or the client closed or reset its side, never for closes the proxy made itself, so
an experiment sees when the server dropped a dead client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["FaultProxy", "PeerClose", "slice_sizes"]

#: Largest read from either socket: big enough that forwarding costs little per byte.
CHUNK_BYTES = 64 * 1024
#: Bytes one direction may hold between its reader and its writer (latency pipeline).
PIPELINE_BYTES = 256 * 1024
#: With a bandwidth toxic, a read takes at most this many seconds' worth of the rate, so
#: pacing stays smooth instead of bursting a whole 64 KiB chunk.
BANDWIDTH_READ_S = 0.05


def slice_sizes(
    total: int, average_size: int, size_variation: int, rng: random.Random
) -> Iterator[int]:
    """Sizes of the pieces one chunk of ``total`` bytes is cut into; they sum to ``total``.

    Each piece is ``average_size ± size_variation`` bytes (at least 1), the last one whatever
    remains, as Toxiproxy's slicer does.
    """
    if average_size < 1:
        raise ValueError(f"average_size must be at least 1, got {average_size}")
    if size_variation < 0 or size_variation >= average_size:
        raise ValueError(
            f"size_variation must be in [0, average_size), got {size_variation} "
            f"for average_size {average_size}"
        )
    remaining = total
    while remaining > 0:
        size = average_size + rng.randint(-size_variation, size_variation)
        size = min(max(size, 1), remaining)
        remaining -= size
        yield size


@dataclass(frozen=True, slots=True)
class PeerClose:
    """A peer closed or reset its side of one proxied connection."""

    #: The connection's number (``FaultProxy.connection_ids``), counted from 1 per proxy.
    connection: int
    #: ``"upstream"`` (the server) or ``"downstream"`` (the client).
    side: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class _Slicer:
    average_size: int
    size_variation: int
    delay_s: float


@dataclass(slots=True)
class _Toxics:
    """The toxics in force; pumps read it for every chunk, so a change applies at once."""

    blackhole: bool = False
    latency_s: float = 0.0
    jitter_s: float = 0.0
    bytes_per_s: int = 0
    slicer: _Slicer | None = None
    limit_bytes: int | None = None
    #: Bumped by every ``limit_data`` call: each connection restarts its count from there.
    limit_generation: int = 0

    def clear(self) -> None:
        """Remove every toxic in place (pumps hold a reference to this object)."""
        self.blackhole = False
        self.latency_s = self.jitter_s = 0.0
        self.bytes_per_s = 0
        self.slicer = None
        self.limit_bytes = None


#: Pipe markers after the last chunk: the peer closed (FIN) or reset (RST) its side.
_END: None = None
_RESET = b""


class _ChunkPipe:
    """A byte-bounded FIFO of (arrival_ns, chunk), ending with ``_END`` or ``_RESET``.

    Bounded in bytes, not items, so many small chunks (one sample each) can be in flight
    under latency while memory stays bounded whatever the peers do.
    """

    def __init__(self, limit_bytes: int) -> None:
        self._items: deque[tuple[int, bytes | None]] = deque()
        self._held = 0
        self._limit = limit_bytes
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, arrival_ns: int, chunk: bytes | None) -> None:
        while self._held >= self._limit:
            self._writable.clear()
            await self._writable.wait()
        self._items.append((arrival_ns, chunk))
        self._held += len(chunk) if chunk else 0
        self._readable.set()

    async def get(self) -> tuple[int, bytes | None]:
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        arrival_ns, chunk = self._items.popleft()
        self._held -= len(chunk) if chunk else 0
        if self._held < self._limit:
            self._writable.set()
        return arrival_ns, chunk

    def drop_all(self) -> None:
        """Discard held data chunks (a black hole began); keep an end marker if present."""
        ends = [item for item in self._items if not item[1]]
        self._items = deque(ends)
        self._held = 0
        self._writable.set()


def _set_linger_zero(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Pair:
    """One client <-> upstream connection and its two directions."""

    def __init__(
        self,
        proxy: FaultProxy,
        number: int,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.number = number
        self.client_reader, self.client_writer = client
        self.upstream_reader, self.upstream_writer = upstream
        self.closing = False
        self.upstream_closed = False
        self.downstream_closed = False
        self.directions_done = 0
        self.limit_generation = -1
        self.limit_counted = 0
        self.next_read_ns = 0
        self.down_pipe = _ChunkPipe(PIPELINE_BYTES)
        self.up_pipe = _ChunkPipe(PIPELINE_BYTES)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._read(self.upstream_reader, self.down_pipe, downstream=True)),
            asyncio.create_task(self._write(self.down_pipe, self.client_writer, downstream=True)),
            asyncio.create_task(self._read(self.client_reader, self.up_pipe, downstream=False)),
            asyncio.create_task(self._write(self.up_pipe, self.upstream_writer, downstream=False)),
        ]

    # -- peers closing -----------------------------------------------------------------
    def note_closed(self, upstream_side: bool) -> None:
        """Record that a peer closed or reset its side (not when the proxy closed it)."""
        if self.closing:
            return
        now = time.monotonic_ns()
        if upstream_side and not self.upstream_closed:
            self.upstream_closed = True
            self.proxy.upstream_closed_ns.append(now)
            self.proxy.peer_closes.append(PeerClose(self.number, "upstream", now))
        elif not upstream_side and not self.downstream_closed:
            self.downstream_closed = True
            self.proxy.downstream_closed_ns.append(now)
            self.proxy.peer_closes.append(PeerClose(self.number, "downstream", now))
        self.proxy._notify()

    def close(self, reset: bool) -> None:
        """Close both sockets (RST if ``reset``) and stop both directions."""
        if self.closing:
            return
        self.closing = True
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        for writer in (self.client_writer, self.upstream_writer):
            if reset:
                _set_linger_zero(writer)
                writer.transport.abort()
            else:
                writer.close()
        self.proxy._forget(self)

    # -- one direction: reader stage ----------------------------------------------------
    async def _read(
        self, reader: asyncio.StreamReader, pipe: _ChunkPipe, *, downstream: bool
    ) -> None:
        toxics = self.proxy._toxics
        try:
            while True:
                chunk = await reader.read(self._read_size(downstream))
                if not chunk:
                    break
                # A read already pending when a bandwidth toxic was set may return more than
                # one paced piece: pace it piece by piece all the same.
                offset = 0
                while offset < len(chunk):
                    piece = chunk[offset : offset + self._read_size(downstream)]
                    offset += len(piece)
                    if downstream and toxics.bytes_per_s > 0 and not toxics.blackhole:
                        await self._pace(len(piece), toxics.bytes_per_s)
                    if toxics.blackhole:
                        self.proxy._discarded(len(piece))
                    else:
                        await pipe.put(time.monotonic_ns(), piece)
        except (ConnectionError, OSError):
            self.note_closed(upstream_side=downstream)
            await pipe.put(time.monotonic_ns(), _RESET)
            return
        self.note_closed(upstream_side=downstream)
        await pipe.put(time.monotonic_ns(), _END)

    def _read_size(self, downstream: bool) -> int:
        toxics = self.proxy._toxics
        if downstream and toxics.bytes_per_s > 0 and not toxics.blackhole:
            return max(1, min(CHUNK_BYTES, int(toxics.bytes_per_s * BANDWIDTH_READ_S)))
        return CHUNK_BYTES

    async def _pace(self, nbytes: int, bytes_per_s: int) -> None:
        """Wait for this piece's slot at the rate, then book the time it takes."""
        delay_ns = self.next_read_ns - time.monotonic_ns()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / 1e9)
        start = max(self.next_read_ns, time.monotonic_ns())
        self.next_read_ns = start + int(nbytes * 1e9 / bytes_per_s)

    # -- one direction: writer stage ----------------------------------------------------
    async def _write(
        self, pipe: _ChunkPipe, writer: asyncio.StreamWriter, *, downstream: bool
    ) -> None:
        toxics = self.proxy._toxics
        try:
            while True:
                arrival_ns, chunk = await pipe.get()
                if not chunk:
                    # The peer closed or reset: pass it on, but not through a black hole.
                    await self.proxy._forwarding.wait()
                    if chunk is _END and writer.can_write_eof():
                        writer.write_eof()
                        break
                    self.close(reset=chunk == _RESET)
                    return
                if toxics.blackhole:
                    self.proxy._discarded(len(chunk))
                    continue
                if downstream:
                    done = await self._write_downstream(arrival_ns, chunk, writer)
                    if done:
                        return
                else:
                    self.proxy._tapped(self.number, False, chunk)
                    writer.write(chunk)
                    await writer.drain()
        except (ConnectionError, OSError):
            self.note_closed(upstream_side=not downstream)
            self.close(reset=True)
            return
        self.directions_done += 1
        if self.directions_done == 2:
            self.close(reset=False)

    async def _write_downstream(
        self, arrival_ns: int, chunk: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Write one chunk with the shaping toxics; True once ``limit_data`` closed the pair."""
        toxics = self.proxy._toxics
        if toxics.latency_s > 0:
            delay_s = toxics.latency_s
            if toxics.jitter_s > 0:
                delay_s = max(0.0, delay_s + random.uniform(-toxics.jitter_s, toxics.jitter_s))
            wait_s = (arrival_ns - time.monotonic_ns()) / 1e9 + delay_s
            if wait_s > 0:
                await asyncio.sleep(wait_s)
        cut = False
        if toxics.limit_bytes is not None:
            if self.limit_generation != toxics.limit_generation:
                self.limit_generation = toxics.limit_generation
                self.limit_counted = 0
            allowed = toxics.limit_bytes - self.limit_counted
            if len(chunk) >= allowed:
                chunk, cut = chunk[: max(0, allowed)], True
            self.limit_counted += len(chunk)
        self.proxy._tapped(self.number, True, chunk)
        slicer = toxics.slicer
        if slicer is None:
            writer.write(chunk)
            await writer.drain()
        else:
            offset = 0
            for size in slice_sizes(
                len(chunk), slicer.average_size, slicer.size_variation, self.proxy._rng
            ):
                if offset and slicer.delay_s > 0:
                    await asyncio.sleep(slicer.delay_s)
                writer.write(chunk[offset : offset + size])
                await writer.drain()
                offset += size
        self.proxy._forwarded(len(chunk))
        if cut:
            self.close(reset=False)
        return cut


class FaultProxy:
    """A TCP proxy in front of one upstream server whose faults a test switches at will."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sockets: Callable[[], socket.socket] | None = None,
    ) -> None:
        #: Makes the proxy's sockets (listening and upstream): on an emulated network path,
        #: sockets of the client's namespace, so the proxy sits in front of its clients there
        #: and its upstream traffic crosses the path. None: ordinary sockets.
        self._sockets = sockets
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._toxics = _Toxics()
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._changed = asyncio.Event()
        self._rng = random.Random()
        self._discarded_bytes = 0
        self._forwarded_bytes = 0
        self._accepted = 0
        self.upstream_closed_ns: list[int] = []
        self.downstream_closed_ns: list[int] = []
        #: The same closes with the connection they belong to, in order.
        self.peer_closes: list[PeerClose] = []
        #: Called with (connection, downstream, chunk) before every chunk is written on.
        self.tap: Callable[[int, bool, bytes], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and listen; port 0 picks a free port, kept by later ``up()`` calls."""
        self._server = await self._listen()
        self._port = self._server.sockets[0].getsockname()[1]

    async def _listen(self) -> asyncio.Server:
        if self._sockets is None:
            return await asyncio.start_server(self._accept, self.host, self._port)
        sock = self._sockets()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        sock.listen(128)
        return await asyncio.start_server(self._accept, sock=sock)

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._sockets is None:
            return await asyncio.open_connection(self.upstream_host, self.upstream_port)
        sock = self._sockets()
        try:
            await asyncio.get_running_loop().sock_connect(
                sock, (self.upstream_host, self.upstream_port)
            )
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        server, self._server = self._server, None
        tasks = [task for pair in self._pairs for task in pair.tasks]
        for pair in list(self._pairs):
            pair.close(reset=False)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await server.wait_closed()

    @property
    def port(self) -> int:
        return self._port

    @property
    def connection_count(self) -> int:
        """Open client <-> upstream pairs."""
        return len(self._pairs)

    @property
    def connection_ids(self) -> frozenset[int]:
        """Numbers of the open connections (as in ``peer_closes``)."""
        return frozenset(pair.number for pair in self._pairs)

    @property
    def forwarded_bytes(self) -> int:
        """Bytes written downstream (server to client) so far, all connections together."""
        return self._forwarded_bytes

    @property
    def discarded_bytes(self) -> int:
        """Bytes a black hole swallowed, both directions together."""
        return self._discarded_bytes

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds, re-checked at every connection or discard event.

        Raises TimeoutError after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    # -- faults ---------------------------------------------------------------------------
    def reset_peer(self) -> None:
        """RST both sides of every open connection (SO_LINGER 0, then close)."""
        for pair in list(self._pairs):
            pair.close(reset=True)

    def blackhole(self) -> None:
        """Forward nothing either way, on open and new connections; close nothing."""
        self._toxics.blackhole = True
        self._forwarding.clear()
        for pair in self._pairs:
            pair.down_pipe.drop_all()
            pair.up_pipe.drop_all()

    def latency(self, ms: float, jitter_ms: float = 0.0) -> None:
        """Hold every downstream chunk ``ms`` (± ``jitter_ms``) after it arrived."""
        self._toxics.latency_s = ms / 1000
        self._toxics.jitter_s = jitter_ms / 1000

    def bandwidth(self, bytes_per_s: int) -> None:
        """Read upstream no faster than ``bytes_per_s`` (downstream)."""
        if bytes_per_s < 1:
            raise ValueError(f"bytes_per_s must be positive, got {bytes_per_s}")
        self._toxics.bytes_per_s = bytes_per_s

    def slicer(self, average_size: int, size_variation: int = 0, delay_us: int = 0) -> None:
        """Write downstream chunks as pieces of ``average_size ± size_variation`` bytes."""
        # Validate now rather than inside a pump task.
        next(slice_sizes(1, average_size, size_variation, self._rng))
        self._toxics.slicer = _Slicer(average_size, size_variation, delay_us / 1e6)

    def limit_data(self, nbytes: int) -> None:
        """Close each connection once ``nbytes`` more bytes went downstream."""
        if nbytes < 0:
            raise ValueError(f"nbytes must not be negative, got {nbytes}")
        self._toxics.limit_bytes = nbytes
        self._toxics.limit_generation += 1

    def down(self) -> None:
        """Close every connection and stop listening: connects are refused until ``up()``."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._pairs):
            pair.close(reset=False)

    async def up(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self._server = await self._listen()

    def heal(self) -> None:
        """Remove every toxic: plain forwarding again for connections that survived."""
        self._toxics.clear()
        self._forwarding.set()
        for pair in self._pairs:
            pair.next_read_ns = 0

    # -- internals ------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await self._connect_upstream()
        except OSError:
            # Upstream refuses: the client sees its connection closed, as with Toxiproxy.
            _set_linger_zero(writer)
            writer.transport.abort()
            return
        if self._server is None:  # down() while we were connecting upstream
            upstream[1].transport.abort()
            writer.transport.abort()
            return
        self._accepted += 1
        pair = _Pair(self, self._accepted, (reader, writer), upstream)
        self._pairs.add(pair)
        pair.start()
        self._notify()

    def _forget(self, pair: _Pair) -> None:
        self._pairs.discard(pair)
        self._notify()

    def _tapped(self, connection: int, downstream: bool, chunk: bytes) -> None:
        if self.tap is not None:
            self.tap(connection, downstream, chunk)

    def _forwarded(self, nbytes: int) -> None:
        self._forwarded_bytes += nbytes
        self._notify()

    def _discarded(self, nbytes: int) -> None:
        self._discarded_bytes += nbytes
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
