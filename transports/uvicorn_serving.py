"""An ASGI app served by uvicorn the way every server here is, whatever it serves.

uvicorn is made to own a process; :class:`UvicornServing` embeds it in a transport server:

- on :func:`~transports.sockets.listening_sockets` (so port 0 works and the bound port can be
  read back), with the shared :data:`~transports.sockets.BACKLOG`;
- the h11 protocol always (the same parser and limits whether or not httptools is
  installed), each accepted socket tuned (:func:`~transports.sockets.tune_accepted`), and a
  request head that must arrive within ``settings.header_timeout_s``
  (:class:`~transports.sockets.HeadDeadline`: uvicorn's keep-alive timer stops at the first
  byte of a request, so a slowloris would be held forever); a head over
  ``settings.max_message_bytes`` gets uvicorn's 400;
- no limit on connections from uvicorn (it would count idle and half-sent sockets too): the
  hub's limit counts streams, the head deadline bounds how long the others stay;
- signals are left to the program (uvicorn would take SIGINT/SIGTERM);
- :meth:`UvicornServing.abort` drops one client's connection at once (ASGI gives an app no
  handle on its transport), for a stream the hub cut or whose send stalled;
- :meth:`UvicornServing.stop` lets streams end within a grace period, then aborts what is
  left (a peer that stopped reading would hold a graceful close forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from transports.settings import Settings
from transports.sockets import (
    BACKLOG,
    HeadDeadline,
    bound_port,
    listening_sockets,
    tune_accepted,
)
from transports.tls import uvicorn_tls

__all__ = ["STOP_GRACE_S", "UvicornServing"]

#: How long a stopping server waits for its streams to end before aborting what is left.
STOP_GRACE_S = 1.0
_log = logging.getLogger(__name__)


class _Embedded(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the program embedding it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _protocol(settings: Settings) -> type[H11Protocol]:
    """uvicorn's h11 protocol, tuning each accepted socket and holding each request head to
    the header timeout."""

    class TunedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            tune_accepted(transport.get_extra_info("socket"), settings)
            self.head_deadline = HeadDeadline(transport, settings.header_timeout_s)
            self.head_deadline.arm()
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            self.head_deadline.met()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request head arrived: uvicorn began a cycle
                self.head_deadline.met()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Keep-alive: the next request's head gets the same time (unless one is in).
            if not self.transport.is_closing() and self.cycle.response_complete:
                self.head_deadline.arm()

    return TunedH11Protocol


class UvicornServing:
    """``app`` served by an embedded uvicorn (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self._app, self._settings = app, settings
        self._server: _Embedded | None = None
        self._serving: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on every address of ``host``; the port bound, once uvicorn serves."""
        sockets = listening_sockets(host, port)
        bound = bound_port(sockets)
        ready = asyncio.Event()

        async def started() -> None:
            ready.set()

        certfile, keyfile = uvicorn_tls(self._settings.tls)
        config = uvicorn.Config(
            self._app,
            http=_protocol(self._settings),
            ws="none",
            lifespan="off",
            backlog=BACKLOG,  # uvicorn listens again on our sockets, with this
            access_log=False,
            log_config=None,
            proxy_headers=False,
            # Bounds a request's head (h11 buffers at most this much of an incomplete event).
            h11_max_incomplete_event_size=self._settings.max_message_bytes,
            timeout_graceful_shutdown=1,
            # uvicorn calls this on its first tick after binding: the readiness signal.
            callback_notify=started,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        server = _Embedded(config)
        serving = asyncio.create_task(server.serve(sockets=list[socket.socket](sockets)))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if serving.done():
            for sock in sockets:
                sock.close()
            serving.result()
            raise RuntimeError("uvicorn stopped while starting")
        self._server, self._serving = server, serving
        return bound

    @property
    def open_connections(self) -> int:
        """Connections uvicorn holds open now (streams, idle keep-alives, half-read requests)."""
        return 0 if self._server is None else len(self._server.server_state.connections)

    def abort(self, client: tuple[str, int] | None, reason: str) -> None:
        """Drop the connection from ``client`` at once, unsent bytes and all."""
        if self._server is None or client is None:
            return
        _log.info("dropping the connection from %s:%d: %s", *client, reason)
        for connection in list(self._server.server_state.connections):
            if getattr(connection, "client", None) == tuple(client):
                connection.transport.abort()

    async def stop(self) -> None:
        server, serving = self._server, self._serving
        if server is None or serving is None:
            return
        server.should_exit = True
        done, _ = await asyncio.wait({serving}, timeout=STOP_GRACE_S)
        if not done:
            for connection in list(server.server_state.connections):
                connection.transport.abort()
            await serving
        self._server = self._serving = None
