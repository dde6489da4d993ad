"""HTTP streaming: one chunked response of NDJSON lines; starlette under uvicorn, read with httpx.

Server-Sent Events without the event framing. ``GET /stream?epoch=E&since=SEQ`` (both or
neither; the rule of every HTTP transport, :func:`~transports.resume.query_parameters`)
answers ``200 application/x-ndjson``, chunked, with ``X-Accel-Buffering: no`` (a proxy such
as nginx must pass each chunk on at once) and ``Cache-Control: no-store``. The body is the tcp
transport's line format (:mod:`transports.ndjson`): each sample one wire-form JSON line, a
whole hub batch per chunk, and when nothing was sent for ``heartbeat_s`` a
``{"heartbeat":NS}`` line (chosen over an empty line: the client's line decoder, the tcp
transport's, already knows it, and it says when it was sent). ``HEAD /stream`` answers the
headers alone.

Pages from other origins are judged by the shared policy (:mod:`transports.origins`): an
allowed one gets CORS headers and a preflight ``OPTIONS`` its answer, a refused one 403.
Answers (from :mod:`transports.rejections`): 400 for a malformed token or a request body,
503 when full (the hub's limit: streams count, idle or half-sent connections do not), 404
elsewhere, 405 for another method, 400 from uvicorn for a request it cannot parse or whose
head exceeds ``max_message_bytes``. The server only writes, so it learns of a dead peer from
its writes: a send stuck longer than ``dead_after_s``, or a subscriber the hub cuts (it
stopped reading), gets its connection aborted, and the kernel's ``TCP_USER_TIMEOUT`` on
every accepted socket covers a peer that vanished (:mod:`transports.sockets`). ``stop()``
ends every stream with the chunked body's end, aborting any that does not take it.
Serving chores (sockets, head deadline, stop): :mod:`transports.uvicorn_serving`.

Client: one ``GET`` with ``httpx`` (``Accept-Encoding: identity``: the line limit counts the
bytes that arrive), the body read raw, every network read under the shared dead-peer deadline
(httpx's own read timeout is off), lines split with the ``max_message_bytes`` limit. A peer
that answers something other than HTTP is told apart from one that answers nothing
(:mod:`transports.http_sniffing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from functools import partial
from urllib.parse import parse_qsl

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from model.errors import (
    ConnectionLost,
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
from transports.ndjson import (
    LineSplitter,
    encode_heartbeat,
    encode_sample_lines,
    server_block,
)
from transports.options import NoOptions, Options
from transports.origins import OriginPolicy
from transports.rejections import http_refusal
from transports.resume import ResumeToken, parse_query, query_parameters
from transports.sample_stream import BatchedSampleStream
from transports.settings import Settings
from transports.sockets import url_host
from transports.tls import HTTP1, client_ssl
from transports.uvicorn_serving import STOP_GRACE_S, UvicornServing

__all__ = ["HTTP_STREAM", "NDJSON", "HttpStreamServer", "connect", "keepalive_params"]

PATH = "/stream"
_log = logging.getLogger(__name__)
NDJSON = "application/x-ndjson"
#: Every stream's headers beyond its type: no buffering by a proxy, no caching.
_STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-store"}
#: Most bytes of an error response's body quoted in a client's error.
_EXCERPT = 200


def token_of_query(query: str) -> ResumeToken | None:
    """The resume token in a raw query string; :class:`~model.errors.ProtocolError` if bad."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return parse_query(query_parameters(pairs, ("epoch", "since")))


def keepalive_params(settings: Settings, options: Options) -> Mapping[str, float | None]:
    """Heartbeat lines from the server, the client's read deadline, the server's send timeout."""
    return {
        "heartbeat_interval_s": settings.heartbeat_s or None,
        "read_timeout_s": settings.dead_after_s,
        "server_send_timeout_s": settings.dead_after_s,
    }


async def _lines(subscription: Subscription, heartbeat_s: float | None) -> AsyncIterator[bytes]:
    """The body: a chunk per hub batch, a heartbeat line after ``heartbeat_s`` idle."""
    try:
        while True:
            batch = await subscription.next_batch(heartbeat_s)
            yield encode_sample_lines(batch) if batch else encode_heartbeat(time.monotonic_ns())
    except SubscriberOverflow:
        return  # cut by the hub, whose callback has already dropped the connection


