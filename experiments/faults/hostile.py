"""Hostile peers as raw bytes, per protocol family, and how to read what the server answered.

:func:`protocol_family` derives a transport's family from its registry entry (endpoint scheme,
and for HTTP whether it pushes): ``websocket``, ``http-stream``, ``http-poll`` or ``tcp``.
:data:`CASES` is the one table of bad inputs keyed by family; every family also gets the
common cases (garbage bytes, a 2 MiB message). Payload builders and :func:`describe_answer`
are pure, so they are tested without sockets.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from transports.contract import Transport

__all__ = [
    "CASES",
    "OVERSIZED_BYTES",
    "BadCase",
    "Target",
    "cases_for",
    "describe_answer",
    "protocol_family",
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


def protocol_family(transport: Transport) -> str:
    scheme = urlsplit(transport.endpoint).scheme
    if scheme == "ws":
        return "websocket"
    if scheme == "http":
        return "http-stream" if transport.features.push else "http-poll"
    return scheme


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

CASES: dict[str, tuple[BadCase, ...]] = {
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
    return COMMON + CASES.get(protocol_family(transport), ())


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
