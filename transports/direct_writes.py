"""The hub's fast path on an asyncio transport: a write that never waits.

:meth:`transports.hub.Subscription.write_directly` takes a ``write`` that starts a write and
says whether the socket took it. On an asyncio transport (raw TCP, TLS, aiohttp's) that is
``transport.write`` while the transport's buffer is at or below its high-water mark, the
same mark ``StreamWriter.drain()`` waits on: past it, or once the transport is closing, the
write is refused and the subscriber's own task takes over (it writes and awaits the drain).
"""

from __future__ import annotations

import asyncio

from transports.hub import WriteNow

__all__ = ["asyncio_writer"]


def asyncio_writer(transport: asyncio.WriteTransport) -> WriteNow:
    """Write to ``transport`` now, unless its buffer is past the high-water mark."""
    _, high = transport.get_write_buffer_limits()
    buffered, closing, write = (
        transport.get_write_buffer_size,
        transport.is_closing,
        transport.write,
    )

    def write_now(data: bytes) -> bool:
        if closing() or buffered() > high:
            return False
        write(data)
        return True

    return write_now
