"""Hostile peers as raw bytes, per protocol family, and how to read what the server answered.

A transport declares its family on its registry record (``Transport.bad_input_family``):
``websocket``, ``http-stream``, ``http-poll`` or ``tcp``. :data:`CASES` is the one table of
bad inputs keyed by family (a test checks every family has its cases); every family also gets
the common cases. Payload builders, :func:`describe_answer` and :func:`is_refusal` are pure, so
they are tested without sockets; :func:`answer`, :func:`idle_burst`, :func:`open_idle`,
:func:`slowloris`, :func:`non_readers`, :func:`subscribers` and :func:`server_alive` are the
peers themselves, on real sockets. The ``quic`` family (a transport over UDP) gets real QUIC
clients instead (:mod:`experiments.faults.quic_peers`): each of its cases has a ``peer`` of
its own, and :func:`answer` and :func:`server_alive` speak UDP to a UDP target.
:func:`request_head` is each family's well-formed opening (the upgrade, ``GET /events``, a
poll, the hello), which the slow and the stuck peers send.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from experiments.faults.http2_peers import (
    PREFACE,
    describe_http2,
    grpc_message,
    looks_like_http2,
    request,
    resume_token,
    subscribe,
    unfinished_head,
)
from experiments.faults.quic_peers import (
    connect_request,
    datagrams,
    garbage_datagrams,
    h3_exchange,
    handshake_ok,
)
from transports.contract import BadInputFamily, Transport

__all__ = [
    "CASES",
    "OVERSIZED_BYTES",
    "BadCase",
    "Target",
    "answer",
    "cases_for",
    "describe_answer",
    "endless_head",
    "idle_burst",
    "is_refusal",
    "non_readers",
    "open_idle",
    "request_head",
    "server_alive",
    "slowloris",
    "subscribers",
    "upgrade",
]

#: Twice the default 1 MiB message limit.
OVERSIZED_BYTES = 2 * 1024 * 1024
_WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _direct(host: str, port: int) -> Streams:
    return await asyncio.open_connection(host, port)


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    #: The endpoint's path (``/websocket/``, ``/events``, ``/samples``; ``/`` for raw TCP).
    path: str
    #: How a peer connects: directly, or from a client's namespace on an emulated path.
    connect: Callable[[str, int], Awaitable[Streams]] = _direct
    #: "udp": a QUIC server; :func:`answer` sends datagrams, :func:`server_alive` handshakes.
    transport_protocol: Literal["tcp", "udp"] = "tcp"

    async def open(self) -> Streams:
        return await self.connect(self.host, self.port)


@dataclass(frozen=True, slots=True)
class BadCase:
    name: str
    build: Callable[[Target], bytes]
    #: A peer of its own, for a case that is not bytes on a fresh connection (QUIC): it
    #: gets the target and the answer timeout and describes what came back.
    peer: Callable[[Target, float], Awaitable[str]] | None = None


def target_of(
    transport: Transport,
    host: str,
    port: int,
    connect: Callable[[str, int], Awaitable[Streams]] | None = None,
) -> Target:
    path = urlsplit(transport.url(host, port)).path or "/"
    return Target(host, port, path, connect or _direct, transport.features.transport_protocol)


def _get(t: Target, path_and_query: str, *headers: str) -> bytes:
    lines = [f"GET {path_and_query} HTTP/1.1", f"Host: {t.host}:{t.port}", *headers, "", ""]
    return "\r\n".join(lines).encode()


def upgrade(t: Target, query: str = "") -> bytes:
    return _get(
        t,
        t.path + query,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {_WS_KEY}",
        "Sec-WebSocket-Version: 13",
    )


def ws_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame (mask key 0, so the payload goes as is); ``rsv``: RSV bits."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


def _garbage(t: Target) -> bytes:
    # Random bytes, then line and header ends so a line or request parser gets to judge them.
    return random.Random(7).randbytes(1024) + b"\r\n\r\n\n"


def _oversized_line(t: Target) -> bytes:
    return b"x" * OVERSIZED_BYTES + b"\n"


def _oversized_header(t: Target) -> bytes:
    return _get(t, t.path, "X-Big: " + "x" * OVERSIZED_BYTES)


#: Every family: garbage bytes.
COMMON: tuple[BadCase, ...] = (BadCase("garbage bytes", _garbage),)


# -- QUIC (HTTP/3 WebTransport over UDP): peers of their own, see quic_peers ----------------


async def _quic_garbage(t: Target, timeout_s: float) -> str:
    return await datagrams(t.host, t.port, garbage_datagrams(), timeout_s)


def _h3(
    name: str,
    target: str,
    protocol: bytes | None,
    body_bytes: int = 0,
    *,
    method: bytes = b"CONNECT",
) -> tuple[str, Callable[[Target], bytes], Callable[[Target, float], Awaitable[str]]]:
    """A case sending one HTTP/3 request after a real handshake: ``target`` is a path (or a
    query for the endpoint's path), ``protocol`` the ``:protocol`` (None: none)."""

    def headers(t: Target) -> list[tuple[bytes, bytes]]:
        path = t.path + target if target[:1] in ("", "?") else target
        request = connect_request(t.host, t.port, path, protocol)
        return [(b":method", method), *request[1:]]

    def build(t: Target) -> bytes:  # what the request says, for the record
        return b"\n".join(k + b": " + v for k, v in headers(t)) + b"\n"

    async def peer(t: Target, timeout_s: float) -> str:
        # The upload takes a while through a QUIC stack in Python: allow it more time.
        wait = timeout_s * (10 if body_bytes else 1)
        return await h3_exchange(t.host, t.port, headers(t), wait, b"x" * body_bytes)

    return name, build, peer


def _close_frame(code: int) -> Callable[[Target], bytes]:
    return lambda t: upgrade(t) + ws_frame(0x8, struct.pack("!H", code))


CASES: dict[BadInputFamily, tuple[BadCase, ...]] = {
    "websocket": (
        BadCase("upgrade, then a garbage frame", lambda t: upgrade(t) + b"\x8f\x80\0\0\0\0"),
        BadCase(
            "upgrade, then a 2 MiB text frame",
            lambda t: upgrade(t) + ws_frame(0x1, b"x" * OVERSIZED_BYTES),
        ),
        BadCase("upgrade with a bad resume query", lambda t: upgrade(t, "?epoch=zz&since=-1")),
        BadCase("plain GET, no upgrade", lambda t: _get(t, t.path)),
        BadCase("2 MiB header", _oversized_header),
        BadCase("70 KiB header", lambda t: _get(t, t.path, "X-Big: " + "x" * 70_000)),
        # RFC 6455 violations: each calls for a close code, not a silent drop or an echo.
        BadCase("invalid UTF-8 text", lambda t: upgrade(t) + ws_frame(0x1, b"\xff\xfe")),
        BadCase("RSV bits set", lambda t: upgrade(t) + ws_frame(0x1, b"{}", rsv=0x70)),
        BadCase("reserved opcode", lambda t: upgrade(t) + ws_frame(0x3, b"")),
        BadCase("close code 999", _close_frame(999)),
        BadCase("close code 1005", _close_frame(1005)),
        BadCase("close code 5000", _close_frame(5000)),
    ),
    "http-stream": (
        BadCase("bad Last-Event-ID", lambda t: _get(t, t.path, "Last-Event-ID: nope:-3")),
        # The token of http-stream (sse ignores the query, as http-stream the header).
        BadCase("bad resume query", lambda t: _get(t, t.path + "?epoch=zz&since=-1")),
        BadCase("bad request line", lambda t: b"FETCH \x00\x01 HTTP/9.9\r\n\r\n"),
        BadCase("2 MiB header", _oversized_header),
        BadCase("unknown path", lambda t: _get(t, "/nowhere")),
    ),
    "http-poll": (
        BadCase("bad query", lambda t: _get(t, t.path + "?epoch=zz&since=abc")),
        BadCase("bad wait", lambda t: _get(t, t.path + "?wait=-1")),
        BadCase("bad request line", lambda t: b"FETCH \x00\x01 HTTP/9.9\r\n\r\n"),
        BadCase("2 MiB query", lambda t: _get(t, t.path + "?since=" + "9" * OVERSIZED_BYTES)),
        BadCase("unknown path", lambda t: _get(t, "/nowhere")),
    ),
    "tcp": (
        BadCase("hello not JSON", lambda t: b"hello?\n"),
        BadCase("hello with wrong types", lambda t: b'{"epoch":1,"since":"x"}\n'),
        BadCase("2 MiB line", _oversized_line),
        BadCase("bytes after the hello", lambda t: b"{}\nmore\n"),
    ),
    "grpc": (
        BadCase("HTTP/2 preface, then garbage frames", lambda t: PREFACE + _garbage(t)),
        BadCase(
            "a call to an unknown method",
            lambda t: subscribe(t.host, t.port, "/transportbench.Stream/Nope"),
        ),
        BadCase(
            "a bad resume token",
            lambda t: subscribe(t.host, t.port, t.path, resume_token("zz", -5)),
        ),
        BadCase(
            "a request that is not protobuf",
            lambda t: subscribe(t.host, t.port, t.path, b"\xff" * 20),
        ),
        BadCase(
            "a message prefix claiming 2 MiB",
            lambda t: request(t.host, t.port, t.path, grpc_message(b"x", OVERSIZED_BYTES)),
        ),
        BadCase(
            "2 MiB header",
            lambda t: request(
                t.host, t.port, t.path, grpc_message(b""), ("x-big", "x" * OVERSIZED_BYTES)
            ),
        ),
        BadCase("plain HTTP/1.1 request", lambda t: _get(t, t.path)),
    ),
    "quic": (
        BadCase("random UDP datagrams", _garbage, peer=lambda t, s: _quic_garbage(t, s)),
        BadCase(*_h3("CONNECT to another path", "/nowhere", b"webtransport")),
        BadCase(*_h3("CONNECT with a bad resume token", "?epoch=zz&since=-1", b"webtransport")),
        BadCase(*_h3("CONNECT without :protocol", "", None)),
        BadCase(*_h3("CONNECT with :protocol websocket", "", b"websocket")),
        BadCase(*_h3("plain HTTP/3 GET", "", None, method=b"GET")),
        # Just over the 1 MiB limit: an upload through a QUIC stack in Python is slow.
        BadCase(*_h3("CONNECT, then 1 MiB + 64 KiB on its stream", "", b"webtransport",
                     (1 << 20) + (1 << 16))),
    ),
}


def cases_for(transport: Transport) -> tuple[BadCase, ...]:
    """The common cases and those of the transport's protocol family."""
    return COMMON + CASES[transport.bad_input_family]


def _ws_close(data: bytes) -> str | None:
    """The first close frame in server data after a 101 response, as ``close CODE reason``."""
    i = 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            n, j = struct.unpack("!H", data[j : j + 2])[0], j + 2
        elif n == 127:
            n, j = struct.unpack("!Q", data[j : j + 8])[0], j + 8
        if opcode == 0x8:
            body = data[j : j + n]
            if len(body) >= 2:
                code = struct.unpack("!H", body[:2])[0]
                return f"close {code} {body[2:].decode(errors='replace')!r}"
            return "close (no code)"
        i = j + n
    return None


def describe_answer(data: bytes, ending: str) -> str:
    """What the bad peer got, in words: status line / close code / error line, then how the
    connection ended (``ending``: ``closed``, ``reset``, ``left open``)."""
    if data.startswith(b"HTTP/"):
        head, _, rest = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if b" 101 " in head.split(b"\r\n", 1)[0] + b" ":
            close = _ws_close(rest)
            return f"{status}; {close or 'no close frame'}; {ending}"
        return f"{status}; {ending}"
    if looks_like_http2(data):
        return f"{describe_http2(data)}; {ending}"
    if data.startswith(b"{"):
        line = data.split(b"\n", 1)[0].decode(errors="replace")
        return f"{line[:120]}; {ending}"
    if data:
        return f"{len(data)} bytes: {data[:40]!r}; {ending}"
    return ending


def is_refusal(described: str) -> bool:
    """Whether a :func:`describe_answer` text is a clear "server full": a 503 status, a close
    1013, or the tcp error line (each says ``server full``)."""
    status = described.split(";", 1)[0].split(" ")
    return (status[0].startswith("HTTP/") and status[1:2] == ["503"]) or (
        "server full" in described
    )


_READ_LIMIT = 1 << 16


async def answer(target: Target, payload: bytes, timeout_s: float) -> str:
    """Send ``payload`` on a fresh socket and describe what came back (over UDP: as
    datagrams of at most 1,400 bytes)."""
    if target.transport_protocol == "udp":
        chunks = [payload[i : i + 1400] for i in range(0, len(payload), 1400)]
        return await datagrams(target.host, target.port, chunks, timeout_s)
    reader, writer = await asyncio.wait_for(
        target.open(), timeout_s
    )
    data = b""
    ending = "left open"
    try:
        writer.write(payload)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.drain(), timeout_s)
        async with asyncio.timeout(timeout_s):
            while len(data) < _READ_LIMIT:
                chunk = await reader.read(_READ_LIMIT)
                if not chunk:
                    ending = "closed"
                    break
                data += chunk
    except TimeoutError:
        ending = f"left open after {timeout_s:g} s"
    except ConnectionResetError:
        ending = "reset"
    finally:
        writer.close()
    return describe_answer(data, ending)


