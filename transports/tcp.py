"""Raw TCP, one JSON object per line (NDJSON): the thinnest push transport.

Handshake: the client's first line is its hello, ``{}`` or ``{"epoch":E,"since":SEQ}``; the
server sends nothing before it, so a bare connect-and-leave (a readiness probe) costs nothing
and logs nothing. Then the server streams wire-form samples, one per line, a whole batch per
write, and a ``{"heartbeat":NS}`` line whenever it was idle for ``settings.heartbeat_s``.

A peer that breaks the rules gets a last ``{"error":"..."}`` line (its text from
:mod:`transports.rejections`) and is closed; the server goes on serving the others. The rules:
a hello within ``settings.header_timeout_s`` (every server's limit for a request head; the
``hello_timeout_s`` option, when set, overrides it for tcp alone), well-formed, no
longer than ``settings.max_message_bytes``; after it the client may send only its own
``{"heartbeat":NS}`` lines, and anything else is rejected.

Client heartbeats are optional, so that a read-only client works: ``printf '{}\n' | nc`` (or
``socat``, ``nc -N``, which half-close once stdin ends) keeps receiving. The client notices a
silent server (a black hole) after ``dead_after_s`` from the server's samples and heartbeats.
The server notices a silent client in one of two ways: a client that sends heartbeats (this
module's does, the first with its hello, then every ``heartbeat_s``) is held to them once it
sent its first (``dead_after_s`` without one ends it, when ``heartbeat_s`` is on); a client
that sends none is left to the kernel, whose ``TCP_USER_TIMEOUT`` and keepalive
(:func:`transports.sockets.tune_accepted`) abort a connection whose data stays
unacknowledged, as they do for every transport. The client's EOF after its hello (a
half-close) means "no more lines from me", not "gone": the stream goes on until a write fails.

A subscriber that falls too far behind is cut the same way (it can resume). At the connection
limit a newcomer gets ``{"error":"server full"}`` at once, without waiting for its hello.
``stop()`` ends every stream with a plain close (EOF), which clients treat as a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated

import msgspec

from model.errors import (
    ConnectionLost,
    FrameTooLarge,
    MalformedSample,
    NotThisProtocol,
    PeerSilent,
    ProtocolError,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample
from transports.contract import Features, Transport
from transports.deadline import ReadDeadline, read_within
from transports.direct_writes import asyncio_writer
from transports.failures import unreachable
from transports.hub import Hub, Subscription
from transports.ndjson import (
    LineSplitter,
    decode_server_line,
    encode_error,
    encode_heartbeat,
    encode_hello,
    encode_sample_lines,
    lines_of,
    parse_client_line,
    parse_hello,
    server_block,
)
from transports.options import Options
from transports.rejections import rejection_text
from transports.resume import ResumeToken
from transports.sample_stream import BatchedSampleStream
from transports.settings import Settings
from transports.sockets import BACKLOG, bound_port, listening_sockets, tune_accepted
from transports.tls import client_ssl, server_ssl

__all__ = ["TCP", "TcpOptions", "TcpServer", "connect", "keepalive_params"]

log = logging.getLogger(__name__)


class TcpOptions(Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What only the tcp transport needs."""

    #: How long a new connection may take to send its hello; None: the shared
    #: ``settings.header_timeout_s``, which every server gives a request head.
    hello_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None


#: How long a closing connection may take to flush its last bytes before it is aborted (a peer
#: that stopped reading would otherwise hold it open forever).
CLOSE_GRACE_S = 1.0
#: Bytes asked for per read.
READ_CHUNK = 65536
#: The client stops adding heartbeats to a send buffer already holding this much.
MAX_UNSENT_HEARTBEAT_BYTES = 4096


class _Rejected(Exception):
    """Internal: end this connection with an error line saying why (``error``)."""

    def __init__(self, error: StreamError) -> None:
        super().__init__(error)
        self.error = error


class _PeerGone(Exception):
    """Internal: the peer left before its hello; there is nobody to tell anything."""


