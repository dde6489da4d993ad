"""Tornado WebSocket: the reference transport, and the original design it grew from.

Server: a ``WebSocketHandler`` at ``/websocket/`` sending one wire-form sample per text message.
``?epoch=E&since=SEQ`` resumes. The handshake's ``Origin`` is judged by the shared origin
policy (:mod:`transports.origins`): a page it refuses gets 403. ``GET /`` serves the live page
(:mod:`transports.page`). Keepalive is tornado's own ping (``websocket_ping_interval``,
``websocket_ping_timeout``, the latter capped by tornado >= 6.5 at the interval).
Client: ``websocket_connect`` with the same pings, plus the shared read deadline; a ``None``
message is tornado's way of saying the connection closed.

Close codes and reasons come from :mod:`transports.rejections`: 1008 (bad resume token, a
malformed query, a message from the client, a subscriber that fell behind), 1013 (server
full), 1001 (server shutting down); 1009 (message too big) is tornado's own. Where tornado
would drop a connection without a word, the server answers as RFC 6455 and HTTP say: 1002 for
a frame breaking the protocol (RSV bits, a reserved opcode, an invalid close code), 1007 for
invalid UTF-8, 431 for a request head over 64 KiB. A request head (the upgrade) must arrive
within ``header_timeout_s``. Each batch of samples goes out as one write of all its frames,
awaited: a reader that stops reading holds one batch and its socket buffer, no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import tornado.httpclient
import tornado.httpserver
import tornado.ioloop
import tornado.iostream
import tornado.simple_httpclient
import tornado.web
import tornado.websocket

from model.errors import (
    ConnectionLost,
    NotThisProtocol,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample, decode_sample
from transports.contract import Features, Transport
from transports.deadline import ReadDeadline
from transports.failures import unreachable
from transports.hub import Hub, Subscription, WriteNow
from transports.options import NoOptions, Options
from transports.origins import OriginPolicy
from transports.page import PAGE_HEADERS, PAGE_PATH, PageConfig, render_page
from transports.rejections import (
    HEAD_TOO_LARGE,
    SHUTTING_DOWN,
    raw_http_answer,
    rejection,
    rejection_text,
    ws_close_reason,
)
from transports.resume import ResumeToken, parse_query, query_parameters
from transports.settings import Settings
from transports.sockets import (
    ListeningSocket,
    bound_port,
    listening_sockets,
    tune_accepted,
    url_host,
)
from transports.tls import HTTP1, client_ssl, server_ssl
from transports.ws_frames import PROTOCOL_ERROR, frame_violation, sample_frames

__all__ = [
    "SEED",
    "TORNADO_CLOSE_WAIT_S",
    "TORNADO_WS",
    "TornadoServer",
    "connect",
    "keepalive_params",
    "ping_timeout",
]

PATH = "/websocket/"
_log = logging.getLogger(__name__)
#: How long tornado's ``close()`` waits for the peer's close frame before it aborts the
#: connection: hard-coded in tornado (``WebSocketProtocol13.close``), not configurable, so a
#: server that detected a dead peer still holds its socket this much longer.
TORNADO_CLOSE_WAIT_S = 5.0
#: Largest request head (the upgrade request) the server reads; past it, 431.
MAX_HEAD_BYTES = 64 * 1024


def ping_timeout(settings: Settings) -> float | None:
    """The ping timeout in force: tornado >= 6.5 caps it at the ping interval."""
    if not settings.heartbeat_s:
        return None
    if settings.dead_after_s is None:
        return settings.heartbeat_s
    return min(settings.dead_after_s, settings.heartbeat_s)


def keepalive_params(settings: Settings, options: Options) -> Mapping[str, float | None]:
    """Pings both ways (the timeout tornado enforces), the client's read deadline."""
    return {
        "ws_ping_interval_s": settings.heartbeat_s or None,
        "ws_ping_timeout_s": ping_timeout(settings),
        "tornado_close_wait_s": TORNADO_CLOSE_WAIT_S,
        "read_timeout_s": settings.dead_after_s,
    }


