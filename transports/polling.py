"""HTTP polling and long polling: one aiohttp server, two aiohttp clients.

Server: an aiohttp app answering ``GET /samples?epoch=E&since=SEQ[&wait=SECONDS]`` with a JSON
array of at most ``settings.batch`` wire-form samples, oldest first (which ones:
:mod:`transports.poll_query`). With ``wait`` it holds the request until a sample the client
lacks exists or the wait (capped at the long-poll ``wait_s`` option) ends, then answers (``[]``
if nothing came). A malformed query gets 400 with a plain-text reason (parameters it does not
know, such as a browser library's cache buster ``_=123``, are ignored), other paths 404; the
answers come from :mod:`transports.rejections`. Pages from other origins are judged by the
shared policy (:mod:`transports.origins`): an allowed one gets CORS headers and a preflight
``OPTIONS`` its 204, a refused one 403 without them. ``GET /`` serves the live page
(:mod:`transports.page`), polling or long polling as the server's options say. The
connection limit judges a connection once, at its first request: past
``settings.max_connections`` connections already served, a newcomer gets 503 (and its
connection closed), and pollers already being served never do, however many idle sockets
pile up. A connection whose first request head has not arrived
within ``settings.header_timeout_s`` is dropped; later, idle keep-alive connections are closed
after ``settings.dead_after_s`` (aiohttp's own default when that is None), so dead clients do
not pile up. Request lines and headers are bounded by aiohttp's limits (8190 bytes; 400 past
them, logged in one line rather than aiohttp's traceback). The server keeps no state per
poller beyond that: a poller that stops costs nothing but its idle connection, until the
keep-alive timeout. It only remembers the newest position any poller asked from, so that a
saturating publisher (rate 0) paces itself to the pollers as it does to subscribers.

Clients: one ``aiohttp.ClientSession`` per "connection", which here is a polling session on
one keep-alive TCP connection. It ends when a request fails or when that TCP connection is
gone (reset, or closed by the server) before the next poll: aiohttp would quietly open
another, but then a reset would go unseen and uncounted, unlike on every push transport, so
the session refuses a second TCP connection and the shared client reconnects (with backoff and
resume). The first request of a session is a plain poll bounded by
``settings.connect_timeout_s``: it is the handshake (a server that does not answer it is
``ServerUnavailable``). After each answer the client moves its own position ``(epoch, since)``
to the newest sample received.

- ``poll`` pauses its ``interval_s`` option (:class:`PollOptions`) between polls, except
  after a full batch, when more is likely waiting and it asks again at once;
- ``long-poll`` asks back to back with ``wait=`` its ``wait_s`` option (:class:`LongPollOptions`),
  capped at ``settings.heartbeat_s``: a held request is the stream's heartbeat (the answer,
  empty if need be, comes within the heartbeat interval, as a ping would on a push transport).

Dead-server detection is aiohttp's ``ClientTimeout(total=...)`` per request (the only timer):
``dead_after_s`` for a poll, the held time + ``dead_after_s`` for a long poll; a request that
takes longer raises ``PeerSilent``. So a long poller notices a dead path within heartbeat +
dead-after, the same bound as every push transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import SimpleNamespace
from typing import Annotated

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler

from model.errors import (
    ConnectionLost,
    FrameTooLarge,
    NotThisProtocol,
    PeerSilent,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
    TooManyConnections,
)
from model.sample import Sample, decode_samples, encode_samples
from transports.contract import Features, Transport
from transports.failures import unreachable
from transports.hub import Hub
from transports.options import Options
from transports.origins import OriginPolicy
from transports.page import PAGE_HEADERS, PAGE_PATH, PageConfig, render_page
from transports.poll_query import answer_range, format_poll_query, parse_poll_query, wanted_seq
from transports.rejections import http_refusal
from transports.resume import ResumeToken
from transports.settings import Settings
from transports.sockets import (
    BACKLOG,
    HeadDeadline,
    bound_port,
    listening_sockets,
    tune_accepted,
    url_host,
)
from transports.tls import HTTP1, client_ssl, server_ssl

__all__ = [
    "LONG_POLL",
    "POLL",
    "LongPollOptions",
    "PollOptions",
    "PollingServer",
    "connect_long_poll",
    "connect_poll",
    "page_config",
]

PATH = "/samples"
#: How long ``stop()`` lets requests in flight finish before cutting them (held long polls).
_SHUTDOWN_GRACE_S = 0.25
_ANSWER_HEADERS = {"Cache-Control": "no-store"}
#: The client's request headers: no compression (see ``_Poller._ask``).
_IDENTITY = {"Accept-Encoding": "identity"}
#: What aiohttp closes an idle keep-alive connection after when ``dead_after_s`` is None.
_AIOHTTP_KEEPALIVE_S = 75.0


class PollOptions(Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``poll`` client's pace."""

    #: Pause between polls (none after a full batch). At least 1 ms: not a busy loop.
    interval_s: Annotated[float, msgspec.Meta(ge=0.001, le=3600)] = 0.1


