"""TLS session resumption for clients whose libraries never offer a session.

Python's ``ssl`` resumes a session only when a caller hands one over
(``SSLContext.wrap_bio(..., session=S)``, ``wrap_socket(..., session=S)``), and none of the
client libraries here does: asyncio's ``create_connection(ssl=ctx)`` (and uvloop's copy),
anyio's ``TLSStream.wrap`` under httpx, aiohttp and websockets call ``ctx.wrap_bio(incoming,
outgoing, server_side=..., server_hostname=...)``; tornado calls ``ctx.wrap_socket(sock,
server_hostname=..., do_handshake_on_connect=False)``. So every reconnect pays a full
handshake, certificate and all, unless the context itself offers a session.

:class:`ResumingContext` is such a context: an ``ssl.SSLContext`` whose ``wrap_bio`` and
``wrap_socket`` offer the newest session it has seen for the same ``server_hostname``, so
every one of those libraries resumes without being touched. Its :class:`SessionBook` keeps,
per host name, the newest connection whose handshake finished and reads that connection's
``.session`` only when the next connection is made: a TLS 1.3 server sends its tickets
after the handshake, so a session read at the handshake would hold none. Only a session
with a ticket is offered (RFC 5077 for TLS 1.2, the PSK of RFC 8446 for TLS 1.3; every
server here issues tickets, Python's ``ssl`` servers two per handshake by default); when the
newest connection ended before its ticket arrived, the session kept from an older one is
offered instead. A session survives a connection that ended by a reset: OpenSSL marks a
session unusable only after a fatal alert, and a reset sends none (the tests check it).

The book also counts (:class:`SessionCounts`): connections whose handshake finished
(``handshakes``), those that resumed (``resumed``: ``session_reused``), and those that were
offered a session (``offered``; a server may refuse one, e.g. after a restart with new ticket
keys, and then the handshake is a full one). A handshake is counted the next time the book
is consulted (a new connection, a ``counts()`` call) or, for a socket, when it closes.

grpcio and aioquic have their own mechanisms (a channel option holding
``grpc.experimental.ssl_session_cache_lru``; ``QuicConfiguration.session_ticket``); see
their transport modules.
"""

from __future__ import annotations

import collections
import socket
import ssl
import threading
from dataclasses import dataclass

__all__ = ["ResumingContext", "SessionBook", "SessionCounts", "resuming_client_context"]

#: Connections whose handshake may still be running that the book watches; older ones that
#: never finished (a connect that failed mid-handshake) are forgotten.
_PENDING = 64

_Conn = ssl.SSLObject | ssl.SSLSocket


@dataclass(frozen=True, slots=True)
class SessionCounts:
    """What a :class:`ResumingContext` saw since it was made."""

    #: Connections whose handshake finished.
    handshakes: int = 0
    #: Of those, the ones that resumed a session (no certificate exchanged).
    resumed: int = 0
    #: Connections that were offered a session (the server may have refused it).
    offered: int = 0


class SessionBook:
    """Per server host name, the newest finished connection and the session to offer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: collections.deque[_Conn] = collections.deque(maxlen=_PENDING)
        #: host -> the newest connection whose handshake finished (its session read late).
        self._newest: dict[str | None, _Conn] = {}
        #: host -> the newest session seen with a ticket.
        self._kept: dict[str | None, ssl.SSLSession] = {}
        self._handshakes = self._resumed = self._offered = 0

    def offer(self, host: str | None) -> ssl.SSLSession | None:
        """The session a new connection to ``host`` should offer (None: none yet)."""
        with self._lock:
            self._settle()
            newest = self._newest.get(host)
            if newest is not None:
                self._keep(host, newest.session)
            session = self._kept.get(host)
            if session is not None:
                self._offered += 1
            return session

    def track(self, conn: _Conn) -> None:
        """Watch a new connection until its handshake finishes."""
        with self._lock:
            self._pending.append(conn)

    def closing(self, conn: ssl.SSLSocket) -> None:
        """A socket is about to close: settle it now (a closed socket's session is gone)."""
        with self._lock:
            self._settle()
            if self._newest.get(conn.server_hostname) is conn:
                self._keep(conn.server_hostname, conn.session)
                del self._newest[conn.server_hostname]

    def counts(self) -> SessionCounts:
        with self._lock:
            self._settle()
            return SessionCounts(self._handshakes, self._resumed, self._offered)

    def _keep(self, host: str | None, session: ssl.SSLSession | None) -> None:
        if session is not None and session.has_ticket:
            self._kept[host] = session

    def _settle(self) -> None:
        """Count the watched connections whose handshake finished, and forget them."""
        waiting: list[_Conn] = []
        for conn in self._pending:
            if conn.version() is None:  # handshake not finished (or the socket closed)
                waiting.append(conn)
                continue
            self._handshakes += 1
            self._resumed += bool(conn.session_reused)
            self._newest[conn.server_hostname] = conn
        self._pending.clear()
        self._pending.extend(waiting)


class _TrackedSocket(ssl.SSLSocket):
    """An ``SSLSocket`` that lets its context's book settle it before it closes."""

    def close(self) -> None:
        context = self.context
        if isinstance(context, ResumingContext):
            context.book.closing(self)
        super().close()


class ResumingContext(ssl.SSLContext):
    """A client context that offers the newest session it saw for the same host name."""

    sslsocket_class = _TrackedSocket

    def __init__(self, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> None:
        super().__init__()
        self.book = SessionBook()

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None and not server_side:
            session = self.book.offer(_host(server_hostname))
        conn = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if not server_side:
            self.book.track(conn)
        return conn

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        if session is None and not server_side:
            session = self.book.offer(_host(server_hostname))
        conn = super().wrap_socket(
            sock,
            server_side,
            do_handshake_on_connect,
            suppress_ragged_eofs,
            server_hostname,
            session,
        )
        if not server_side:
            self.book.track(conn)
        return conn

    def counts(self) -> SessionCounts:
        """Handshakes, resumptions and offers so far."""
        return self.book.counts()


def _host(name: str | bytes | None) -> str | None:
    return name.decode("idna") if isinstance(name, bytes) else name


def resuming_client_context() -> ResumingContext:
    """A :class:`ResumingContext` set up as ``ssl.create_default_context()`` sets up a client
    context: certificate and host name checked, the same verify flags and options, the
    system's trust store loaded."""
    default = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = default.verify_mode
    ctx.check_hostname = default.check_hostname
    ctx.verify_flags = default.verify_flags
    ctx.options = default.options
    ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx
