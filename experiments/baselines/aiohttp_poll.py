"""Minimal aiohttp polling pusher: each GET answers the next 1,000 samples as a JSON array."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from experiments.baselines.sink import Sink
from model.sample import Sample, decode_samples, encode_samples
from model.source import BernoulliSource

__all__ = ["PER_RESPONSE", "read", "start_server"]

PER_RESPONSE = 1_000


async def start_server(
    host: str, port: int, source: BernoulliSource, epoch: str
) -> tuple[int, Callable[[], Awaitable[None]]]:
    async def samples(request: web.Request) -> web.Response:
        first = int(request.query.get("since", "-1")) + 1
        now = time.monotonic_ns()
        body = encode_samples(
            [Sample(epoch, s, source.value(s), now) for s in range(first, first + PER_RESPONSE)]
        )
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/samples", samples)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    assert runner.addresses
    bound = int(runner.addresses[0][1])
    return bound, runner.cleanup


async def read(host: str, port: int, epoch: str, sink: Sink) -> None:
    since = -1
    async with aiohttp.ClientSession() as session:
        while True:
            url = f"http://{host}:{port}/samples?epoch={epoch}&since={since}"
            async with session.get(url) as response:
                response.raise_for_status()
                batch = decode_samples(await response.read())
            for sample in batch:
                sink.take(sample)
            if batch:
                since = batch[-1].seq
