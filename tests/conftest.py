"""Fixtures shared by the socket tests: free ports, throwaway servers, sockets that stall."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing

import pytest

#: What a throwaway server does with each connection.
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
#: Starts a throwaway server on 127.0.0.1 and returns its port.
FakeServer = Callable[[Handler], Awaitable[int]]


@pytest.fixture
def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    """Start asyncio servers with a test's own handler (a hostile or broken peer).

    Each is closed when the test ends, whatever the handler still waits for.
    """
    servers: list[asyncio.Server] = []

    async def start(handle: Handler) -> int:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def small_receive_buffer_socket() -> Iterator[socket.socket]:
    """A non-blocking TCP socket whose receive buffer is as small as the kernel allows.

    Set before connecting: the kernel then absorbs almost nothing for a peer that stops
    reading, so a server notices quickly that this one does.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    with closing(sock):
        yield sock