async def server_alive(target: Target, timeout_s: float) -> bool:
    """Whether something accepts a connection at ``target`` within ``timeout_s`` (over UDP:
    whether a QUIC handshake completes)."""
    if target.transport_protocol == "udp":
        # A handshake needs the server's event loop, not only its kernel (unlike a TCP
        # connect): give a busy one a few seconds.
        return await handshake_ok(target.host, target.port, max(timeout_s, 5.0))
    try:
        _, writer = await asyncio.wait_for(target.open(), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def request_head(family: BadInputFamily, t: Target) -> bytes:
    """The well-formed opening a normal client of ``family`` sends."""
    if family == "websocket":
        return upgrade(t)
    if family == "tcp":
        return b"{}\n"
    if family == "grpc":
        return subscribe(t.host, t.port, t.path)
    return _get(t, t.path)


def endless_head(family: BadInputFamily, t: Target) -> bytes:
    """The family's opening, left unfinished and padded long: a head that never completes."""
    if family == "tcp":
        return b"{" + b" " * 10_000  # whitespace inside the hello line
    if family == "grpc":
        return unfinished_head(t.host, t.port, t.path, 10_000)  # no END_HEADERS, ever
    return request_head(family, t)[:-2] + b"X-Slow: " + b"a" * 10_000  # a header line, unended


async def slowloris(target: Target, head: bytes, drip_s: float, give_up_s: float) -> str:
    """Drip ``head`` a byte every ``drip_s``: how long the server let it.

    Give it an :func:`endless_head`, so the head never completes whatever the pace.
    """
    reader, writer = await asyncio.wait_for(
        target.open(), give_up_s
    )
    started = time.monotonic()
    try:
        answered = ""
        for byte in head:
            writer.write(bytes([byte]))
            try:
                # The server's close (EOF) or reset ends the wait at once.
                data = await asyncio.wait_for(reader.read(1 << 16), drip_s)
            except TimeoutError:
                data = None
            if data == b"":
                return f"closed after {time.monotonic() - started:.1f} s{answered}"
            if data and not answered:  # tcp says why before it closes
                answered = f", having answered {data[:60]!r}"
            if time.monotonic() - started > give_up_s:
                return f"left open after {give_up_s:g} s{answered}"
        return f"left open after {time.monotonic() - started:.1f} s (all {len(head)} bytes sent)"
    except ConnectionError:
        return f"reset after {time.monotonic() - started:.1f} s"
    finally:
        writer.close()


async def non_readers(target: Target, head: bytes, count: int) -> list[socket.socket]:
    """``count`` peers that send ``head`` (subscribe) and then never read a byte.

    Their receive buffers are as small as the kernel allows, so what they do not read piles
    up on the server's side. The caller closes the sockets.
    """
    loop = asyncio.get_running_loop()
    peers: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            peers.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, (target.host, target.port)), 5.0)
            await loop.sock_sendall(sock, head)
    except BaseException:
        for sock in peers:
            sock.close()
        raise
    return peers


