"""Minimal aiohttp WebSocket pusher: ``send_frame`` per sample, read by ``ws_connect``.

No compression on either side (the transport runs without it), so the wire bytes match.
``send_frame`` awaits the socket only once its writer's buffer passed its limit: the
library's own way of batching writes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSMsgType, web

from experiments.baselines import BATCH
from experiments.baselines.sink import Sink
from model.sample import Sample, decode_sample, encode_sample
from model.source import BernoulliSource

__all__ = ["read", "start_server"]


async def start_server(
    host: str, port: int, source: BernoulliSource, epoch: str
) -> tuple[int, Callable[[], Awaitable[None]]]:
    async def push(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        seq = 0
        try:
            while not ws.closed:
                now = time.monotonic_ns()
                for s in range(seq, seq + BATCH):
                    message = encode_sample(Sample(epoch, s, source.value(s), now))
                    await ws.send_frame(message, WSMsgType.TEXT)
                seq += BATCH
        except ConnectionError:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/websocket/", push)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    assert runner.addresses
    return int(runner.addresses[0][1]), runner.cleanup


async def read(host: str, port: int, epoch: str, sink: Sink) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://{host}:{port}/websocket/", compress=0) as ws,
    ):
        async for message in ws:
            sink.take(decode_sample(message.data))