class LongPollOptions(Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How long a long poll is held."""

    #: How long the client asks the server to hold a request without data, and the most a
    #: server holds one. At least 1 ms: the query carries milliseconds, and 0 is a plain poll.
    wait_s: Annotated[float, msgspec.Meta(ge=0.001, le=3600)] = 5.0


def _idle_timeout_s(settings: Settings) -> float:
    """When the server closes an idle keep-alive connection: a dead poller's is not kept."""
    return _AIOHTTP_KEEPALIVE_S if settings.dead_after_s is None else settings.dead_after_s


def page_config(settings: Settings, options: Options) -> PageConfig:
    """The live page polls as this server's options say: long polls for ``long-poll``."""
    if isinstance(options, LongPollOptions):
        return PageConfig.from_settings("long-poll", settings, wait_s=_held_s(settings, options))
    interval_s = options.interval_s if isinstance(options, PollOptions) else None
    return PageConfig.from_settings("poll", settings, interval_s=interval_s)


def _max_wait_s(options: Options) -> float:
    """The longest hold the server grants: a ``poll`` server serves long polls too."""
    return (options if isinstance(options, LongPollOptions) else LongPollOptions()).wait_s


class _PollerPositions:
    """The newest position any poller asked from (the one poll-only state of the server).

    A poller holds no subscription, but a saturating publisher (rate 0) paces itself to the
    reader furthest behind, so the hub is told where pollers are.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._next: int | None = None  # None until a poller asks
        hub.watch(lambda: self._next)

    def asked_after(self, seq: int) -> None:
        """A poller holds everything up to ``seq``."""
        self._next = max(seq + 1, self._next or 0)
        self._hub.room_made()


class _Newcomers:
    """Which connections are served: each is judged once, at its first request.

    Counting every open socket on every request (as before) turned idle sockets beyond the
    limit into 503s for the pollers already being served; here only newcomers are refused.
    A connection's first request head must arrive within the header timeout (aiohttp's own
    keep-alive timer covers the heads after it).
    """

    def __init__(self, limit: int, header_timeout_s: float) -> None:
        self._limit, self._header_timeout_s = limit, header_timeout_s
        self._admitted: set[RequestHandler] = set()
        self._unheard: dict[RequestHandler, HeadDeadline] = {}

    def opened(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        deadline = HeadDeadline(transport, self._header_timeout_s)
        deadline.arm()
        self._unheard[handler] = deadline

    def closed(self, handler: RequestHandler) -> None:
        self._admitted.discard(handler)
        deadline = self._unheard.pop(handler, None)
        if deadline is not None:
            deadline.met()

    def admit(self, handler: RequestHandler) -> bool:
        """Whether the connection of this request is served (its first request decides)."""
        if handler in self._admitted:
            return True
        deadline = self._unheard.pop(handler, None)
        if deadline is not None:
            deadline.met()
        if len(self._admitted) >= self._limit:
            return False
        self._admitted.add(handler)
        return True


class _OneLine(logging.Filter):
    """aiohttp logs a traceback for each request it cannot parse: one line says as much."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            record.msg = f"{record.getMessage()}: {type(error).__name__} {reason}".rstrip()
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


_log = logging.getLogger(__name__)
#: The aiohttp server's own log (unparsable requests), one line per event.
_http_log = logging.getLogger(__name__ + ".http")
_http_log.addFilter(_OneLine())


