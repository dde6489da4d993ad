"""Minimal websockets pusher (asyncio implementation): ``send()`` per sample, read by ``recv()``.

No compression on either side (the transport runs without it), so the wire bytes match.
``send()`` awaits only when the write buffer is past its high-water mark: the library's own
way of batching writes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from experiments.baselines import BATCH
from experiments.baselines.sink import Sink
from model.sample import Sample, decode_sample, encode_sample
from model.source import BernoulliSource

__all__ = ["read", "start_server"]


async def start_server(
    host: str, port: int, source: BernoulliSource, epoch: str
) -> tuple[int, Callable[[], Awaitable[None]]]:
    async def push(websocket: ServerConnection) -> None:
        seq = 0
        try:
            while True:
                now = time.monotonic_ns()
                for s in range(seq, seq + BATCH):
                    await websocket.send(
                        encode_sample(Sample(epoch, s, source.value(s), now)), text=True
                    )
                seq += BATCH
        except ConnectionClosed:
            pass

    server = await serve(push, host, port, compression=None)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return int(server.sockets[0].getsockname()[1]), stop


async def read(host: str, port: int, epoch: str, sink: Sink) -> None:
    async with connect(f"ws://{host}:{port}/websocket/", compression=None, proxy=None) as websocket:
        # Bytes, as the transport's client reads them (websockets' advice for JSON).
        with contextlib.suppress(ConnectionClosedOK):  # as `async for` ends
            while True:
                sink.take(decode_sample(await websocket.recv(decode=False)))