class _Connection:
    """One accepted peer and the one way it ends."""

    __slots__ = ("ended", "rejected", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.ended = asyncio.Event()
        self.rejected = False

    def end(self, error: StreamError | None = None) -> None:
        """Stop the stream, after a last error line if ``error`` (idempotent).

        Synchronous, so the hub's overflow callback can call it while the pump is blocked in
        ``drain()`` on a peer that stopped reading; the handler, woken by ``ended``, cancels
        the pump and finishes the close.
        """
        if self.ended.is_set():
            return
        self.ended.set()
        if self.writer.is_closing():
            return
        if error is None:
            self.writer.close()
            return
        text = rejection_text(error)
        log.info("closing %s: %s", self.writer.get_extra_info("peername"), text)
        self.rejected = True
        self.writer.write(encode_error(text))
        # Half-close only: closing a socket with unread input sends RST, and a RST can
        # destroy the error line before the peer reads it. ``finish`` drains, then closes.
        # A peer already gone (ENOTCONN) needs no half-close: ``finish`` closes the socket.
        with contextlib.suppress(OSError):
            self.writer.write_eof()

    async def finish(self, reader: asyncio.StreamReader) -> None:
        """Complete the close within a grace period; abort a peer that does not cooperate."""
        self.end()
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                if self.rejected:
                    while await reader.read(READ_CHUNK):
                        pass  # discard what the peer still sends until it closes too
                self.writer.close()
                await self.writer.wait_closed()
        except (TimeoutError, OSError):
            self.writer.transport.abort()


class TcpServer:
    """An ``asyncio.start_server`` publishing the hub's samples as NDJSON."""

    def __init__(
        self,
        hub: Hub,
        host: str,
        port: int,
        settings: Settings,
        options: Options,
    ) -> None:
        if not isinstance(options, TcpOptions):
            raise TypeError(f"the tcp server takes TcpOptions, got {type(options).__name__}")
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        hello_timeout_s = options.hello_timeout_s
        self.hello_timeout_s = (
            settings.header_timeout_s if hello_timeout_s is None else hello_timeout_s
        )
        self._servers: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        sockets = listening_sockets(self.host, self._port)
        try:
            # One asyncio server per address: start_server takes one socket.
            for sock in sockets:
                tls = server_ssl(self.settings.tls)
                server = await asyncio.start_server(
                    self._handle,
                    sock=sock,
                    backlog=BACKLOG,
                    ssl=tls,
                    # The handshake is part of the head: it gets the same deadline.
                    ssl_handshake_timeout=self.settings.header_timeout_s if tls else None,
                )
                self._servers.append(server)
        except BaseException:
            for server in self._servers:
                server.close()
            for sock in sockets:
                sock.close()
            self._servers = []
            raise
        self._port = bound_port(sockets)

    async def stop(self) -> None:
        if not self._servers:
            return
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.end()
        if self._handlers:
            # Every handler ends within CLOSE_GRACE_S of its connection's end; this is a bound.
            _, late = await asyncio.wait(self._handlers, timeout=CLOSE_GRACE_S + 1.0)
            for task in late:
                task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        connection = _Connection(writer)
        try:
            if len(self._connections) >= self.settings.max_connections:
                # Not waiting for the hello: a full server should not hold sockets for 5 s.
                raise _Rejected(self._full())
            self._connections.add(connection)
            # TCP_NODELAY and a bounded send buffer; OSError (reset already) is caught below.
            tune_accepted(writer.get_extra_info("socket"), self.settings)
            await self._serve(connection, reader)
        except _Rejected as exc:
            connection.end(exc.error)
        except (_PeerGone, ConnectionError, OSError):
            pass  # the peer left; nothing to tell it, nothing worth a log line
        finally:
            self._connections.discard(connection)
            await connection.finish(reader)
            self._handlers.discard(task)

    def _full(self) -> TooManyConnections:
        return TooManyConnections(f"connection limit {self.settings.max_connections} reached")

    async def _serve(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        splitter = LineSplitter(self.settings.max_message_bytes)
        token, heartbeats = await self._read_hello(reader, splitter)
        try:
            subscription = self.hub.subscribe(
                token, on_overflow=lambda reason: connection.end(SubscriberOverflow(reason))
            )
        except TooManyConnections as exc:
            raise _Rejected(exc) from exc
        tasks = [
            asyncio.create_task(self._pump(connection, subscription)),
            asyncio.create_task(self._listen(connection, reader, splitter, heartbeats)),
        ]
        try:
            await connection.ended.wait()
        finally:
            subscription.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_hello(
        self, reader: asyncio.StreamReader, splitter: LineSplitter
    ) -> tuple[ResumeToken | None, bool]:
        """The hello's token, and whether heartbeat lines came with it."""
        try:
            async with asyncio.timeout(self.hello_timeout_s):
                lines: list[bytes] = []
                while not lines:
                    chunk = await reader.read(READ_CHUNK)
                    if not chunk:
                        raise _PeerGone
                    lines = splitter.feed(chunk)
        except TimeoutError:
            raise _Rejected(PeerSilent(f"no hello within {self.hello_timeout_s:g} s")) from None
        except FrameTooLarge as exc:
            raise _Rejected(exc) from exc
        try:
            token = parse_hello(lines[0])
            for line in lines[1:]:
                parse_client_line(line)
        except ProtocolError as exc:
            raise _Rejected(exc) from exc
        return token, len(lines) > 1

    async def _pump(self, connection: _Connection, subscription: Subscription) -> None:
        """Write what the hub's fast path did not: history, a batch the socket could not take
        at once (then wait once for the socket to drain), and a heartbeat when idle.

        While this subscriber is caught up, ``publish`` writes each batch to the socket itself
        (encoded once for every subscriber); this task then only wakes for heartbeats.
        """
        writer = connection.writer
        heartbeat_s = self.settings.heartbeat_s or None
        write_now = asyncio_writer(writer.transport)
        ended = connection.ended.is_set
        # Not after the end: an error line and a half-close may already have gone out.
        subscription.write_directly(
            "ndjson", encode_sample_lines, lambda data: not ended() and write_now(data)
        )
        wait_s = heartbeat_s
        try:
            while True:
                batch = await subscription.next_batch(wait_s)
                wait_s = heartbeat_s
                if batch:
                    writer.write(encode_sample_lines(batch))
                elif heartbeat_s is not None and (quiet := subscription.quiet_s()) < heartbeat_s:
                    wait_s = heartbeat_s - quiet  # the hub wrote meanwhile: not idle yet
                    continue
                else:
                    writer.write(encode_heartbeat(time.monotonic_ns()))
                await writer.drain()
                subscription.rejoin()
        except SubscriberOverflow:
            pass  # the overflow callback has already ended the connection
        except (ConnectionError, OSError):
            pass
        finally:
            connection.end()

    async def _listen(
        self,
        connection: _Connection,
        reader: asyncio.StreamReader,
        splitter: LineSplitter,
        heartbeats: bool,
    ) -> None:
        """Check the client's lines while the pump writes; notice a reset, or silence from a
        client that sends heartbeats (``heartbeats``: it sent some with its hello). Its EOF (a
        half-close) only ends the listening."""
        settings = self.settings
        # No deadline until a first heartbeat: a read-only client sends none, ever.
        held_to = settings.dead_after_s if settings.heartbeat_s else None
        deadline_s = held_to if heartbeats else None
        try:
            while data := await read_within(reader.read(READ_CHUNK), deadline_s):
                lines = splitter.feed(data)
                for line in lines:
                    parse_client_line(line)
                if lines:
                    deadline_s = held_to
        except PeerSilent as exc:
            connection.end(PeerSilent(f"no heartbeat from the client: {exc}"))
        except ProtocolError as exc:
            connection.end(exc)
        except (ConnectionError, OSError):
            connection.end()


@asynccontextmanager
async def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[AsyncIterator[Sample]]:
    try:
        tls = client_ssl(settings.tls)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls is not None else None
            ),
            settings.connect_timeout_s,
        )
    except (OSError, TimeoutError) as exc:
        raise unreachable(f"no tcp server at {host}:{port}", exc) from exc
    # A leading space, which JSON ignores (the hello still reads as {}): an HTTP server takes
    # a request line starting with whitespace as invalid at once and answers 400, so `listen
    # tcp` pointed at an HTTP port learns so at once, not after the dead-peer timeout.
    hello = b" " + encode_hello(token)
    heartbeats = None
    if settings.heartbeat_s:
        # The first heartbeat goes with the hello: from then on the server holds this client
        # to its heartbeats (a client that sends none is left to the kernel's timeouts).
        hello += encode_heartbeat(time.monotonic_ns())
        heartbeats = asyncio.create_task(_send_heartbeats(writer, settings.heartbeat_s))
    writer.write(hello)
    stream = BatchedSampleStream(_batches(reader, settings))
    try:
        yield stream
    finally:
        await stream.aclose()
        if heartbeats is not None:
            heartbeats.cancel()
        writer.close()