class _StrictProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, closing with the code RFC 6455 names where tornado does not.

    Tornado drops the connection without a close frame on every framing violation, passes
    invalid UTF-8 on as a failed decode, and echoes any close code, 999 and 5000 included.
    (Hooks tornado's ``_handle_message`` and ``_abort``, as of tornado 6.5.)
    """

    def _handle_message(self, opcode: int, data: bytes) -> asyncio.Future[None] | None:
        violation = frame_violation(opcode, data)
        if violation is None or self.client_terminated:
            return super()._handle_message(opcode, data)
        self.close(*violation)
        super()._abort()
        return None

    def _abort(self) -> None:
        # Tornado aborts on a violation (RSV bits, a reserved opcode, a fragmented or long
        # control frame) while the stream still works: say why first. Every other abort comes
        # after a close was sent or with the stream already closed, and stays silent.
        if not self.server_terminated and self.stream is not None and not self.stream.closed():
            self.close(PROTOCOL_ERROR, "protocol error")
        super()._abort()


class SampleSocket(tornado.websocket.WebSocketHandler):
    """One subscriber: resume from the query, then pump the hub's samples."""

    hub: Hub
    owner: TornadoServer

    def initialize(self, hub: Hub, owner: TornadoServer) -> None:
        self.hub, self.owner = hub, owner
        self._pump: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None

    def check_origin(self, origin: str) -> bool:
        # Tornado answers False with 403; a handshake without Origin never gets here.
        allowed = self.owner.origins.allows(origin, self.request.host)
        if not allowed:
            _log.info("refusing a WebSocket handshake: %s", self.owner.origins.refusal(origin))
        return allowed

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if not isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return protocol
        return _StrictProtocol(self, False, protocol.params)

    def open(self, *args: str, **kwargs: str) -> None:
        try:
            # Verbatim (" 7" is no seq); unknown parameters ignored, as on every HTTP transport.
            pairs = parse_qsl(self.request.query, keep_blank_values=True)
            token = parse_query(query_parameters(pairs, ("epoch", "since")))
            self._subscription = self.hub.subscribe(token, on_overflow=self._overflowed)
        except (ProtocolError, TooManyConnections) as exc:  # BadResumeToken is a ProtocolError
            self._reject(exc)
            return
        self.owner.handlers.add(self)
        stream = self.ws_connection.stream if self.ws_connection is not None else None
        if stream is None:
            return
        tune_accepted(stream.socket, self.owner.settings)
        self._pump = asyncio.create_task(self._send(self._subscription, stream))

    async def _send(self, subscription: Subscription, stream: tornado.iostream.IOStream) -> None:
        """Write what the hub's fast path did not: history, and a batch the socket could not
        take at once, awaiting the write (tornado pings on its own)."""
        subscription.write_directly("ws-text", sample_frames, self._write_now(stream))
        try:
            while True:
                batch = await subscription.next_batch()
                if self.ws_connection is None or self.ws_connection.is_closing():
                    return  # no data frame may follow a close frame
                # The whole batch as one write of its frames, awaited: a peer that stops
                # reading stops us here (backpressure) holding one batch, where a write per
                # message held a tornado task per message (1-1.6 MB per stuck reader).
                await stream.write(sample_frames(batch))
                subscription.rejoin()
        except (
            tornado.iostream.StreamClosedError,
            SubscriberOverflow,  # cut: _overflowed is closing the connection
        ):
            pass

    def _write_now(self, stream: tornado.iostream.IOStream) -> WriteNow:
        """The hub's fast path: a write the socket takes at once, or none. ``writing()`` is
        tornado's word for bytes still buffered (the kernel did not take the last write)."""

        def write_now(data: bytes) -> bool:
            connection = self.ws_connection
            if connection is None or connection.is_closing() or stream.closed():
                return False
            if stream.writing():
                return False
            stream.write(data)  # its future needs no awaiting: tornado retrieves its error
            return True

        return write_now

    def _reject(self, error: StreamError) -> None:
        self.close(rejection(error).ws_close_code, ws_close_reason(rejection_text(error)))

    def _overflowed(self, reason: str) -> None:
        self._reject(SubscriberOverflow(reason))

    def on_message(self, message: str | bytes) -> None:
        self._reject(ProtocolError("unexpected message: this endpoint only sends"))

    def on_close(self) -> None:
        self.owner.handlers.discard(self)
        if self._pump is not None:
            self._pump.cancel()
        if self._subscription is not None:
            self._subscription.close()


class PageHandler(tornado.web.RequestHandler):
    """``GET /``: the live page, reading this server's stream."""

    def initialize(self, page: bytes) -> None:
        self.page = page

    def get(self) -> None:
        for name, value in PAGE_HEADERS.items():
            self.set_header(name, value)
        self.finish(self.page)


class TornadoServer:
    """A tornado HTTP server carrying the WebSocket endpoint and the live page.

    ``transport_name`` is what the page calls the stream (the seed design shares this class).
    """

    def __init__(
        self,
        hub: Hub,
        host: str,
        port: int,
        settings: Settings,
        options: Options,
        *,
        transport_name: str = "tornado-ws",
    ) -> None:
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self.handlers: set[SampleSocket] = set()
        self.origins = OriginPolicy.from_settings(settings)
        page = render_page(PageConfig.from_settings(transport_name, settings))
        self.app = tornado.web.Application(
            [
                (PATH, SampleSocket, {"hub": hub, "owner": self}),
                (PAGE_PATH, PageHandler, {"page": page}),
            ],
            websocket_ping_interval=settings.heartbeat_s,
            websocket_ping_timeout=ping_timeout(settings),
            websocket_max_message_size=settings.max_message_bytes,
        )
        self._http: tornado.httpserver.HTTPServer | None = None

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        sockets = listening_sockets(self.host, self._port)
        self._port = bound_port(sockets)
        self._http = _HTTPServer(
            self.app,
            max_header_size=MAX_HEAD_BYTES,
            max_body_size=self.settings.max_message_bytes,
            # Tornado's header timeout: the time a connection gets for each request head.
            idle_connection_timeout=self.settings.header_timeout_s,
            body_timeout=self.settings.header_timeout_s,
            ssl_options=server_ssl(self.settings.tls, HTTP1),
        )
        for sock in sockets:
            sock.rest = _resting(sock)
        self._http.add_sockets(sockets)

    async def stop(self) -> None:
        if self._http is None:
            return
        self._http.stop()
        for handler in list(self.handlers):
            handler.close(SHUTTING_DOWN.ws_close_code, SHUTTING_DOWN.label)
        await self._http.close_all_connections()
        self._http = None


class _HTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server, answering 431 where tornado closes without a status."""

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[str, int]) -> None:
        _answer_unsatisfiable_reads(stream)
        super().handle_stream(stream, address)


def _answer_unsatisfiable_reads(stream: tornado.iostream.IOStream) -> None:
    """Send 431 before the stream closes itself over a line past its limit.

    Tornado's stream closes on its own when a read finds no delimiter within its limit, before
    the HTTP layer hears of it: the only place to answer is the close itself. On this server
    the request head is the only such read (a chunk-size line is the other, and a GET here
    has no body).
    """
    close = stream.close

    def answering_close(exc_info: object = False) -> None:
        if isinstance(exc_info, tornado.iostream.UnsatisfiableReadError) and not stream.closed():
            detail = f"over {MAX_HEAD_BYTES} bytes"
            with contextlib.suppress(OSError):
                stream.socket.send(raw_http_answer(HEAD_TOO_LARGE, detail))
        close(exc_info)  # type: ignore[arg-type]

    stream.close = answering_close  # type: ignore[method-assign]


def _resting(sock: ListeningSocket) -> Callable[[float], None]:
    """How a listener out of descriptors rests: tornado's accept loop has no back-off."""

    def rest(seconds: float) -> None:
        loop = tornado.ioloop.IOLoop.current()
        loop.update_handler(sock, 0)  # stop watching it; its handler stays registered

        def wake() -> None:
            if sock.fileno() >= 0:  # not closed by stop() meanwhile
                loop.update_handler(sock, tornado.ioloop.IOLoop.READ)

        loop.call_later(seconds, wake)

    return rest


def _url(host: str, port: int, token: ResumeToken | None, tls: bool = False) -> str:
    url = f"{'wss' if tls else 'ws'}://{url_host(host)}:{port}{PATH}"
    if token is not None:
        url += f"?epoch={token.epoch}&since={token.since}"
    return url


#: Close codes that refuse nothing: none (the TCP connection just ended), normal, going away
#: (a server stopping), no status, abnormal.
_PLAIN_CLOSES = frozenset({None, 1000, 1001, 1005, 1006})


@asynccontextmanager
async def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[AsyncIterator[Sample]]:
    request = tornado.httpclient.HTTPRequest(
        _url(host, port, token, tls=settings.tls is not None),
        ssl_options=client_ssl(settings.tls, HTTP1),
        connect_timeout=settings.connect_timeout_s,
        request_timeout=settings.connect_timeout_s,
        # No "Accept-Encoding: gzip", and no inflating of a refusal's body: a compressed body
        # is checked against no limit but tornado's 100 MB after inflation.
        decompress_response=False,
    )
    url = request.url
    try:
        conn = await tornado.websocket.websocket_connect(
            request,
            ping_interval=settings.heartbeat_s or None,
            ping_timeout=ping_timeout(settings),
            max_message_size=settings.max_message_bytes,
        )
    except tornado.simple_httpclient.HTTPTimeoutError as exc:
        limit = settings.connect_timeout_s
        raise ServerUnavailable(f"no answer to the handshake at {url} within {limit:g} s") from exc
    except tornado.simple_httpclient.HTTPStreamClosedError as exc:
        # Closed before a whole answer: nobody serving there (or not HTTP: tornado logs that
        # and reports only the close, so it cannot be told apart).
        raise ServerUnavailable(f"{url} closed the connection without an answer") from exc
    except tornado.httpclient.HTTPClientError as exc:
        raise ServerRefused(f"handshake refused: HTTP {exc.code} {exc.message}") from exc
    except tornado.websocket.WebSocketError as exc:
        # An HTTP answer other than an error status: e.g. 200 to the upgrade.
        raise NotThisProtocol(f"{url} answered without a WebSocket upgrade: {exc}") from exc
    except (OSError, tornado.iostream.StreamClosedError, TimeoutError) as exc:
        raise unreachable(f"no WebSocket server at {url}", exc) from exc
    # One deadline for the connection's reads: the reader waits on nearly every message.
    deadline = ReadDeadline(settings.dead_after_s)
    try:
        yield _messages(conn, deadline)
    finally:
        deadline.close()
        conn.close()


async def _messages(
    conn: tornado.websocket.WebSocketClientConnection, deadline: ReadDeadline
) -> AsyncIterator[Sample]:
    read = deadline.read
    while True:
        message = await read(conn.read_message())
        if message is None:
            code, reason = conn.close_code, conn.close_reason
            text = f"closed (code {code}, reason {reason!r})"
            # A close with a code of its own (1008 policy, 1013 full, 1011 error...) is the
            # server saying no; a plain or abnormal close is just a lost connection.
            raise ConnectionLost(text) if code in _PLAIN_CLOSES else ServerRefused(text)
        yield decode_sample(message)


TORNADO_WS = Transport(
    name="tornado-ws",
    summary="Tornado WebSocket, the reference: pings, resume by ?epoch=E&since=SEQ",
    default_port=8888,
    endpoint="ws://{host}:{port}" + PATH,
    features=Features(resume=True, heartbeat=True, browser_native=True, bidirectional=True),
    serve=TornadoServer,
    connect=connect,
    options=NoOptions(),
    dependencies=("tornado",),
    modules=("transports.tornado_ws",),
    baseline="tornado-ws",
    bad_input_family="websocket",
    resume_token="query ?epoch=E&since=SEQ",
    write_path=(
        "hub fast path: each batch's frames encoded once, written to every caught-up IOStream "
        "in one pass; a task per connection only for history and a full socket"
    ),
    keepalive="WebSocket ping/pong (tornado), client read deadline",
    keepalive_params=keepalive_params,
)


def _as_originally_written(settings: Settings) -> Settings:
    """The seed design's keepalive and retry, whatever else the caller set."""
    return settings.with_changes(
        heartbeat_s=10.0,
        dead_after_s=30.0,
        backoff_base_s=3.0,
        backoff_cap_s=3.0,
        backoff_jitter=False,
        resume=False,
    )


#: The design the project grew from: a sample every 100 ms, ping interval 10 s and timeout
#: 30 s as written (tornado caps the timeout at the interval, so 10 s is in force), a fixed 3 s
#: retry, no resume. Kept to show what that design gets; do not fix it. Its own port, so it
#: can run beside the reference.
SEED = dataclasses.replace(
    TORNADO_WS,
    name="tornado-ws-seed",
    summary="Tornado WebSocket as the original design: 10/s, ping 10 s, fixed 3 s retry, no resume",
    default_port=8898,
    features=Features(resume=False, heartbeat=True, browser_native=True, bidirectional=True),
    resume_token="none",
    serve=functools.partial(TornadoServer, transport_name="tornado-ws-seed"),
    fixed_settings=_as_originally_written,
    default_rate_hz=10.0,
)
