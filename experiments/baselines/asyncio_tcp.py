"""Minimal raw asyncio TCP pusher: NDJSON lines, one coalesced write + drain per batch; the
reader decodes and accounts for each read's lines at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from experiments.baselines import BATCH
from experiments.baselines.lines import decode_lines, encode_batch
from experiments.baselines.sink import Sink
from model.source import BernoulliSource

__all__ = ["read", "start_server"]


async def start_server(
    host: str, port: int, source: BernoulliSource, epoch: str
) -> tuple[int, Callable[[], Awaitable[None]]]:
    async def push(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seq = 0
        try:
            while True:
                now = time.monotonic_ns()
                writer.write(encode_batch(source, epoch, seq, seq + BATCH, now))
                seq += BATCH
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(push, host, port)
    bound = server.sockets[0].getsockname()[1]

    async def stop() -> None:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await server.wait_closed()

    return bound, stop


async def read(host: str, port: int, epoch: str, sink: Sink) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    buffer = b""
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            *lines, buffer = (buffer + chunk).split(b"\n")
            sink.take_batch(decode_lines(lines))
    finally:
        writer.close()