async def _send_heartbeats(writer: asyncio.StreamWriter, interval_s: float) -> None:
    """Tell the server we are alive; it reads with a deadline too (no per-sample cost)."""
    while not writer.is_closing():
        await asyncio.sleep(interval_s)
        if writer.is_closing():
            return  # closed while asleep (uvloop raises on a closed transport's buffer size)
        # Never drained: a server that stopped reading gets cut by its own deadline, and
        # the bound keeps what piles up here small meanwhile.
        if writer.transport.get_write_buffer_size() < MAX_UNSENT_HEARTBEAT_BYTES:
            writer.write(encode_heartbeat(time.monotonic_ns()))


def _check_first_line(line: bytes) -> None:
    """Raise :class:`NotThisProtocol` unless a connection's first line is one of ours."""
    if line.startswith(b"HTTP/"):
        raise NotThisProtocol(f"an HTTP server answered: {line[:120]!r}")
    try:
        decode_server_line(line)
    except MalformedSample as exc:
        # A JSON object is this protocol gone wrong (a bad sample: the caller's decoding says
        # so); anything else is another protocol.
        try:
            is_object = isinstance(msgspec.json.decode(line), dict)
        except msgspec.DecodeError:
            is_object = False
        if not is_object:
            raise NotThisProtocol(f"the first line is not NDJSON: {line[:120]!r}") from exc


