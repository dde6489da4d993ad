"""aiohttp WebSocket: the WebSocket endpoint on aiohttp's server and client.

Server: an aiohttp app whose ``GET /websocket/`` answers with a ``web.WebSocketResponse``
(400 to a request that is no upgrade, 404 elsewhere, 403 to a page the shared origin policy
refuses, :mod:`transports.origins`); the wire, the resume query and the close
codes are every WebSocket transport's (:mod:`transports.ws_wire`), so any WebSocket client
reads it. Each batch of samples goes out as one write of all its frames
(:func:`~transports.ws_frames.sample_frames`): while a subscriber is caught up the hub writes
it to the socket itself, encoded once for all (its fast path, :mod:`transports.direct_writes`);
otherwise its own task writes and awaits the drain: a reader that stops reading holds one
batch and its socket buffer, and the hub cuts it once it is ``queue_size`` behind (close
1008; a cut subscriber that does not take its close within :data:`CLOSE_TIMEOUT_S` is
aborted). aiohttp itself closes with the code RFC 6455 names on every framing violation
(1002, 1007, 1009 past ``max_message_bytes``); a client's close is echoed when its code is
valid and answered 1002 when not (aiohttp would answer 1000 to any). No compression. Shared
serving chores (the sockets, the head deadline, one-line parse errors):
:mod:`transports.aiohttp_serving`.

Keepalive. Server: a ping every ``heartbeat_s`` from the writer, busy or not, queued behind
the data, and whatever the client sends (its pongs and pings) read under a deadline of
``dead_after_s``: a client that vanished, or stopped reading, stops answering. (aiohttp's own
``heartbeat`` pings only after ``heartbeat_s`` with nothing *received* and gives a pong half
of that, a ratio it fixes: it cut a slow reader before the hub's bound did, and without
``dead_after_s``.) Client: aiohttp's ``heartbeat`` (the server's pings keep it quiet) and a
read deadline of ``dead_after_s`` kept by a timer (:mod:`transports.read_watchdog`: aiohttp
hands over one message per ``receive()``, and a deadline checked per read cost a seventh of
the client at saturation).

Client: ``aiohttp.ClientSession.ws_connect``, one session per connection, no compression.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial

import aiohttp
from aiohttp import WSMsgType, web

from model.errors import (
    ConnectionLost,
    FrameTooLarge,
    NotThisProtocol,
    PeerSilent,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample, decode_sample
from transports.aiohttp_serving import AiohttpServing, OneLineErrors
from transports.contract import Features, Transport
from transports.direct_writes import asyncio_writer
from transports.failures import unreachable
from transports.hub import Hub, Subscription
from transports.options import NoOptions, Options
from transports.origins import OriginPolicy
from transports.read_watchdog import ReadWatchdog
from transports.rejections import SHUTTING_DOWN
from transports.resume import ResumeToken
from transports.sample_stream import SampleStream
from transports.settings import Settings
from transports.tls import HTTP1, client_ssl
from transports.ws_frames import PROTOCOL_ERROR, sample_frames, valid_close_code
from transports.ws_wire import (
    MESSAGE_TOO_BIG,
    PATH,
    UNEXPECTED_MESSAGE,
    close_error,
    refusal,
    token_of_query,
    ws_url,
)

__all__ = ["AIOHTTP_WS", "CLOSE_TIMEOUT_S", "AiohttpWsServer", "connect", "keepalive_params"]

#: How long a close waits for the peer's close frame (aiohttp's WebSocket ``timeout`` and
#: the client's ``ws_close``); a cut or stopping connection that does not take its close
#: within it is aborted.
CLOSE_TIMEOUT_S = 1.0
NORMAL_CLOSURE = 1000
#: aiohttp's client fails a connection whose pong takes longer than this share of its heartbeat.
PONG_FRACTION = 0.5

_log = logging.getLogger(__name__)
#: The aiohttp server's own log (requests it cannot parse), one line per event.
_http_log = logging.getLogger(__name__ + ".http")
_http_log.addFilter(OneLineErrors())
_CLOSES = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})
#: Waits while the socket's write buffer is past its high-water mark (``writer.drain``).
_Drain = Callable[[], Awaitable[None]]


def keepalive_params(settings: Settings, options: Options) -> Mapping[str, float | None]:
    """Pings both ways, the client's pong timeout (aiohttp's), the read deadlines."""
    heartbeat = settings.heartbeat_s or None
    return {
        "ws_ping_interval_s": heartbeat,
        "client_pong_timeout_s": heartbeat * PONG_FRACTION if heartbeat else None,
        "ws_close_timeout_s": CLOSE_TIMEOUT_S,
        "read_timeout_s": settings.dead_after_s,
        "server_read_timeout_s": settings.dead_after_s if heartbeat else None,
    }


class _Subscriber:
    """One upgraded connection: its socket, its subscription, the task writing to it."""

    __slots__ = ("pump", "request", "subscription", "ws")

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws, self.request = ws, request
        self.subscription: Subscription | None = None
        self.pump: asyncio.Task[None] | None = None

    async def close(self, error: StreamError | None = None) -> None:
        """Close with ``error``'s code (1001 when the server stops); abort if it is not taken
        within :data:`CLOSE_TIMEOUT_S` (aiohttp's close first waits for room to write)."""
        code, reason = (
            refusal(error)
            if error is not None
            else (SHUTTING_DOWN.ws_close_code, SHUTTING_DOWN.label)
        )
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close(code=code, message=reason.encode())
        except TimeoutError:
            if self.request.transport is not None:
                self.request.transport.abort()


class AiohttpWsServer:
    """An aiohttp app with the WebSocket endpoint at ``/websocket/``."""

    def __init__(
        self, hub: Hub, host: str, port: int, settings: Settings, options: Options
    ) -> None:
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self._subscribers: set[_Subscriber] = set()
        self.origins = OriginPolicy.from_settings(settings)
        #: Closes of cut subscribers, running (each bounded by CLOSE_TIMEOUT_S).
        self._closing: set[asyncio.Task[None]] = set()
        app = web.Application()
        app.router.add_get(PATH, self._socket)
        self._serving = AiohttpServing(
            app, settings, logger=_http_log, shutdown_timeout_s=CLOSE_TIMEOUT_S
        )

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        self._port = await self._serving.start(self.host, self._port)

    async def stop(self) -> None:
        await asyncio.gather(*(sub.close() for sub in list(self._subscribers)))
        await self._serving.stop()

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        settings = self.settings
        origin = request.headers.get("Origin")
        if not self.origins.allows(origin, request.headers.get("Host")):
            _log.info("refusing a WebSocket handshake: %s", self.origins.refusal(origin))
            return web.Response(status=403, text=self.origins.refusal(origin) + "\n")
        ws = web.WebSocketResponse(
            timeout=CLOSE_TIMEOUT_S,
            max_msg_size=settings.max_message_bytes,
            compress=False,
            autoclose=False,  # the client's close is answered below, as RFC 6455 says
        )
        writer = await ws.prepare(request)  # 400 to a request that is no upgrade
        sub = _Subscriber(ws, request)
        try:
            token = token_of_query(request.query_string)
            sub.subscription = self.hub.subscribe(token, on_overflow=partial(self._cut, sub))
        except (ProtocolError, TooManyConnections) as exc:  # BadResumeToken is a ProtocolError
            await sub.close(exc)
            return ws
        self._subscribers.add(sub)
        sub.pump = asyncio.create_task(self._send(sub, sub.subscription, writer.drain))
        try:
            await self._listen(sub)
        finally:
            self._subscribers.discard(sub)
            sub.pump.cancel()
            sub.subscription.close()
            transport = request.transport
            if transport is not None and transport.get_write_buffer_size():
                # Over, with bytes still unsent: aiohttp's close (after a missed pong, say)
                # would wait for a peer that is not reading to take them, holding the socket.
                transport.abort()
        return ws

    async def _listen(self, sub: _Subscriber) -> None:
        """Read what the client sends (pongs and pings, which aiohttp answers itself, reset
        the deadline); anything else, silence past ``dead_after_s`` or a close ends it."""
        settings = self.settings
        silence = settings.dead_after_s if settings.heartbeat_s else None
        try:
            msg = await sub.ws.receive(timeout=silence)
        except TimeoutError:
            await sub.close(PeerSilent(f"nothing received for {silence:g} s"))
            return
        if msg.type is WSMsgType.CLOSE:
            # Echo a valid code (RFC 6455 5.5.1); aiohttp would answer 1000 to any, even 5000.
            code = msg.data or NORMAL_CLOSURE  # 0: a close frame without a code
            await sub.ws.close(code=code if valid_close_code(code) else PROTOCOL_ERROR)
            return
        if msg.type in _CLOSES or msg.type is WSMsgType.ERROR:
            return  # aiohttp has answered it (an error with the code RFC 6455 names)
        await sub.close(ProtocolError(UNEXPECTED_MESSAGE))

    async def _send(self, sub: _Subscriber, subscription: Subscription, drain: _Drain) -> None:
        """Take a whole batch, write its frames in one go, wait once for the socket; a ping
        every ``heartbeat_s``, busy or not (behind the data: a reader that stops reading
        stops answering)."""
        ws, request = sub.ws, sub.request
        heartbeat = self.settings.heartbeat_s or None
        loop = asyncio.get_running_loop()
        ping_at = loop.time() + (heartbeat or 0.0)
        if request.transport is not None:
            write_now = asyncio_writer(request.transport)
            # No data frame may follow a close frame.
            subscription.write_directly(
                "ws-text", sample_frames, lambda data: not ws.closed and write_now(data)
            )
        try:
            while True:
                wait = None if heartbeat is None else max(0.0, ping_at - loop.time())
                batch = await subscription.next_batch(wait)
                transport = request.transport
                if ws.closed or transport is None or transport.is_closing():
                    return  # no data frame may follow a close frame
                if batch:
                    transport.write(sample_frames(batch))
                if heartbeat is not None and loop.time() >= ping_at:
                    await ws.ping()
                    ping_at = loop.time() + heartbeat
                await drain()
                subscription.rejoin()
        except (SubscriberOverflow, ConnectionError):
            pass  # cut (the overflow callback is closing it), or gone

    def _cut(self, sub: _Subscriber, reason: str) -> None:
        task = asyncio.create_task(sub.close(SubscriberOverflow(reason)))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


class _Samples(SampleStream):
    """One connection's samples, remembering whether the stream broke."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, watch: ReadWatchdog) -> None:
        self._ws, self._watch = ws, watch
        super().__init__()

    async def _read(self) -> AsyncGenerator[Sample, None]:
        receive, ws, watch = self._ws.receive, self._ws, self._watch
        # Locals: an enum member looked up on its class costs more than the check itself.
        text, binary = WSMsgType.TEXT, WSMsgType.BINARY
        watch.start()
        try:
            while True:
                # The dead-peer deadline: three stores per message, a timer does the rest.
                watch.reads += 1
                watch.waiting = True
                try:
                    msg = await receive()
                except asyncio.CancelledError as exc:
                    silent = watch.silent(exc)
                    if silent is None:
                        raise
                    raise silent from exc
                except (aiohttp.ClientError, ConnectionError) as exc:
                    # Answering a ping on a connection the peer is closing raises
                    # ClientConnectionResetError ("Cannot write to closing transport").
                    raise ConnectionLost(f"connection failed: {exc!r}") from exc
                finally:
                    watch.waiting = False
                kind = msg.type
                if kind is text or kind is binary:
                    yield decode_sample(msg.data)
                elif kind is WSMsgType.ERROR:
                    code = getattr(msg.data, "code", None)
                    if code == MESSAGE_TOO_BIG:
                        raise FrameTooLarge(f"a message over the size limit: {msg.data}")
                    raise close_error(None, None, code if isinstance(code, int) else None)
                elif kind is WSMsgType.CLOSE:
                    raise close_error(msg.data, msg.extra)
                else:  # CLOSING, CLOSED: the close frame was read already
                    raise close_error(ws.close_code, None)
        except GeneratorExit:
            raise  # closed by the caller, who is done: nothing broke
        except BaseException:
            self.broken = True
            raise


def _handshake_error(url: str, exc: aiohttp.ClientResponseError) -> StreamError:
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status >= 400:
        return ServerRefused(f"handshake refused: HTTP {exc.status} {exc.message}")
    if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status:
        return NotThisProtocol(f"{url} answered without a WebSocket upgrade: {exc.message}")
    return NotThisProtocol(f"not an HTTP answer from {url}: {exc.message}")


@asynccontextmanager
async def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[AsyncIterator[Sample]]:
    url = ws_url(host, port, token, tls=settings.tls is not None)
    tls = client_ssl(settings.tls, HTTP1)
    connector = aiohttp.TCPConnector(ssl=tls if tls is not None else True)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                ws = await session.ws_connect(
                    url,
                    heartbeat=settings.heartbeat_s or None,
                    max_msg_size=settings.max_message_bytes,
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
                )
        except aiohttp.ServerDisconnectedError as exc:
            raise ServerUnavailable(f"{url} closed the connection without an answer") from exc
        except aiohttp.ClientResponseError as exc:  # WSServerHandshakeError is one
            raise _handshake_error(url, exc) from exc
        except TimeoutError as exc:  # before OSError, of which it is one
            limit = settings.connect_timeout_s
            raise ServerUnavailable(
                f"no answer to the handshake at {url} within {limit:g} s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise unreachable(f"no WebSocket server at {url}", exc) from exc
        watch = ReadWatchdog(settings.dead_after_s)
        samples = _Samples(ws, watch)
        try:
            yield samples
        except BaseException:
            samples.broken = True
            raise
        finally:
            await samples.aclose()
            watch.close()
            if not samples.broken and not ws.closed:
                # A polite close; a broken stream's socket just goes with the session.
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    await ws.close()


AIOHTTP_WS = Transport(
    name="aiohttp-ws",
    summary="aiohttp WebSocket: pings, one write per batch, resume by ?epoch=E&since=SEQ",
    default_port=8893,
    endpoint="ws://{host}:{port}" + PATH,
    features=Features(resume=True, heartbeat=True, browser_native=True, bidirectional=True),
    serve=AiohttpWsServer,
    connect=connect,
    options=NoOptions(),
    dependencies=("aiohttp",),
    modules=("transports.aiohttp_ws", "transports.aiohttp_serving", "transports.ws_wire"),
    baseline="aiohttp-ws",
    bad_input_family="websocket",
    resume_token="query ?epoch=E&since=SEQ",
    write_path=(
        "hub fast path: each batch's frames encoded once, written to every caught-up socket in "
        "one pass (the request's asyncio transport); a task per connection for history, a full "
        "socket and pings"
    ),
    keepalive="WebSocket ping/pong both ways, a read deadline on each side",
    keepalive_params=keepalive_params,
)
