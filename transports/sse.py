"""Server-Sent Events: starlette + sse-starlette under uvicorn, read with httpx + httpx-sse.

Server: ``GET /events`` answers ``text/event-stream``; each sample is one event with
``id: EPOCH:SEQ`` and ``data:`` its wire JSON, a whole hub batch per chunk. The stream opens with
``retry:``, how long a browser's EventSource waits before it reconnects: the ``retry_s``
option, by default the shared ``backoff_cap_s`` (a browser retries at that fixed pace, with no
backoff of its own, so a crowd of them must be given a pace the server can live with), and
carries a comment ping every ``heartbeat_s``. A ``Last-Event-ID: EPOCH:SEQ`` header resumes
(sse-starlette leaves the header to the app); without it, a ``lastEventId`` query parameter
does, since a new ``EventSource`` cannot set headers (its own reconnects send the header,
which wins). Pages from other origins are judged by the shared policy
(:mod:`transports.origins`): an allowed one gets CORS headers and a preflight ``OPTIONS`` its
204, a refused one 403 without them. ``GET /`` serves the live page (:mod:`transports.page`).
Answers (from :mod:`transports.rejections`): 400 for a malformed ``Last-Event-ID`` or a request
body, 503 when full (the hub's limit: streams count, idle or half-sent connections do not),
404 elsewhere, 400 from uvicorn for a request it cannot parse or whose head exceeds
``max_message_bytes``. A connection whose request head has not arrived within
``header_timeout_s`` (idle, or dripping it: slowloris) is dropped. A
subscriber the hub cuts (it stopped reading) and a send stuck longer than ``dead_after_s`` get
their connection aborted: a peer that reads nothing would otherwise hold a graceful close, and
its connection slot, forever.

Client: one ``GET`` through ``httpx_sse.aconnect_sse`` (``Last-Event-ID`` when resuming). Every
network read runs under the shared dead-peer deadline; httpx's own read timeout is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from functools import partial
from typing import Annotated

import anyio
import httpx
import msgspec
from httpx_sse import EventSource, aconnect_sse
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from model.errors import (
    BadResumeToken,
    ConnectionLost,
    FrameTooLarge,
    NotThisProtocol,
    ProtocolError,
    ServerRefused,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample
from transports.contract import Features, Transport
from transports.deadline import read_within
from transports.http_sniffing import request_errors, sniffing_transport
from transports.hub import Hub, Subscription
from transports.options import Options
from transports.origins import OriginPolicy
from transports.page import PAGE_HEADERS, PAGE_PATH, PageConfig, render_page
from transports.rejections import http_refusal
from transports.resume import ResumeToken, format_event_id
from transports.settings import Settings
from transports.sockets import (
    url_host,
)
from transports.sse_wire import (
    LINE_END,
    PING_COMMENT,
    format_events,
    format_retry,
    sample_of,
    token_from_header,
)
from transports.tls import HTTP1, client_ssl
from transports.uvicorn_serving import UvicornServing

__all__ = [
    "SSE",
    "SSEOptions",
    "SSEServer",
    "SampleEvents",
    "connect",
    "keepalive_params",
    "retry_hint_s",
]

PATH = "/events"
#: The query parameter carrying a resume token where no ``Last-Event-ID`` header can.
LAST_EVENT_ID_PARAMETER = "lastEventId"
_log = logging.getLogger(__name__)
#: How long a stopping server waits for its streams to end before aborting what is left.
_STOP_GRACE_S = 1.0
#: Most bytes of an error response's body quoted in a client's error.
_EXCERPT = 200


class SSEOptions(Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What only the sse transport needs."""

    #: The ``retry:`` hint: how long a browser's EventSource waits before reconnecting.
    #: None: the shared ``backoff_cap_s``.
    retry_s: Annotated[float, msgspec.Meta(ge=0.001, le=3600)] | None = None


