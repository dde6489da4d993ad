"""Tornado WebSocket: the reference transport, and the original design it grew from.

Server: a ``WebSocketHandler`` at ``/websocket/`` sending one wire-form sample per text message.
``?epoch=E&since=SEQ`` resumes. Keepalive is tornado's own ping (``websocket_ping_interval``,
``websocket_ping_timeout``, the latter capped by tornado >= 6.5 at the interval).
Client: ``websocket_connect`` with the same pings, plus the shared read deadline; a ``None``
message is tornado's way of saying the connection closed.

Close codes and reasons come from :mod:`transports.rejections`: 1008 (bad resume token, a
message from the client, a subscriber that fell behind), 1013 (server full), 1001 (server
shutting down); 1009 (message too big) is tornado's own.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import tornado.httpclient
import tornado.httpserver
import tornado.iostream
import tornado.web
import tornado.websocket

from model.errors import (
    BadResumeToken,
    ConnectionLost,
    ProtocolError,
    ServerUnavailable,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample, decode_sample, encode_sample
from transports.contract import Features, Transport
from transports.deadline import ReadDeadline
from transports.hub import Hub, Subscription
from transports.options import NoOptions, Options
from transports.rejections import SHUTTING_DOWN, rejection, rejection_text, ws_close_reason
from transports.resume import ResumeToken, parse_query
from transports.settings import Settings
from transports.sockets import bound_port, listening_sockets, tune_accepted, url_host

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
#: How long tornado's ``close()`` waits for the peer's close frame before it aborts the
#: connection: hard-coded in tornado (``WebSocketProtocol13.close``), not configurable, so a
#: server that detected a dead peer still holds its socket this much longer.
TORNADO_CLOSE_WAIT_S = 5.0


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


def _observe(write: asyncio.Future[None]) -> None:
    """Mark a write's outcome as seen (its failure means the connection is gone)."""
    if not write.cancelled():
        write.exception()


class SampleSocket(tornado.websocket.WebSocketHandler):
    """One subscriber: resume from the query, then pump the hub's samples."""

    hub: Hub
    owner: TornadoServer

    def initialize(self, hub: Hub, owner: TornadoServer) -> None:
        self.hub, self.owner = hub, owner
        self._pump: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None

    def check_origin(self, origin: str) -> bool:
        return True  # a read-only public stream: any page may subscribe

    def open(self, *args: str, **kwargs: str) -> None:
        query: dict[str, str] = {
            key: self.get_query_argument(key, strip=False)  # verbatim: " 7" is no seq
            for key in ("epoch", "since")
            if key in self.request.query_arguments
        }
        try:
            token = parse_query(query)
            self._subscription = self.hub.subscribe(token, on_overflow=self._overflowed)
        except (BadResumeToken, TooManyConnections) as exc:
            self._reject(exc)
            return
        self.owner.handlers.add(self)
        stream = self.ws_connection.stream if self.ws_connection is not None else None
        tune_accepted(stream.socket if stream is not None else None, self.owner.settings)
        self._pump = asyncio.create_task(self._send(self._subscription))

    async def _send(self, subscription: Subscription) -> None:
        writes: list[asyncio.Future[None]] = []
        try:
            while True:
                batch = await subscription.next_batch()
                # Write the whole batch, then wait once for it to reach the socket: a peer
                # that stops reading stops us here (backpressure). Only the last write is
                # awaited: tornado's stream completes writes in order, so once the last has
                # reached the socket every earlier one has too. (Gathering them all cost a
                # callback per message, about a fifth of this server's time at saturation.)
                writes = []
                for sample in batch:
                    writes.append(self.write_message(encode_sample(sample)))
                await writes[-1]
        except (
            tornado.websocket.WebSocketClosedError,
            tornado.iostream.StreamClosedError,
            SubscriberOverflow,  # cut: _overflowed is closing the connection
        ):
            pass
        finally:
            # Tornado makes each write a task; one failing unobserved (the connection closed
            # mid-batch) would be logged when collected. Observe those of an unfinished batch.
            for write in writes:
                write.add_done_callback(_observe)

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


class TornadoServer:
    """A tornado HTTP server carrying the WebSocket endpoint."""

    def __init__(
        self, hub: Hub, host: str, port: int, settings: Settings, options: Options
    ) -> None:
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self.handlers: set[SampleSocket] = set()
        self.app = tornado.web.Application(
            [(PATH, SampleSocket, {"hub": hub, "owner": self})],
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
        self._http = tornado.httpserver.HTTPServer(
            self.app, max_header_size=64 * 1024, max_body_size=self.settings.max_message_bytes
        )
        self._http.add_sockets(sockets)

    async def stop(self) -> None:
        if self._http is None:
            return
        self._http.stop()
        for handler in list(self.handlers):
            handler.close(SHUTTING_DOWN.ws_close_code, SHUTTING_DOWN.label)
        await self._http.close_all_connections()
        self._http = None


def _url(host: str, port: int, token: ResumeToken | None) -> str:
    url = f"ws://{url_host(host)}:{port}{PATH}"
    if token is not None:
        url += f"?epoch={token.epoch}&since={token.since}"
    return url


@asynccontextmanager
async def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[AsyncIterator[Sample]]:
    request = tornado.httpclient.HTTPRequest(
        _url(host, port, token),
        connect_timeout=settings.connect_timeout_s,
        request_timeout=settings.connect_timeout_s,
    )
    try:
        conn = await tornado.websocket.websocket_connect(
            request,
            ping_interval=settings.heartbeat_s or None,
            ping_timeout=ping_timeout(settings),
            max_message_size=settings.max_message_bytes,
        )
    except tornado.httpclient.HTTPClientError as exc:
        raise ProtocolError(f"handshake refused: {exc}") from exc
    except (OSError, tornado.iostream.StreamClosedError, TimeoutError) as exc:
        raise ServerUnavailable(f"no WebSocket server at {request.url}: {exc}") from exc
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
            raise ConnectionLost(f"closed (code {conn.close_code}, reason {conn.close_reason!r})")
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
    fixed_settings=_as_originally_written,
    default_rate_hz=10.0,
)
