"""Hostile peers as raw bytes, per protocol family, and how to read what the server answered.

A transport declares its family on its registry record (``Transport.bad_input_family``):
``websocket``, ``http-stream``, ``http-poll`` or ``tcp``. :data:`CASES` is the one table of
bad inputs keyed by family (a test checks every family has its cases); every family also gets
the common cases. Payload builders and :func:`describe_answer` are pure, so they are tested
without sockets; :func:`answer`, :func:`idle_burst` and :func:`server_alive` are the peers
themselves, on real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from transports.contract import BadInputFamily, Transport

__all__ = [
    "CASES",
    "OVERSIZED_BYTES",
    "BadCase",
    "Target",
    "answer",
    "cases_for",
    "describe_answer",
    "idle_burst",
    "server_alive",
]

#: Twice the default 1 MiB message limit.
OVERSIZED_BYTES = 2 * 1024 * 1024
_WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    #: The endpoint's path (``/websocket/``, ``/events``, ``/samples``; ``/`` for raw TCP).
    path: str


@dataclass(frozen=True, slots=True)
class BadCase:
    name: str
    build: Callable[[Target], bytes]


def target_of(transport: Transport, host: str, port: int) -> Target:
    return Target(host, port, urlsplit(transport.url(host, port)).path or "/")


def _get(t: Target, path_and_query: str, *headers: str) -> bytes:
    lines = [f"GET {path_and_query} HTTP/1.1", f"Host: {t.host}:{t.port}", *headers, "", ""]
    return "\r\n".join(lines).encode()


def _upgrade(t: Target, query: str = "") -> bytes:
    return _get(
        t,
        t.path + query,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {_WS_KEY}",
        "Sec-WebSocket-Version: 13",
    )


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (mask key 0, so the payload goes as is)."""
    head = bytes([(0x80 if fin else 0) | opcode])
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

CASES: dict[BadInputFamily, tuple[BadCase, ...]] = {
    "websocket": (
        BadCase("upgrade, then a garbage frame", lambda t: _upgrade(t) + b"\x8f\x80\0\0\0\0"),
        BadCase(
            "upgrade, then a 2 MiB text frame",
            lambda t: _upgrade(t) + ws_frame(0x1, b"x" * OVERSIZED_BYTES),
        ),
        BadCase("upgrade with a bad resume query", lambda t: _upgrade(t, "?epoch=zz&since=-1")),
        BadCase("plain GET, no upgrade", lambda t: _get(t, t.path)),
        BadCase("2 MiB header", _oversized_header),
    ),
    "http-stream": (
        BadCase("bad Last-Event-ID", lambda t: _get(t, t.path, "Last-Event-ID: nope:-3")),
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
    if data.startswith(b"{"):
        line = data.split(b"\n", 1)[0].decode(errors="replace")
        return f"{line[:120]}; {ending}"
    if data:
        return f"{len(data)} bytes: {data[:40]!r}; {ending}"
    return ending


_READ_LIMIT = 1 << 16


async def answer(target: Target, payload: bytes, timeout_s: float) -> str:
    """Send ``payload`` on a fresh socket and describe what came back."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port), timeout_s
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


async def server_alive(host: str, port: int, timeout_s: float) -> bool:
    """Whether something accepts a connection on ``host:port`` within ``timeout_s``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def idle_burst(target: Target, count: int, hold_s: float) -> str:
    """Open ``count`` connections that send nothing, hold them, close them."""
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    refused = 0
    for _ in range(count):
        try:
            opened.append(
                await asyncio.wait_for(asyncio.open_connection(target.host, target.port), hold_s)
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
