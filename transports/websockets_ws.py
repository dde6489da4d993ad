"""websockets (its asyncio implementation): the WebSocket endpoint on another library.

Server: ``websockets.asyncio.server.serve`` on the shared listening sockets, one per address,
at ``/websocket/`` (404 elsewhere; 403 to a page the shared origin policy refuses,
:mod:`transports.origins`); the wire, the resume query and the close codes are every
WebSocket transport's (:mod:`transports.ws_wire`), so any WebSocket client reads it. Keepalive
is websockets' own: a ping every ``heartbeat_s``, the connection failed when its pong takes
longer than ``dead_after_s``, then :data:`CLOSE_TIMEOUT_S` for the closing handshake. The
upgrade request must arrive within ``header_timeout_s`` (websockets' ``open_timeout``);
websockets itself answers a head past its limits (431, 414), refuses a request that is no
upgrade (426), and closes with the code RFC 6455 names on every framing violation (1002,
1007, 1009 past ``max_message_bytes``), except from a peer that sent its frames before the
101 answer (which RFC 6455 forbids): that one is closed without a word. No compression:
samples are tiny and the size limit counts the bytes that arrive.

Fan-out: one task, the broadcaster, writes every new batch to all subscribers *in step* with
``websockets.broadcast()``, one sample per message, without a task wake-up per connection.
``broadcast()`` applies no backpressure (it writes whatever a connection's buffer holds), so
it alone would let a reader that stopped reading grow its buffer without bound. So a
subscriber stays in step only while its socket takes what it is given: after each batch, one
whose write buffer is past :data:`WRITE_HIGH_WATER` leaves the broadcast for a catch-up task of
its own, which writes from its hub cursor a batch at a time and awaits the buffer once per
batch (``broadcast()`` to itself, ``send()`` for the batch's last sample, which waits for room
as any per-connection writer does). The hub's bounds apply as on every transport: a
subscriber more than ``queue_size`` samples behind is cut (close 1008, "slow consumer") and
resumes from history.
It rejoins the broadcast once it has everything published and its buffer is low again. No
sample is skipped either way: the broadcaster writes to a subscriber exactly the samples from
its cursor on and moves the cursor past them; a catch-up task writes from the cursor too, and
the two never write to one connection at once. ``broadcast()``'s own skips lose nothing: it
skips a connection that is closing (its client resumes after it) and one sending a fragmented
message (never here); it never skips one over its high-water mark, which is why the
broadcaster checks that itself. The price of ``broadcast()``: a write per sample per
connection (a system call each while the socket keeps up), where tornado-ws and aiohttp-ws
write a whole batch at once.

Client: ``websockets.asyncio.client.connect`` with the same pings, no proxy, no compression,
plus the dead-peer deadline of a read watchdog (:mod:`transports.read_watchdog`: a timer, no
work per message), each message read as bytes (``recv(decode=False)``) for msgspec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_right
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from http import HTTPStatus
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
)
from websockets.http11 import Request, Response
from websockets.protocol import State

from model.errors import (
    NotThisProtocol,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample, decode_sample, encode_sample
from transports.contract import Features, Transport
from transports.failures import unreachable
from transports.hub import Hub, Subscription
from transports.options import NoOptions, Options
from transports.origins import OriginPolicy
from transports.read_watchdog import ReadWatchdog
from transports.rejections import SHUTTING_DOWN
from transports.resume import ResumeToken
from transports.sample_stream import SampleStream
from transports.settings import Settings
from transports.sockets import BACKLOG, bound_port, listening_sockets, tune_accepted
from transports.tls import HTTP1, client_ssl, server_ssl
from transports.ws_wire import (
    PATH,
    UNEXPECTED_MESSAGE,
    close_error,
    refusal,
    token_of_query,
    ws_url,
)

__all__ = [
    "CLOSE_TIMEOUT_S",
    "WEBSOCKETS",
    "WRITE_HIGH_WATER",
    "WebsocketsServer",
    "connect",
    "keepalive_params",
]

_log = logging.getLogger(__name__)

#: How long a close waits for the peer's close frame before the connection is aborted, on
#: both sides (websockets' ``close_timeout``); also the bound on a server's stop.
CLOSE_TIMEOUT_S = 1.0
#: A subscriber whose write buffer holds more than this after a batch leaves the broadcast;
#: websockets' ``write_limit`` (the buffer ``send()`` waits on) is the same.
WRITE_HIGH_WATER = 64 * 1024
#: ... and rejoins it once the buffer is down to this and it has everything published.
WRITE_LOW_WATER = WRITE_HIGH_WATER // 4
#: How long the broadcaster waits for a sample at a time (it just waits again).
_IDLE_WAIT_S = 3600.0


def keepalive_params(settings: Settings, options: Options) -> Mapping[str, float | None]:
    """websockets' pings both ways, its close timeout, the client's read deadline."""
    heartbeat = settings.heartbeat_s or None
    return {
        "ws_ping_interval_s": heartbeat,
        "ws_ping_timeout_s": settings.dead_after_s if heartbeat else None,
        "ws_close_timeout_s": CLOSE_TIMEOUT_S,
        "read_timeout_s": settings.dead_after_s,
    }


def _connection_class(
    settings: Settings, accepted: set[ServerConnection]
) -> type[ServerConnection]:
    """websockets' server connection, tuning each accepted socket as every server here does
    and kept in ``accepted`` while its socket is open (websockets lists only upgraded ones)."""

    class TunedConnection(ServerConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            tune_accepted(transport.get_extra_info("socket"), settings)
            accepted.add(self)
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            accepted.discard(self)
            super().connection_lost(exc)

    return TunedConnection


def _buffered(connection: ServerConnection) -> int:
    return connection.transport.get_write_buffer_size()


class _Fanout:
    """Who writes to which subscriber: the broadcaster, or the subscriber's catch-up task."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        #: Written by the broadcaster; every cursor here is >= ``_next``.
        self._in_step: dict[ServerConnection, Subscription] = {}
        self._catching_up: dict[ServerConnection, asyncio.Task[None]] = {}
        #: The next seq the broadcaster writes.
        self._next = hub.next_seq
        self._task: asyncio.Task[None] | None = None

    @property
    def in_step(self) -> int:
        """Subscribers the broadcaster writes to now."""
        return len(self._in_step)

    @property
    def catching_up(self) -> int:
        """Subscribers writing from their own cursor now (a backlog, or a slow socket)."""
        return len(self._catching_up)

    def start(self) -> None:
        self._task = asyncio.create_task(self._broadcast_forever())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._catching_up.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def add(self, connection: ServerConnection, subscription: Subscription) -> None:
        self._catch_up(connection, subscription)

    def remove(self, connection: ServerConnection) -> None:
        self._in_step.pop(connection, None)
        task = self._catching_up.pop(connection, None)
        if task is not None:
            task.cancel()

    def _may_join(self, connection: ServerConnection, subscription: Subscription) -> bool:
        """Whether the broadcast can take over: nothing published is left to send from here,
        and the socket is taking what it is given."""
        return (
            subscription.cursor == self._hub.next_seq and _buffered(connection) <= WRITE_LOW_WATER
        )

    def _catch_up(self, connection: ServerConnection, subscription: Subscription) -> None:
        if self._may_join(connection, subscription):
            self._in_step[connection] = subscription
        else:
            task = asyncio.create_task(self._send_until_in_step(connection, subscription))
            self._catching_up[connection] = task

    async def _send_until_in_step(
        self, connection: ServerConnection, subscription: Subscription
    ) -> None:
        """One subscriber's own writer, from its cursor, until it may rejoin the broadcast.

        A batch goes out as a broadcast to this one connection, but for its last sample,
        whose ``send()`` waits for room in the buffer: one wait per batch, not per sample.
        """
        alone = (connection,)
        try:
            while not self._may_join(connection, subscription):
                *batch, last = await subscription.next_batch()
                if connection.transport.is_closing():
                    return  # aborted: its handler is about to hear of it
                for sample in batch:
                    websockets.broadcast(alone, encode_sample(sample), text=True)
                await connection.send(encode_sample(last), text=True)
        except (ConnectionClosed, SubscriberOverflow):
            # Closed, or cut (the overflow callback closes it): its handler removes it.
            return
        if self._catching_up.pop(connection, None) is not None:
            self._in_step[connection] = subscription

    async def _broadcast_forever(self) -> None:
        hub = self._hub
        while True:
            if hub.next_seq <= self._next:
                await hub.wait_beyond(self._next - 1, _IDLE_WAIT_S)
                continue
            batch = hub.slice(self._next, hub.settings.batch)
            self._write(batch)
            self._next = batch[-1].seq + 1
            if hub.next_seq > self._next:
                await asyncio.sleep(0)  # a backlog of batches: let the connections run between

    def _write(self, batch: list[Sample]) -> None:
        """``batch`` to every subscriber in step, each from its cursor; then move the cursors."""
        members = sorted(
            (sub.cursor, id(conn), conn, sub)
            for conn, sub in self._in_step.items()
            # Cut, or aborted and not yet told: writing to it would only log warnings.
            if sub.closed_reason is None and not conn.transport.is_closing()
        )
        if not members:
            return
        cursors = [m[0] for m in members]
        connections = [m[2] for m in members]
        targets: list[ServerConnection] = []
        for sample in batch:
            # Members are sorted by cursor: those whose cursor is at or before this seq.
            reached = bisect_right(cursors, sample.seq)
            if reached != len(targets):
                targets = connections[:reached]
            if targets:
                websockets.broadcast(targets, encode_sample(sample), text=True)
        end = batch[-1].seq + 1
        for cursor, _, conn, sub in members:
            if cursor < end:
                sub.take(end - cursor)
            if _buffered(conn) > WRITE_HIGH_WATER:
                # Its socket is not keeping up: its own writer, with backpressure, takes over.
                del self._in_step[conn]
                self._catch_up(conn, sub)