def _admitting(newcomers: _Newcomers, limit: int) -> Middleware:
    @web.middleware
    async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if newcomers.admit(request.protocol):
            return await handler(request)
        refusal = _refusal(TooManyConnections(f"connection limit {limit} reached"))
        refusal.force_close()
        return refusal

    return admit


def _refusal(error: StreamError) -> web.Response:
    status, text = http_refusal(error)
    return web.Response(status=status, text=text)


class PollingServer:
    """The aiohttp app serving both ``poll`` and ``long-poll``."""

    def __init__(
        self, hub: Hub, host: str, port: int, settings: Settings, options: Options
    ) -> None:
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self.max_wait_s = _max_wait_s(options)
        self._pollers = _PollerPositions(hub)
        #: Polls answered with samples (or none): how busy pollers kept the server.
        self.polls_answered = 0
        self._newcomers = _Newcomers(settings.max_connections, settings.header_timeout_s)
        self.origins = OriginPolicy.from_settings(settings)
        self._page = render_page(page_config(settings, options))
        self.app = web.Application(
            middlewares=[_admitting(self._newcomers, settings.max_connections)]
        )
        self.app.router.add_get(PATH, self._samples)
        self.app.router.add_route("OPTIONS", PATH, self._preflight)
        self.app.router.add_get(PAGE_PATH, self._serve_page)
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app,
            access_log=None,  # a log line per poll would cost more than the answer
            handler_cancellation=True,  # a client that hangs up frees its held long poll
            shutdown_timeout=_SHUTDOWN_GRACE_S,
            keepalive_timeout=_idle_timeout_s(self.settings),
            logger=_http_log,
        )
        await runner.setup()
        self._watch_connections(runner)
        try:
            sockets = listening_sockets(self.host, self._port)
        except BaseException:
            await runner.cleanup()
            raise
        try:
            for sock in sockets:
                # aiohttp listens again on the socket, with this backlog (its own default: 128).
                await web.SockSite(
                    runner, sock, backlog=BACKLOG, ssl_context=server_ssl(self.settings.tls, HTTP1)
                ).start()
        except BaseException:
            for sock in sockets:
                sock.close()
            await runner.cleanup()
            raise
        self._port = bound_port(sockets)
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _watch_connections(self, runner: web.AppRunner) -> None:
        """Tune every accepted socket, and tell the newcomers' doorman of every connection
        opened and closed.

        aiohttp has no per-connection hook, but every request handler reports to its server's
        ``connection_made`` and ``connection_lost``: wrap those of this runner's server.
        """
        server, newcomers = runner.server, self._newcomers
        assert server is not None
        made, lost = server.connection_made, server.connection_lost

        settings = self.settings

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            # The same socket options as every other transport's accepted connections.
            tune_accepted(transport.get_extra_info("socket"), settings)
            newcomers.opened(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            newcomers.closed(handler)
            lost(handler, exc)

        setattr(server, "connection_made", connection_made)  # noqa: B010 - on this instance
        setattr(server, "connection_lost", connection_lost)  # noqa: B010

    async def _serve_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._page, headers=PAGE_HEADERS)

    async def _preflight(self, request: web.Request) -> web.Response:
        headers = request.headers
        answer = self.origins.preflight(
            headers.get("Origin"),
            headers.get("Host"),
            headers.get("Access-Control-Request-Method"),
            private_network=headers.get("Access-Control-Request-Private-Network") == "true",
        )
        return web.Response(status=answer.status, text=answer.reason, headers=answer.headers)

    async def _samples(self, request: web.Request) -> web.Response:
        origin, own = request.headers.get("Origin"), request.headers.get("Host")
        if not self.origins.allows(origin, own):
            _log.info("refusing %s: %s", PATH, self.origins.refusal(origin))
            return web.Response(
                status=403, text=self.origins.refusal(origin) + "\n", headers={"Vary": "Origin"}
            )
        response = await self._answer(request)
        response.headers.update(self.origins.cors_headers(origin, own))
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        hub, settings = self.hub, self.settings
        try:
            query = parse_poll_query(request.query.items(), self.max_wait_s)
        except ProtocolError as exc:
            return _refusal(exc)
        answer = answer_range(query.token, hub.epoch, hub.oldest_seq, hub.next_seq, settings.batch)
        if not answer and query.wait_s > 0:
            # Tell a saturating publisher (rate 0) a reader waits here, or it never starts.
            self._pollers.asked_after(answer.start - 1)
            await hub.wait_beyond(wanted_seq(query.token, hub.epoch) - 1, query.wait_s)
            answer = answer_range(
                query.token, hub.epoch, hub.oldest_seq, hub.next_seq, settings.batch
            )
        # The poller will hold everything up to the end of this answer: a saturating publisher
        # paces itself to that, and may publish the next answer while this one travels.
        self._pollers.asked_after(answer.stop - 1)
        self.polls_answered += 1
        body = encode_samples(hub.slice(answer.start, len(answer)))
        return web.Response(body=body, content_type="application/json", headers=_ANSWER_HEADERS)


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refusing one over ``limit`` bytes before reading it where possible."""
    length = response.content_length
    if length is not None:
        if length > limit:
            raise FrameTooLarge(f"answer of {length} bytes exceeds {limit}")
        return await response.read()
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise FrameTooLarge(f"answer exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _request_timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    # aiohttp rounds deadlines over ceil_threshold (5 s) up to a whole second of loop time;
    # dead-peer detection is measured, so keep the deadline exact.
    return aiohttp.ClientTimeout(total=seconds, ceil_threshold=math.inf)


class _OneConnection:
    """A trace hook ending the session when it would need a second TCP connection."""

    def __init__(self) -> None:
        self._opened = False
        self.trace = aiohttp.TraceConfig()
        self.trace.on_connection_create_start.append(self._connection_starts)

    async def _connection_starts(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceConnectionCreateStartParams,
    ) -> None:
        if self._opened:
            # aiohttp checks traces for exceptions: raising here opens nothing.
            raise ConnectionLost("the keep-alive connection was closed or reset between polls")
        self._opened = True


class _Poller:
    """One polling session: its HTTP session, its position, and how it paces requests."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        token: ResumeToken | None,
        settings: Settings,
        options: Options,
    ) -> None:
        self._session, self._url, self.token, self._settings = session, url, token, settings
        self._wait = _held_s(settings, options)
        self._timeout = _request_timeout(_request_timeout_s(settings, options))
        self._pause = options.interval_s if isinstance(options, PollOptions) else 0.0

    async def _ask(self, wait: float | None, timeout: aiohttp.ClientTimeout) -> list[Sample]:
        url = self._url + format_poll_query(self.token, wait)
        async with self._session.get(url, timeout=timeout, headers=_IDENTITY) as response:
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                # Asked for identity, and the body limit counts the bytes that arrive: a
                # compressed body would inflate past it (1 MB of gzip is 1 GiB of zeros).
                raise NotThisProtocol(
                    f"a {encoding}-encoded answer from {self._url}, although identity was asked"
                )
            body = await _read_body(response, self._settings.max_message_bytes)
            if response.status != 200:
                reason = body[:200].decode(errors="replace")
                raise ServerRefused(f"HTTP {response.status} {response.reason}: {reason}")
            if response.content_type != "application/json":
                raise NotThisProtocol(
                    f"expected Content-Type application/json from {self._url}, got "
                    f"{response.content_type!r}: {body[:200].decode(errors='replace')}"
                )
        batch = decode_samples(body)
        if batch:
            self.token = ResumeToken(batch[-1].epoch, batch[-1].seq)
        return batch

    async def handshake(self) -> list[Sample]:
        """The first poll (never held): ``ServerUnavailable`` when nobody answers it."""
        limit = self._settings.connect_timeout_s
        try:
            return await self._ask(None, _request_timeout(limit))
        except aiohttp.ClientResponseError as exc:
            raise NotThisProtocol(f"not an HTTP answer from {self._url}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise unreachable(f"no polling server at {self._url}", exc) from exc
        except TimeoutError as exc:
            raise ServerUnavailable(f"no answer from {self._url} within {limit:g} s") from exc

    async def poll(self) -> list[Sample]:
        """The next poll; any failure ends the session."""
        try:
            return await self._ask(self._wait, self._timeout)
        except aiohttp.ClientResponseError as exc:
            raise ProtocolError(f"not an HTTP answer: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionLost(f"poll failed: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise PeerSilent(f"no answer within {self._timeout.total:g} s") from exc

    async def samples(self, first: list[Sample]) -> AsyncIterator[Sample]:
        batch = first
        while True:
            for sample in batch:
                yield sample
            if len(batch) < self._settings.batch and self._pause:
                await asyncio.sleep(self._pause)
            batch = await self.poll()


def _held_s(settings: Settings, options: Options) -> float | None:
    """How long a long poll asks the server to hold it (None: a plain poll).

    Its ``wait_s``, capped at the heartbeat: the held request's answer is the heartbeat.
    """
    if not isinstance(options, LongPollOptions):
        return None
    beat = settings.heartbeat_s  # 0 or None: heartbeats off, the wait alone
    return min(options.wait_s, beat) if beat else options.wait_s


def _request_timeout_s(settings: Settings, options: Options) -> float | None:
    """How long one poll may take before the server counts as dead (None: forever)."""
    dead, held = settings.dead_after_s, _held_s(settings, options)
    if dead is None or held is None:
        return dead
    return held + dead


@asynccontextmanager
async def _connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[AsyncIterator[Sample]]:
    tls = client_ssl(settings.tls, HTTP1)
    connector = aiohttp.TCPConnector(limit=1, ssl=tls if tls is not None else True)
    guard = _OneConnection()
    url = f"{'http' if tls is None else 'https'}://{url_host(host)}:{port}{PATH}"
    session = aiohttp.ClientSession(
        connector=connector,
        trace_configs=[guard.trace],
        # Never inflate: see _Poller._ask, which refuses a compressed answer.
        auto_decompress=False,
    )
    async with session:
        poller = _Poller(session, url, token, settings, options)
        first = await poller.handshake()
        yield poller.samples(first)


def connect_poll(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AbstractAsyncContextManager[AsyncIterator[Sample]]:
    """A polling session asking every ``interval_s`` (at once after a full batch)."""
    if not isinstance(options, PollOptions):
        raise TypeError(f"poll takes PollOptions, got {type(options).__name__}")
    return _connect(host, port, token, settings, options)


def connect_long_poll(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AbstractAsyncContextManager[AsyncIterator[Sample]]:
    """A long-polling session: requests back to back, each held up to ``wait_s``."""
    if not isinstance(options, LongPollOptions):
        raise TypeError(f"long-poll takes LongPollOptions, got {type(options).__name__}")
    return _connect(host, port, token, settings, options)


def _keepalive_params(settings: Settings, options: Options) -> Mapping[str, float | None]:
    """The pace of polls, each poll's timeout, and the server's idle keep-alive timeout."""
    pace = (
        {"long_poll_wait_s": _held_s(settings, options)}
        if isinstance(options, LongPollOptions)
        else {"poll_interval_s": options.interval_s if isinstance(options, PollOptions) else None}
    )
    return pace | {
        "request_timeout_s": _request_timeout_s(settings, options),
        "server_idle_timeout_s": _idle_timeout_s(settings),
    }


POLL = Transport(
    name="poll",
    summary="aiohttp HTTP polling every interval_s, JSON array of up to a batch",
    default_port=8891,
    endpoint="http://{host}:{port}" + PATH,
    features=Features(
        resume=True, heartbeat=False, browser_native=True, bidirectional=False, push=False
    ),
    serve=PollingServer,
    connect=connect_poll,
    options=PollOptions(),
    dependencies=("aiohttp",),
    modules=("transports.polling", "transports.poll_query"),
    baseline="aiohttp-poll",
    bad_input_family="http-poll",
    resume_token="query ?epoch=E&since=SEQ",
    write_path=("one response per request (aiohttp), encoded for that request: nothing is pushed"),
    keepalive="none: every poll is a fresh request (request timeout)",
    keepalive_params=_keepalive_params,
)

#: The same server and wire as ``poll``; only the client's pace differs. Its own port, so it
#: can run beside ``poll``.
LONG_POLL = dataclasses.replace(
    POLL,
    name="long-poll",
    summary="aiohttp HTTP long polling: held until a sample exists or the wait ends",
    default_port=8897,
    endpoint="http://{host}:{port}" + PATH + "?wait=S",
    connect=connect_long_poll,
    options=LongPollOptions(),
    keepalive="held request answered within min(wait, heartbeat); request timeout",
    write_path=(
        "one response per held request (aiohttp), each woken by the publish and encoded for "
        "its own request"
    ),
)
