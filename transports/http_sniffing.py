"""An httpx client that can tell "answered something else than HTTP" from "answered nothing".

httpx reports a peer that sent a line of its own and closed (``listen`` pointed at the tcp
port, whose server sends an ``{"error":...}`` line) the same way as a server that closed
without a word: "Server disconnected without sending a response". The first bytes the
connection read tell them apart, so a client can give up at once on the former (retrying
cannot turn a tcp server into an HTTP one) and retry the latter. :func:`sniffing_transport`
builds an httpx transport whose network backend keeps them; :func:`not_http` reads the
verdict after a :class:`httpx.RemoteProtocolError`.

One TLS context serves every client (:func:`tls_context`): httpx builds one per client
otherwise, even for plain http, at tens of ms of CPU each, which a storm of reconnecting
clients would pay again and again.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import h11
import httpcore
import httpx

from model.errors import ConnectionLost, NotThisProtocol, ServerUnavailable
from transports.failures import unreachable

__all__ = ["Sniffer", "not_http", "request_errors", "sniffing_transport", "tls_context"]

#: Bytes of a connection's beginning kept for the verdict and the error message.
KEPT = 200


@cache
def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _FirstBytes(httpcore.AsyncNetworkStream):
    """A connection's stream that keeps the first bytes it read."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self.first = b""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._inner.read(max_bytes, timeout)
        if len(self.first) < KEPT:
            self.first += data[: KEPT - len(self.first)]
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.start_tls(ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class Sniffer(httpcore.AsyncNetworkBackend):
    """The network backend httpx uses, keeping the first bytes of the (one) connection."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner
        self.stream: _FirstBytes | None = None

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        self.stream = _FirstBytes(await self._inner.connect_tcp(*args, **kwargs))
        return self.stream

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(*args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    @property
    def first_bytes(self) -> bytes:
        return b"" if self.stream is None else self.stream.first


def sniffing_transport(
    verify: ssl.SSLContext | None = None,
) -> tuple[httpx.AsyncHTTPTransport, Sniffer | None]:
    """An httpx transport for one connection, and its sniffer (None on an httpx that keeps
    its pool elsewhere: no sniffing there, only less precise errors). ``verify``: the TLS
    context for https (None: one shared default context)."""
    transport = httpx.AsyncHTTPTransport(verify=verify or tls_context())
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.AsyncNetworkBackend):
        return transport, None
    sniffer = Sniffer(backend)
    pool._network_backend = sniffer  # type: ignore[union-attr]
    return transport, sniffer


def not_http(exc: httpx.RemoteProtocolError, sniffer: Sniffer | None) -> bytes | None:
    """What the peer sent instead of an HTTP response, or None if it may have been HTTP
    (it closed before a whole answer)."""
    first = b"" if sniffer is None else sniffer.first_bytes
    if first and not first.startswith(b"HTTP/"):
        return first
    cause: BaseException | None = exc
    while cause is not None:
        # h11 rejecting a status line; "peer unexpectedly closed" is a truncation, not that.
        if isinstance(cause, h11.RemoteProtocolError) and "closed" not in str(cause):
            return first or str(cause).encode()
        cause = cause.__cause__ or cause.__context__
    return None


@contextmanager
def request_errors(url: str, what: str, sniffer: Sniffer | None, limit_s: float) -> Iterator[None]:
    """What a streaming request that got no response means, as the client's errors: nobody
    listening, no answer within ``limit_s`` (the caller's ``asyncio.timeout``), another
    protocol answering (what ``sniffer`` saw), a close without an answer, a broken transport.
    ``what`` names the server in the first case ("no SSE server at URL")."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise unreachable(f"no {what} server at {url}", exc) from exc
    except TimeoutError as exc:
        raise ServerUnavailable(f"no answer from {url} within {limit_s:g} s") from exc
    except httpx.RemoteProtocolError as exc:
        answer = not_http(exc, sniffer)
        if answer is not None:
            raise NotThisProtocol(f"not an HTTP answer from {url}: {answer!r}") from exc
        raise ServerUnavailable(f"{url} closed the connection without an answer") from exc
    except httpx.TransportError as exc:
        raise ConnectionLost(f"{type(exc).__name__} before the response: {exc}") from exc