def retry_hint_s(settings: Settings, options: Options) -> float:
    """The ``retry:`` hint the server sends: the option, or the backoff cap."""
    retry_s = options.retry_s if isinstance(options, SSEOptions) else None
    return settings.backoff_cap_s if retry_s is None else retry_s


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment=PING_COMMENT, sep=LINE_END)


class _SampleStream(EventSourceResponse):
    """One subscriber's event stream; ends cleanly when the server stops."""

    def __init__(
        self, owner: SSEServer, subscription: Subscription, headers: Mapping[str, str]
    ) -> None:
        settings = owner.settings
        super().__init__(
            self._chunks(subscription, owner.retry_s),
            headers=headers,
            ping=settings.heartbeat_s,
            sep=LINE_END,
            ping_message_factory=_ping,
            send_timeout=settings.dead_after_s,
        )
        self._owner = owner
        self._subscription = subscription
        self._ending = anyio.CancelScope()

    @staticmethod
    async def _chunks(subscription: Subscription, retry_s: float) -> AsyncIterator[bytes]:
        yield format_retry(retry_s)
        try:
            while True:
                # A whole batch per chunk: one ASGI send (one socket write) per batch.
                yield format_events(await subscription.next_batch())
        except SubscriberOverflow:
            return  # cut by the hub, whose callback has already dropped the connection

    def end(self) -> None:
        """Stop streaming (server shutdown); the response is then completed."""
        self._ending.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._owner.streams.add(self)
        try:
            with self._ending:
                await super().__call__(scope, receive, send)
        except SendTimeoutError:
            await self._drop(scope, receive, "a send stalled past the dead-peer timeout")
            return
        finally:
            self._owner.streams.discard(self)
            self._subscription.close()
        if self._ending.cancelled_caught:
            with anyio.move_on_after(_STOP_GRACE_S) as waited:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            if waited.cancelled_caught:
                await self._drop(scope, receive, "it did not take the end of the stream")

    async def _drop(self, scope: Scope, receive: Receive, reason: str) -> None:
        """Abort the connection, then wait for uvicorn to see it gone.

        Returning before uvicorn has noticed would make it log an unfinished response.
        """
        self._owner.abort(scope.get("client"), reason)
        with anyio.move_on_after(_STOP_GRACE_S):
            while (await receive())["type"] != "http.disconnect":
                pass


def _refuse(error: StreamError, headers: Mapping[str, str]) -> Response:
    status, text = http_refusal(error)
    return PlainTextResponse(text, status_code=status, headers=headers)


class SSEServer:
    """uvicorn serving a starlette app with the event stream at ``/events``, the page at ``/``."""

    def __init__(
        self, hub: Hub, host: str, port: int, settings: Settings, options: Options
    ) -> None:
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self.retry_s = retry_hint_s(settings, options)
        self.origins = OriginPolicy.from_settings(settings)
        self.streams: set[_SampleStream] = set()
        self._page = render_page(PageConfig.from_settings("sse", settings))
        self.app = Starlette(
            routes=[
                Route(PATH, self._events, methods=["GET"]),
                Route(PATH, self._preflight, methods=["OPTIONS"]),
                Route(PAGE_PATH, self._serve_page, methods=["GET"]),
            ]
        )
        self._serving = UvicornServing(self.app, settings)

    @property
    def port(self) -> int:
        return self._port

    async def _serve_page(self, request: Request) -> Response:
        return Response(self._page, headers=PAGE_HEADERS)

    async def _preflight(self, request: Request) -> Response:
        headers = request.headers
        answer = self.origins.preflight(
            headers.get("origin"),
            headers.get("host"),
            headers.get("access-control-request-method"),
            private_network=headers.get("access-control-request-private-network") == "true",
        )
        return PlainTextResponse(answer.reason, answer.status, headers=answer.headers)

    async def _events(self, request: Request) -> Response:
        headers = request.headers
        origin = headers.get("origin")
        if not self.origins.allows(origin, headers.get("host")):
            _log.info("refusing %s: %s", PATH, self.origins.refusal(origin))
            return PlainTextResponse(
                self.origins.refusal(origin) + "\n", 403, headers={"Vary": "Origin"}
            )
        cors = self.origins.cors_headers(origin, headers.get("host"))
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            return _refuse(ProtocolError(f"GET {PATH} takes no request body"), cors)
        client = request.scope.get("client")
        header = headers.get("last-event-id")
        source = "Last-Event-ID"
        if header is None and LAST_EVENT_ID_PARAMETER in request.query_params:
            header, source = request.query_params[LAST_EVENT_ID_PARAMETER], LAST_EVENT_ID_PARAMETER
        try:
            token = token_from_header(header)
            subscription = self.hub.subscribe(token, on_overflow=partial(self.abort, client))
        except BadResumeToken as exc:
            return _refuse(BadResumeToken(f"{source}: {exc}"), cors)
        except TooManyConnections as exc:
            return _refuse(exc, cors)
        return _SampleStream(self, subscription, cors)

    @property
    def open_connections(self) -> int:
        """Connections uvicorn holds open now (streams, idle keep-alives, half-read requests)."""
        return self._serving.open_connections

    def abort(self, client: tuple[str, int] | None, reason: str) -> None:
        """Drop the connection from ``client`` at once, unsent bytes and all.

        ASGI does not hand the app its transport, so find it among uvicorn's connections.
        """
        self._serving.abort(client, reason)

    async def start(self) -> None:
        # Our own sockets, so port 0 works and the bound port can be read back.
        self._port = await self._serving.start(self.host, self._port)

    async def stop(self) -> None:
        for stream in list(self.streams):
            stream.end()
        await self._serving.stop()


