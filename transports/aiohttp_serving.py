"""An aiohttp app served the way every server here is, whatever it serves.

aiohttp leaves a few things to the program that runs it; :class:`AiohttpServing` does them
once for any app:

- it listens on :func:`~transports.sockets.listening_sockets` and hands aiohttp the shared
  :data:`~transports.sockets.BACKLOG` (aiohttp listens again, with 128 otherwise);
- every accepted socket is tuned (:func:`~transports.sockets.tune_accepted`);
- a connection's first request head must arrive within ``settings.header_timeout_s``
  (:class:`~transports.sockets.HeadDeadline`): aiohttp's own keep-alive timer starts only
  after a first answer, so an idle socket, or one dripping its request (slowloris), would be
  held forever;
- a request aiohttp cannot parse (a head past its 8190-byte limits, garbage) is answered 400
  by aiohttp and logged in one line, not with aiohttp's traceback.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

from transports.settings import Settings
from transports.sockets import (
    BACKLOG,
    HeadDeadline,
    bound_port,
    listening_sockets,
    tune_accepted,
)
from transports.tls import HTTP1, server_ssl

__all__ = ["AiohttpServing", "OneLineErrors"]


class OneLineErrors(logging.Filter):
    """Turns a log record's traceback into one line: its exception's type and first line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text = str(error).strip()
            reason = text.splitlines()[0][:200] if text else ""
            record.msg = f"{record.getMessage()}: {type(error).__name__} {reason}".rstrip()
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


class _FirstHeads:
    """The head deadline of every connection that has not sent a first request yet."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._waiting: dict[RequestHandler, HeadDeadline] = {}

    def opened(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        deadline = HeadDeadline(transport, self._seconds)
        deadline.arm()
        self._waiting[handler] = deadline

    def arrived(self, handler: RequestHandler) -> None:
        deadline = self._waiting.pop(handler, None)
        if deadline is not None:
            deadline.met()

    closed = arrived


class AiohttpServing:
    """``app`` served on the shared sockets (see the module docstring).

    ``logger`` gets aiohttp's server log; give it a :class:`OneLineErrors` filter, once.
    """

    def __init__(
        self,
        app: web.Application,
        settings: Settings,
        *,
        logger: logging.Logger,
        shutdown_timeout_s: float,
        keepalive_timeout_s: float = 75.0,
    ) -> None:
        self._settings = settings
        self._heads = _FirstHeads(settings.header_timeout_s)
        app.middlewares.append(self._head_arrived)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=shutdown_timeout_s,
            keepalive_timeout=keepalive_timeout_s,
            logger=logger,
        )
        self._started = False

    @web.middleware
    async def _head_arrived(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._heads.arrived(request.protocol)
        return await handler(request)

    async def start(self, host: str, port: int) -> int:
        """Listen on every address of ``host``; the port bound."""
        runner = self._runner
        await runner.setup()
        self._watch_connections()
        try:
            sockets = listening_sockets(host, port)
        except BaseException:
            await runner.cleanup()
            raise
        try:
            for sock in sockets:
                await web.SockSite(
                    runner, sock, backlog=BACKLOG, ssl_context=server_ssl(self._settings.tls, HTTP1)
                ).start()
        except BaseException:
            for sock in sockets:
                sock.close()
            await runner.cleanup()
            raise
        self._started = True
        return bound_port(sockets)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._runner.cleanup()

    def _watch_connections(self) -> None:
        """aiohttp has no per-connection hook, but every request handler reports to its
        server's ``connection_made`` and ``connection_lost``: wrap those of this runner's."""
        server, heads, settings = self._runner.server, self._heads, self._settings
        assert server is not None
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            tune_accepted(transport.get_extra_info("socket"), settings)
            heads.opened(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            heads.closed(handler)
            lost(handler, exc)

        setattr(server, "connection_made", connection_made)  # noqa: B010 - on this instance
        setattr(server, "connection_lost", connection_lost)  # noqa: B010
