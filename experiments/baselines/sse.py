"""Minimal SSE pusher: starlette + sse-starlette under uvicorn, read by httpx + httpx-sse.

The server yields a batch of events per chunk, each encoded by sse-starlette's own
``ServerSentEvent`` (``id: EPOCH:SEQ`` and ``data: <sample>``), so the wire bytes match the
sse transport's; the reader is httpx-sse's event parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import uvicorn
from httpx_sse import aconnect_sse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from experiments.baselines import BATCH
from experiments.baselines.sink import Sink
from model.sample import Sample, decode_sample, encode_sample
from model.source import BernoulliSource

__all__ = ["read", "start_server"]


async def start_server(
    host: str, port: int, source: BernoulliSource, epoch: str
) -> tuple[int, Callable[[], Awaitable[None]]]:
    async def events(request: Request) -> EventSourceResponse:
        async def chunks() -> AsyncIterator[bytes]:
            seq = 0
            while True:
                now = time.monotonic_ns()
                yield b"".join(
                    ServerSentEvent(
                        data=encode_sample(Sample(epoch, s, source.value(s), now)).decode(),
                        id=f"{epoch}:{s}",
                    ).encode()
                    for s in range(seq, seq + BATCH)
                )
                seq += BATCH

        return EventSourceResponse(chunks())

    app = Starlette(routes=[Route("/events", events)])
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
        aconnect_sse(client, "GET", f"http://{host}:{port}/events") as source,
    ):
        async for event in source.aiter_sse():
            if event.data:  # after a comment ping httpx-sse yields an empty event
                sink.take(decode_sample(event.data))