async def _batches(
    reader: asyncio.StreamReader, settings: Settings
) -> AsyncGenerator[list[Sample], None]:
    """The samples of each socket chunk, decoded together (one msgspec call for a block of
    sample lines, unsplit), as one list per chunk that held any."""
    splitter = LineSplitter(settings.max_message_bytes)
    # One timer for the connection, not one per read: at 10 samples/s nearly every read waits,
    # and a timer armed and cancelled per read was a sixth of a fan-out client's CPU.
    deadline = ReadDeadline(settings.dead_after_s)
    first_line = True
    try:
        while True:
            try:
                chunk = await deadline.read(reader.read(READ_CHUNK))
            except (ConnectionError, OSError) as exc:
                raise ConnectionLost(f"connection failed: {exc!r}") from exc
            if not chunk:
                raise ConnectionLost("closed by the server")
            block = splitter.feed_block(chunk)
            if block is None:
                continue
            if first_line:
                # Garbage later is a broken server (retried); garbage first is another protocol.
                _check_first_line(lines_of(block)[0])
                first_line = False
            samples, error = server_block(block, "connection")
            if samples:
                yield samples  # those before a bad line or an error line were received too
            if error is not None:
                raise error
    finally:
        deadline.close()


def keepalive_params(settings: Settings, options: Options) -> Mapping[str, float | None]:
    """Heartbeat lines both ways, a read deadline on each side."""
    heartbeat = settings.heartbeat_s or None
    return {
        "heartbeat_interval_s": heartbeat,
        "read_timeout_s": settings.dead_after_s,
        # The server holds a client to its heartbeats once it sent one (they are optional),
        # when heartbeats are on; a read-only client is left to the kernel's timeout.
        "server_read_timeout_s": settings.dead_after_s if heartbeat else None,
    }


TCP = Transport(
    name="tcp",
    summary="Raw asyncio TCP, one JSON per line: hello-line resume, heartbeat lines",
    default_port=8890,
    endpoint="tcp://{host}:{port}",
    features=Features(
        resume=True, heartbeat=True, browser_native=False, bidirectional=True, push=True
    ),
    serve=TcpServer,
    connect=connect,
    options=TcpOptions(),
    dependencies=(),
    modules=("transports.tcp", "transports.ndjson"),
    baseline="asyncio-tcp",
    bad_input_family="tcp",
    resume_token='hello line {"epoch":E,"since":SEQ}',
    write_path=(
        "hub fast path: each batch encoded once, written to every caught-up socket in one pass "
        "(asyncio transport.write); a task per connection only for history, a full socket and "
        "heartbeats"
    ),
    keepalive='{"heartbeat":NS} lines both ways (optional from the client), read deadlines',
    keepalive_params=keepalive_params,
)
