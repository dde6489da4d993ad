"""Minimal HTTP streaming pusher: a starlette ``StreamingResponse`` of NDJSON under uvicorn,
read by httpx a chunk at a time, each chunk's complete lines decoded at once (as the
http-stream transport's client reads).

The server yields a batch of lines per chunk, the wire bytes of the http-stream transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from experiments.baselines import BATCH
from experiments.baselines.lines import decode_lines, encode_batch
from experiments.baselines.sink import Sink
from model.source import BernoulliSource

__all__ = ["read", "start_server"]


async def start_server(
    host: str, port: int, source: BernoulliSource, epoch: str
) -> tuple[int, Callable[[], Awaitable[None]]]:
    async def stream(request: Request) -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            seq = 0
            while True:
                now = time.monotonic_ns()
                yield encode_batch(source, epoch, seq, seq + BATCH, now)
                seq += BATCH

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    app = Starlette(routes=[Route("/stream", stream)])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # uvicorn's own flag; checked each loop turn, bounded below
        if task.done():
            task.result()
        await asyncio.sleep(0.005)

    async def stop() -> None:
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                await task

    return int(sock.getsockname()[1]), stop


async def read(host: str, port: int, epoch: str, sink: Sink) -> None:
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("GET", f"http://{host}:{port}/stream") as response,
    ):
        buffer = b""
        async for chunk in response.aiter_raw():
            *lines, buffer = (buffer + chunk).split(b"\n")
            sink.take_batch(decode_lines(lines))
