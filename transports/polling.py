"""HTTP polling and long polling: one aiohttp server, two aiohttp clients.

Server: an aiohttp app answering ``GET /samples?epoch=E&since=SEQ[&wait=SECONDS]`` with a JSON
array of at most ``settings.batch`` wire-form samples, oldest first (which ones:
:mod:`transports.poll_query`). With ``wait`` it holds the request until a sample the client
lacks exists or the wait (capped at ``settings.long_poll_wait_s``) ends, then answers (``[]``
if nothing came). A malformed query gets 400 with a plain-text reason, other paths 404, a
request beyond ``settings.max_connections`` open connections 503 (and the connection closed).
Idle keep-alive connections are closed after ``settings.dead_after_s`` (aiohttp's own default
when that is None), so dead clients do not pile up; request lines and headers are bounded by
aiohttp's limits (8190 bytes). The server keeps no state per client: a poller that stops
costs nothing but its idle connection, until the keep-alive timeout.

Clients: one ``aiohttp.ClientSession`` per "connection", which here is a polling session on
one keep-alive TCP connection. It ends when a request fails or when that TCP connection is
gone (reset, or closed by the server) before the next poll: aiohttp would quietly open
another, but then a reset would go unseen and uncounted, unlike on every push transport, so
the session refuses a second TCP connection and the shared client reconnects (with backoff and
resume). The first request of a session is a plain poll bounded by
``settings.connect_timeout_s``: it is the handshake (a server that does not answer it is
``ServerUnavailable``). After each answer the client moves its own position ``(epoch, since)``
to the newest sample received.

- ``poll`` pauses ``settings.poll_interval_s`` between polls, except after a full batch,
  when more is likely waiting and it asks again at once;
- ``long-poll`` asks back to back with ``wait=settings.long_poll_wait_s``.

Dead-server detection is aiohttp's ``ClientTimeout(total=...)`` per request (the only timer):
``dead_after_s`` for a poll, ``long_poll_wait_s + dead_after_s`` for a long poll; a request
that takes longer raises ``PeerSilent``.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from model.errors import (
    ConnectionLost,
    FrameTooLarge,
    PeerSilent,
    ProtocolError,
    ServerUnavailable,
)
from model.sample import Sample, decode_samples, encode_samples
from transports.contract import Features, Transport
from transports.hub import Hub
from transports.poll_query import answer_range, format_poll_query, parse_poll_query, wanted_seq
from transports.resume import ResumeToken
from transports.settings import Settings

__all__ = ["LONG_POLL", "POLL", "PollingServer", "connect_long_poll", "connect_poll"]

PATH = "/samples"
#: How long ``stop()`` lets requests in flight finish before cutting them (held long polls).
_SHUTDOWN_GRACE_S = 0.25
_ANSWER_HEADERS = {"Cache-Control": "no-store"}


def _backlog(settings: Settings) -> int:
    # Pollers reconnect in bursts (a restart, a reset); aiohttp's 128 would drop their SYNs.
    return min(settings.max_connections, 1024)


class PollingServer:
    """The aiohttp app serving both ``poll`` and ``long-poll``."""

    def __init__(self, hub: Hub, host: str, port: int, settings: Settings) -> None:
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self.app = web.Application()
        self.app.router.add_get(PATH, self._samples)
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        keepalive: dict[str, Any] = {}
        if self.settings.dead_after_s is not None:
            keepalive["keepalive_timeout"] = self.settings.dead_after_s
        runner = web.AppRunner(
            self.app,
            access_log=None,  # a log line per poll would cost more than the answer
            handler_cancellation=True,  # a client that hangs up frees its held long poll
            shutdown_timeout=_SHUTDOWN_GRACE_S,
            **keepalive,
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
            await web.SockSite(runner, sock, backlog=_backlog(self.settings)).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _too_many_connections(self) -> bool:
        server = self._runner.server if self._runner is not None else None
        return server is not None and len(server.connections) > self.settings.max_connections

    async def _samples(self, request: web.Request) -> web.Response:
        if self._too_many_connections():
            refusal = web.Response(
                status=503, text=f"connection limit {self.settings.max_connections} reached"
            )
            refusal.force_close()
            return refusal
        hub, settings = self.hub, self.settings
        try:
            query = parse_poll_query(request.query.items(), settings.long_poll_wait_s)
        except ProtocolError as exc:
            raise web.HTTPBadRequest(text=f"bad query: {exc}") from exc
        answer = answer_range(query.token, hub.epoch, hub.oldest_seq, hub.next_seq, settings.batch)
        if not answer and query.wait_s > 0:
            # Tell a saturating publisher (rate 0) a reader waits here, or it never starts.
            hub.note_poll_position(answer.start - 1)
            await hub.wait_beyond(wanted_seq(query.token, hub.epoch) - 1, query.wait_s)
            answer = answer_range(
                query.token, hub.epoch, hub.oldest_seq, hub.next_seq, settings.batch
            )
        # The poller will hold everything up to the end of this answer: a saturating publisher
        # paces itself to that, and may publish the next answer while this one travels.
        hub.note_poll_position(answer.stop - 1)
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
        long_poll: bool,
    ) -> None:
        self._session, self._url, self.token, self._settings = session, url, token, settings
        dead = settings.dead_after_s
        if long_poll:
            self._wait: float | None = settings.long_poll_wait_s
            total = None if dead is None else settings.long_poll_wait_s + dead
        else:
            self._wait, total = None, dead
        self._timeout = _request_timeout(total)
        self._pause = 0.0 if long_poll else settings.poll_interval_s

    async def _ask(self, wait: float | None, timeout: aiohttp.ClientTimeout) -> list[Sample]:
        url = self._url + format_poll_query(self.token, wait)
        async with self._session.get(url, timeout=timeout) as response:
            body = await _read_body(response, self._settings.max_message_bytes)
            if response.status != 200:
                reason = body[:200].decode(errors="replace")
                raise ProtocolError(f"HTTP {response.status} {response.reason}: {reason}")
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
            raise ProtocolError(f"not an HTTP answer from {self._url}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ServerUnavailable(f"no polling server at {self._url}: {exc}") from exc
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


@asynccontextmanager
async def _connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, *, long_poll: bool
) -> AsyncIterator[AsyncIterator[Sample]]:
    connector = aiohttp.TCPConnector(limit=1)
    guard = _OneConnection()
    async with aiohttp.ClientSession(connector=connector, trace_configs=[guard.trace]) as session:
        poller = _Poller(session, f"http://{host}:{port}{PATH}", token, settings, long_poll)
        first = await poller.handshake()
        yield poller.samples(first)


def connect_poll(
    host: str, port: int, token: ResumeToken | None, settings: Settings
) -> AbstractAsyncContextManager[AsyncIterator[Sample]]:
    """A polling session asking every ``poll_interval_s`` (at once after a full batch)."""
    return _connect(host, port, token, settings, long_poll=False)


def connect_long_poll(
    host: str, port: int, token: ResumeToken | None, settings: Settings
) -> AbstractAsyncContextManager[AsyncIterator[Sample]]:
    """A long-polling session: requests back to back, each held up to ``long_poll_wait_s``."""
    return _connect(host, port, token, settings, long_poll=True)


_COMMON: dict[str, Any] = dict(
    default_port=8891,
    features=Features(
        resume=True, heartbeat=False, browser_native=True, bidirectional=False, push=False
    ),
    serve=PollingServer,
    dependencies=("aiohttp",),
    modules=("transports.polling", "transports.poll_query"),
    resume_token="query ?epoch=E&since=SEQ",
)

POLL = Transport(
    name="poll",
    summary="aiohttp HTTP polling every poll_interval_s, JSON array of up to a batch",
    endpoint="http://{host}:{port}" + PATH,
    connect=connect_poll,
    heartbeat="none: every poll is a fresh request (request timeout)",
    **_COMMON,
)

LONG_POLL = Transport(
    name="long-poll",
    summary="aiohttp HTTP long polling: held until a sample exists or the wait ends",
    endpoint="http://{host}:{port}" + PATH + "?wait=S",
    connect=connect_long_poll,
    heartbeat="held request ends after wait; request timeout",
    **_COMMON,
)