class _GuardedStream(httpx.AsyncByteStream):
    """A response body read under the dead-peer deadline and the line-size limit.

    The deadline wraps each network read, not each event: a chunk holds a whole batch, so a
    busy stream pays for one timer per batch. httpx-sse would buffer an endless line whole,
    so a line longer than ``max_line`` bytes ends the stream (:class:`FrameTooLarge`).
    """

    def __init__(self, inner: httpx.AsyncByteStream, seconds: float | None, max_line: int) -> None:
        self._inner, self._seconds, self._max_line = inner, seconds, max_line

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._inner)
        line = 0  # bytes of the line not yet ended
        while True:
            try:
                chunk = await read_within(anext(chunks), self._seconds)
            except StopAsyncIteration:
                return
            end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
            line = line + len(chunk) if end < 0 else len(chunk) - end - 1
            if line > self._max_line:
                raise FrameTooLarge(f"an event-stream line over {self._max_line} bytes")
            yield chunk
            # A read from a full buffer completes without suspending: yield to the loop once
            # per chunk, or a busy stream would starve every other task of this process.
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        await self._inner.aclose()


class SampleEvents:
    """The samples of one event-stream response.

    ``retry_ms`` records the server's latest ``retry:`` hint. The shared client keeps its own
    backoff with jitter (the hint is for browsers, whose EventSource has none).
    """

    def __init__(self, source: EventSource, settings: Settings) -> None:
        stream = source.response.stream
        if not isinstance(stream, httpx.AsyncByteStream):
            raise TypeError("an async client's response has an async stream")
        # Beneath httpx-sse's parser, so every network read it makes is guarded.
        source.response.stream = _GuardedStream(
            stream, settings.dead_after_s, settings.max_message_bytes
        )
        self._source = source
        self.retry_ms: int | None = None
        self._events = self._samples()

    def __aiter__(self) -> AsyncIterator[Sample]:
        # The generator itself, so ``async for`` steps it without a Python call per sample.
        return self._events

    def __anext__(self) -> Awaitable[Sample]:
        return self._events.__anext__()

    async def aclose(self) -> None:
        # RuntimeError: the generator is running in another task and cannot be closed from
        # here; the response is closed right after, which ends the read it is waiting in.
        with contextlib.suppress(RuntimeError):
            await self._events.aclose()

    async def _samples(self) -> AsyncGenerator[Sample, None]:
        try:
            async for event in self._source.aiter_sse():
                if event.retry is not None:
                    self.retry_ms = event.retry
                sample = sample_of(event)
                if sample is not None:
                    yield sample
        except httpx.DecodingError as exc:
            raise ProtocolError(f"undecodable event stream: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionLost(f"{type(exc).__name__}: {exc or 'connection broken'}") from exc


def _url(host: str, port: int, tls: bool = False) -> str:
    return f"{'https' if tls else 'http'}://{url_host(host)}:{port}{PATH}"


async def _excerpt(response: httpx.Response) -> str:
    """The start of an error response's body, for the error message."""
    if _encoding(response) != "identity":
        return f"({_encoding(response)}-encoded body)"
    body = b""
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(1.0):
            # Raw: never inflate what a server sends (a 1 MB gzip body inflates to 1 GiB).
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= _EXCERPT:
                    break
    return body[:_EXCERPT].decode("utf-8", "replace").strip()


def _encoding(response: httpx.Response) -> str:
    return response.headers.get("content-encoding", "identity").strip().lower() or "identity"


async def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        raise ServerRefused(f"{status}: {await _excerpt(response)}")
    content_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if content_type != "text/event-stream":
        raise NotThisProtocol(
            f"expected Content-Type text/event-stream, got {content_type!r}: "
            f"{await _excerpt(response)}"
        )
    if _encoding(response) != "identity":
        # Asked for identity: the size limit is on the bytes that arrive, so a compressed
        # stream would inflate past it unchecked.
        raise NotThisProtocol(
            f"a {_encoding(response)}-encoded event stream, although identity was asked for"
        )


@contextlib.asynccontextmanager
async def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[SampleEvents]:
    url = _url(host, port, tls=settings.tls is not None)
    # identity: the size limits count the bytes that arrive (see _check).
    headers = {"Accept-Encoding": "identity"}
    if token is not None:
        headers["Last-Event-ID"] = format_event_id(token.epoch, token.since)
    # No read timeout from httpx: the dead-peer deadline on each read is ours.
    timeout = httpx.Timeout(settings.connect_timeout_s, read=None)
    transport, sniffer = sniffing_transport(client_ssl(settings.tls, HTTP1))
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(timeout=timeout, transport=transport)
        )
        with request_errors(url, "SSE", sniffer, settings.connect_timeout_s):
            async with asyncio.timeout(settings.connect_timeout_s):
                source = await stack.enter_async_context(
                    aconnect_sse(client, "GET", url, headers=headers)
                )
                await _check(source.response)
        events = SampleEvents(source, settings)
        stack.push_async_callback(events.aclose)
        yield events