class WebsocketsServer:
    """websockets servers (one per listening address) sharing one hub and one fan-out."""

    def __init__(
        self, hub: Hub, host: str, port: int, settings: Settings, options: Options
    ) -> None:
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self._servers: list[WsServer] = []
        #: Every accepted connection still open, upgraded or not.
        self._accepted: set[ServerConnection] = set()
        self._fanout = _Fanout(hub)
        self.origins = OriginPolicy.from_settings(settings)
        #: Closes of cut subscribers, running (each is bounded by CLOSE_TIMEOUT_S).
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self._port

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """404 off the endpoint; 403 to a page the shared origin policy refuses."""
        if urlsplit(request.path).path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"not found; the stream is at {PATH}\n")
        origin = request.headers.get("Origin")
        if not self.origins.allows(origin, request.headers.get("Host")):
            _log.info("refusing a WebSocket handshake: %s", self.origins.refusal(origin))
            return connection.respond(HTTPStatus.FORBIDDEN, self.origins.refusal(origin) + "\n")
        return None

    @property
    def fanout(self) -> tuple[int, int]:
        """Subscribers in step (written by ``broadcast()``) and catching up, now."""
        return self._fanout.in_step, self._fanout.catching_up

    async def start(self) -> None:
        sockets = listening_sockets(self.host, self._port)
        settings = self.settings
        heartbeat = settings.heartbeat_s or None
        try:
            for sock in sockets:
                server = await serve(
                    self._handle,
                    sock=sock,
                    backlog=BACKLOG,  # asyncio listens again on the socket, with this
                    compression=None,
                    process_request=self._check_request,
                    server_header=None,
                    open_timeout=settings.header_timeout_s,
                    ping_interval=heartbeat,
                    ping_timeout=settings.dead_after_s if heartbeat else None,
                    close_timeout=CLOSE_TIMEOUT_S,
                    max_size=settings.max_message_bytes,
                    write_limit=WRITE_HIGH_WATER,
                    create_connection=_connection_class(settings, self._accepted),
                    logger=_log,
                    ssl=server_ssl(settings.tls, HTTP1),
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
        self._fanout.start()

    async def stop(self) -> None:
        if not self._servers:
            return
        await self._fanout.stop()
        for server in self._servers:
            # Upgraded connections get a close 1001; those still in their handshake would
            # hold the stop until their open_timeout: nothing is owed to them.
            server.close(code=SHUTTING_DOWN.ws_close_code, reason=SHUTTING_DOWN.label)
        for connection in list(self._accepted):
            if connection.state is State.CONNECTING:
                connection.transport.abort()
        closed = asyncio.gather(*(server.wait_closed() for server in self._servers))
        try:
            # A peer that stopped reading holds its close frame (and websockets' close) back.
            async with asyncio.timeout(CLOSE_TIMEOUT_S + 1.0):
                await asyncio.shield(closed)
        except TimeoutError:
            for connection in list(self._accepted):
                connection.transport.abort()
            await closed
        self._servers = []

    async def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None  # the handler runs after the handshake
        try:
            token = token_of_query(urlsplit(request.path).query)
            subscription = self.hub.subscribe(token, on_overflow=partial(self._cut, connection))
        except (ProtocolError, TooManyConnections) as exc:  # BadResumeToken is a ProtocolError
            await connection.close(*refusal(exc))
            return
        self._fanout.add(connection, subscription)
        try:
            # The client sends nothing but control frames, which websockets answers itself;
            # reading also lets it see the client's close.
            async for _ in connection:
                await connection.close(*refusal(ProtocolError(UNEXPECTED_MESSAGE)))
        except ConnectionClosed:
            pass
        finally:
            self._fanout.remove(connection)
            subscription.close()

    def _cut(self, connection: ServerConnection, reason: str) -> None:
        """The hub cut this subscriber: close it, and abort it if it does not take the close."""
        task = asyncio.create_task(_close_within(connection, SubscriberOverflow(reason)))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _close_within(connection: ServerConnection, error: StreamError) -> None:
    # websockets' close() waits for room in the write buffer before its own timeout starts:
    # a reader that stopped reading would hold it forever.
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await connection.close(*refusal(error))
    except TimeoutError:
        connection.transport.abort()


class _Samples(SampleStream):
    """One connection's samples, remembering whether the stream broke."""

    def __init__(self, connection: ClientConnection, watch: ReadWatchdog) -> None:
        self._connection, self._watch = connection, watch
        super().__init__()

    async def _read(self) -> AsyncGenerator[Sample, None]:
        recv, watch = self._connection.recv, self._watch
        watch.start()
        try:
            while True:
                # The dead-peer deadline: three stores per message, a timer does the rest.
                watch.reads += 1
                watch.waiting = True
                try:
                    # Bytes, not str: msgspec decodes JSON from bytes (websockets' own advice).
                    message = await recv(decode=False)
                except ConnectionClosed as exc:
                    rcvd, sent = exc.rcvd, exc.sent
                    raise close_error(
                        rcvd.code if rcvd else None,
                        rcvd.reason if rcvd else None,
                        sent.code if sent else None,
                    ) from exc
                except asyncio.CancelledError as exc:
                    silent = watch.silent(exc)
                    if silent is None:
                        raise
                    # recv() ends only once the TCP connection is gone: a server that closed
                    # with a code and holds the socket has said why, silent or not.
                    rcvd = self._connection.protocol.close_rcvd
                    if rcvd is None:
                        raise silent from exc
                    raise close_error(rcvd.code, rcvd.reason) from exc
                finally:
                    watch.waiting = False
                yield decode_sample(message)
        except GeneratorExit:
            raise  # closed by the caller, who is done: nothing broke
        except BaseException:
            self.broken = True
            raise


def _handshake_error(url: str, exc: InvalidHandshake) -> StreamError:
    """What a failed opening handshake means."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        body = (response.body or b"")[:200].decode(errors="replace").strip()
        if response.status_code >= 400:
            return ServerRefused(f"handshake refused: {status}: {body}".rstrip(": "))
        return NotThisProtocol(f"{url} answered {status} to the WebSocket upgrade")
    if isinstance(exc, InvalidMessage):
        # Nothing at all before the close, or something that is no HTTP response.
        cause = exc.__cause__
        while cause is not None and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, EOFError) and "after 0 bytes" in str(cause):
            return ServerUnavailable(f"{url} closed the connection without an answer")
        return NotThisProtocol(f"{url} did not answer with HTTP: {cause or exc}")
    return NotThisProtocol(f"{url} answered without a WebSocket upgrade: {exc}")


@asynccontextmanager
async def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[AsyncIterator[Sample]]:
    url = ws_url(host, port, token, tls=settings.tls is not None)
    heartbeat = settings.heartbeat_s or None
    try:
        conn = await ws_connect(
            url,
            ssl=client_ssl(settings.tls, HTTP1),
            compression=None,
            proxy=None,
            user_agent_header=None,
            open_timeout=settings.connect_timeout_s,
            ping_interval=heartbeat,
            ping_timeout=settings.dead_after_s if heartbeat else None,
            close_timeout=CLOSE_TIMEOUT_S,
            max_size=settings.max_message_bytes,
            logger=_log,
        )
    except InvalidHandshake as exc:
        raise _handshake_error(url, exc) from exc
    except ConnectionClosed as exc:
        # The connection went during the opening handshake (an overloaded server dropping
        # it): websockets says so with ConnectionClosedError, not an InvalidHandshake.
        raise ServerUnavailable(f"the connection to {url} closed during the handshake") from exc
    except TimeoutError as exc:
        limit = settings.connect_timeout_s
        raise ServerUnavailable(f"no answer to the handshake at {url} within {limit:g} s") from exc
    except OSError as exc:
        raise unreachable(f"no WebSocket server at {url}", exc) from exc
    watch = ReadWatchdog(settings.dead_after_s)
    samples = _Samples(conn, watch)
    try:
        yield samples
    except BaseException:
        samples.broken = True
        raise
    finally:
        await samples.aclose()
        watch.close()
        await _leave(conn, broken=samples.broken)


async def _leave(conn: ClientConnection, *, broken: bool) -> None:
    """Close politely when the caller is done; at once when the stream broke (a silent or
    broken peer would hold a polite close for ``CLOSE_TIMEOUT_S``, delaying the reconnect)."""
    if broken or conn.state is not State.OPEN:
        conn.transport.abort()
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await conn.close()
            return
    conn.transport.abort()


WEBSOCKETS = Transport(
    name="websockets",
    summary="websockets (asyncio): broadcast() fan-out, pings, resume by ?epoch=E&since=SEQ",
    default_port=8892,
    endpoint="ws://{host}:{port}" + PATH,
    features=Features(resume=True, heartbeat=True, browser_native=True, bidirectional=True),
    serve=WebsocketsServer,
    connect=connect,
    options=NoOptions(),
    dependencies=("websockets",),
    modules=("transports.websockets_ws", "transports.ws_wire"),
    baseline="websockets",
    bad_input_family="websocket",
    resume_token="query ?epoch=E&since=SEQ",
    write_path=(
        "websockets.broadcast() of each sample to every connection in step, from one task; a "
        "task per connection only while it catches up"
    ),
    keepalive="WebSocket ping/pong both ways (websockets), client read deadline",
    keepalive_params=keepalive_params,
)