async def idle_burst(target: Target, count: int, hold_s: float) -> str:
    """Open ``count`` connections that send nothing, hold them, close them."""
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    refused = 0
    for _ in range(count):
        try:
            opened.append(
                await asyncio.wait_for(target.open(), hold_s)
            )
        except (OSError, TimeoutError):
            refused += 1
    # Hold them: an idle peer must not cost the server more than its socket.
    await asyncio.sleep(hold_s)
    closed_by_server = sum(1 for reader, _ in opened if reader.at_eof() or reader.exception())
    for _, writer in opened:
        writer.close()
    return (
        f"{len(opened)} opened ({refused} refused), held {hold_s:g} s, "
        f"{closed_by_server} closed by the server meanwhile"
    )


async def open_idle(
    target: Target, count: int, timeout_s: float
) -> tuple[list[asyncio.StreamWriter], int]:
    """``count`` connections that send nothing, left open: the writers (the caller closes
    them) and how many could not connect within ``timeout_s``."""
    opened: list[asyncio.StreamWriter] = []
    failed = 0
    for _ in range(count):
        try:
            opened.append(
                (
                    await asyncio.wait_for(
                        target.open(), timeout_s
                    )
                )[1]
            )
        except (OSError, TimeoutError):
            failed += 1
    return opened, failed