class _SampleStream(StreamingResponse):
    """One subscriber's chunked stream; ends cleanly when the server stops."""

    def __init__(
        self, owner: HttpStreamServer, subscription: Subscription, cors: Mapping[str, str]
    ) -> None:
        super().__init__(
            _lines(subscription, owner.settings.heartbeat_s or None),
            media_type=NDJSON,
            headers={**_STREAM_HEADERS, **cors},
        )
        self._owner = owner
        self._subscription = subscription
        self._ending = anyio.CancelScope()
        self._client: tuple[str, int] | None = None

    def end(self) -> None:
        """Stop streaming (server shutdown): the body's end goes out next."""
        self._ending.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._client = scope.get("client")
        self._owner.streams.add(self)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._owner.streams.discard(self)
            self._subscription.close()

    async def stream_response(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        timeout = self._owner.settings.dead_after_s
        stalled = False
        with self._ending:
            await send(start)
            async for chunk in self.body_iterator:
                assert isinstance(chunk, bytes)
                with anyio.move_on_after(timeout) as waited:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if waited.cancelled_caught:
                    stalled = True
                    break
        if not stalled:
            with anyio.move_on_after(STOP_GRACE_S) as waited:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            if not waited.cancelled_caught:
                return
        reason = "a send stalled past the dead-peer timeout" if stalled else "it took no end"
        self._owner.drop(self._client, reason)
        # Until uvicorn notices (its disconnect ends this response): returning before would
        # make it log an unfinished response.
        with anyio.move_on_after(STOP_GRACE_S):
            await anyio.sleep_forever()


def _refuse(error: StreamError, cors: Mapping[str, str]) -> Response:
    status, text = http_refusal(error)
    return PlainTextResponse(text, status_code=status, headers=cors)


class HttpStreamServer:
    """uvicorn serving a starlette app with the stream at ``/stream``."""

    def __init__(
        self, hub: Hub, host: str, port: int, settings: Settings, options: Options
    ) -> None:
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self.streams: set[_SampleStream] = set()
        self.origins = OriginPolicy.from_settings(settings)
        app = Starlette(
            routes=[
                Route(PATH, self._stream, methods=["GET"]),
                Route(PATH, self._preflight, methods=["OPTIONS"]),
            ]
        )
        self._serving = UvicornServing(app, settings)

    @property
    def port(self) -> int:
        return self._port

    @property
    def open_connections(self) -> int:
        return self._serving.open_connections

    async def start(self) -> None:
        self._port = await self._serving.start(self.host, self._port)

    async def stop(self) -> None:
        for stream in list(self.streams):
            stream.end()
        await self._serving.stop()

    def drop(self, client: tuple[str, int] | None, reason: str) -> None:
        """Abort the connection from ``client`` (a stream that can no longer be served)."""
        self._serving.abort(client, reason)

    async def _preflight(self, request: Request) -> Response:
        headers = request.headers
        answer = self.origins.preflight(
            headers.get("origin"),
            headers.get("host"),
            headers.get("access-control-request-method"),
            private_network=headers.get("access-control-request-private-network") == "true",
        )
        return PlainTextResponse(answer.reason, answer.status, headers=answer.headers)

    async def _stream(self, request: Request) -> Response:
        headers = request.headers
        origin, own = headers.get("origin"), headers.get("host")
        if not self.origins.allows(origin, own):
            _log.info("refusing %s: %s", PATH, self.origins.refusal(origin))
            return PlainTextResponse(
                self.origins.refusal(origin) + "\n", 403, headers={"Vary": "Origin"}
            )
        cors = self.origins.cors_headers(origin, own)
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            return _refuse(ProtocolError(f"GET {PATH} takes no request body"), cors)
        try:
            token = token_of_query(request.url.query)
        except ProtocolError as exc:  # BadResumeToken is one
            return _refuse(exc, cors)
        if request.method == "HEAD":
            return Response(media_type=NDJSON, headers={**_STREAM_HEADERS, **cors})
        client = request.scope.get("client")
        try:
            subscription = self.hub.subscribe(token, on_overflow=partial(self.drop, client))
        except TooManyConnections as exc:
            return _refuse(exc, cors)
        return _SampleStream(self, subscription, cors)


# -- client ------------------------------------------------------------------------------------


def _query(token: ResumeToken | None) -> str:
    return "" if token is None else f"?epoch={token.epoch}&since={token.since}"


def _encoding(response: httpx.Response) -> str:
    return response.headers.get("content-encoding", "identity").strip().lower() or "identity"


async def _excerpt(response: httpx.Response) -> str:
    """The start of an error response's body, for the error message (never inflated)."""
    if _encoding(response) != "identity":
        return f"({_encoding(response)}-encoded body)"
    body = b""
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(1.0):
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= _EXCERPT:
                    break
    return body[:_EXCERPT].decode("utf-8", "replace").strip()


async def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        raise ServerRefused(f"{status}: {await _excerpt(response)}")
    content_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if content_type != NDJSON:
        raise NotThisProtocol(
            f"expected Content-Type {NDJSON}, got {content_type!r}: {await _excerpt(response)}"
        )
    if _encoding(response) != "identity":
        # Asked for identity: the line limit counts the bytes that arrive, so a compressed
        # stream would inflate past it unchecked.
        raise NotThisProtocol(
            f"a {_encoding(response)}-encoded stream, although identity was asked for"
        )


async def _batches(
    response: httpx.Response, settings: Settings
) -> AsyncGenerator[list[Sample], None]:
    """The samples of each chunk of the body, decoded together (one msgspec call for a block
    of sample lines, as tcp's client does), one list per chunk that held any."""
    splitter = LineSplitter(settings.max_message_bytes)
    chunks = aiter(response.aiter_raw())
    seconds = settings.dead_after_s
    while True:
        try:
            chunk = await read_within(anext(chunks), seconds)
        except StopAsyncIteration:
            return  # the body ended: the server closed the stream
        except httpx.TransportError as exc:
            raise ConnectionLost(f"{type(exc).__name__}: {exc or 'connection broken'}") from exc
        block = splitter.feed_block(chunk)
        if block is not None:
            # Heartbeats only reset the read deadline, which their arrival already did.
            samples, error = server_block(block, "stream")
            if samples:
                yield samples  # those before a bad line or an error line were received too
            if error is not None:
                raise error
        # A read from a full buffer completes without suspending: yield to the loop once per
        # chunk, or a busy stream would starve every other task of this process.
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[AsyncIterator[Sample]]:
    scheme = "http" if settings.tls is None else "https"
    url = f"{scheme}://{url_host(host)}:{port}{PATH}"
    headers = {"Accept-Encoding": "identity", "Accept": NDJSON}
    # No read timeout from httpx: the dead-peer deadline on each read is ours.
    timeout = httpx.Timeout(settings.connect_timeout_s, read=None)
    transport, sniffer = sniffing_transport(client_ssl(settings.tls, HTTP1))
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(timeout=timeout, transport=transport)
        )
        with request_errors(url, "http-stream", sniffer, settings.connect_timeout_s):
            async with asyncio.timeout(settings.connect_timeout_s):
                response = await stack.enter_async_context(
                    client.stream("GET", url + _query(token), headers=headers)
                )
                await _check(response)
        samples = BatchedSampleStream(_batches(response, settings))
        # Running in another task, its generators cannot be closed from here (aclose passes
        # over that): the response is closed right after, which ends the read they wait in.
        stack.push_async_callback(samples.aclose)
        yield samples


HTTP_STREAM = Transport(
    name="http-stream",
    summary="HTTP chunked NDJSON stream: starlette under uvicorn, httpx client, resume by query",
    default_port=8894,
    endpoint="http://{host}:{port}" + PATH,
    features=Features(
        resume=True, heartbeat=True, browser_native=True, bidirectional=False, push=True
    ),
    serve=HttpStreamServer,
    connect=connect,
    options=NoOptions(),
    dependencies=("starlette", "uvicorn", "httpx"),
    modules=(
        "transports.http_stream",
        "transports.uvicorn_serving",
        "transports.http_sniffing",
        "transports.ndjson",
    ),
    baseline="starlette-stream",
    bad_input_family="http-stream",
    resume_token="query ?epoch=E&since=SEQ",
    write_path=(
        "a task per connection: starlette's StreamingResponse is a generator behind ASGI's "
        "awaited send(), so no write to many connections in one pass"
    ),
    keepalive='{"heartbeat":NS} lines from the server, client read deadline',
    keepalive_params=keepalive_params,
)