def keepalive_params(settings: Settings, options: Options) -> Mapping[str, float | None]:
    """Comment pings from the server, the client's read deadline, the server's send timeout,
    and the ``retry:`` hint a browser's EventSource reconnects after."""
    return {
        "comment_ping_interval_s": settings.heartbeat_s or None,
        "read_timeout_s": settings.dead_after_s,
        "server_send_timeout_s": settings.dead_after_s,
        "browser_retry_s": retry_hint_s(settings, options),
    }


SSE = Transport(
    name="sse",
    summary="Server-Sent Events: starlette + sse-starlette under uvicorn, httpx-sse client",
    default_port=8889,
    endpoint="http://{host}:{port}" + PATH,
    features=Features(
        resume=True, heartbeat=True, browser_native=True, bidirectional=False, push=True
    ),
    serve=SSEServer,
    connect=connect,
    options=SSEOptions(),
    dependencies=("starlette", "sse-starlette", "uvicorn", "httpx", "httpx-sse"),
    modules=("transports.sse", "transports.sse_wire"),
    baseline="sse-starlette",
    bad_input_family="http-stream",
    resume_token="Last-Event-ID: E:SEQ (event id E:SEQ)",
    write_path=(
        "a task per connection: sse-starlette's response is a generator behind ASGI's awaited "
        "send(), so neither starlette nor uvicorn lets a server write to many connections in "
        "one pass"
    ),
    keepalive="SSE comment ping, client read deadline",
    keepalive_params=keepalive_params,
)