async def subscribers(
    target: Target, head: bytes, count: int, timeout_s: float
) -> list[asyncio.StreamWriter]:
    """``count`` peers that send ``head`` (subscribe) and wait for the server's answer to
    it (so each is in before the caller goes on), then read no more. The caller closes them.

    The answer is the first bytes, but on HTTP/2 the server's first bytes are its SETTINGS,
    sent before it reads the request: there it is the first HEADERS or DATA frame of a stream.
    """
    http2 = head.startswith(PREFACE)

    async def answered(reader: asyncio.StreamReader) -> None:
        if not http2:
            await reader.read(1)
            return
        while True:
            frame = await reader.readexactly(9)
            await reader.readexactly(int.from_bytes(frame[:3], "big"))
            if frame[3] in (0x0, 0x1) and int.from_bytes(frame[5:9], "big") & 0x7FFF_FFFF:
                return  # DATA or HEADERS on a stream: the request was taken

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.wait_for(
            target.open(), timeout_s
        )
        writer.write(head)
        with contextlib.suppress(TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            await asyncio.wait_for(answered(reader), timeout_s)
        return writer

    got = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    peers = [w for w in got if isinstance(w, asyncio.StreamWriter)]
    failure = next((e for e in got if isinstance(e, BaseException)), None)
    if failure is not None and not isinstance(failure, OSError | TimeoutError):
        for writer in peers:
            writer.close()
        raise failure
    return peers
