"""Minimal tornado WebSocket pusher: ``write_message`` per sample, one await per batch."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
import tornado.websocket

from experiments.baselines import BATCH
from experiments.baselines.sink import Sink
from model.sample import Sample, decode_sample, encode_sample
from model.source import BernoulliSource

__all__ = ["read", "start_server"]


class _Push(tornado.websocket.WebSocketHandler):
    def initialize(self, source: BernoulliSource, epoch: str) -> None:
        self.source, self.epoch = source, epoch
        self._task: asyncio.Task[None] | None = None

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        self._task = asyncio.create_task(self._push())

    async def _push(self) -> None:
        source, epoch, seq = self.source, self.epoch, 0
        try:
            while True:
                now = time.monotonic_ns()
                written = None
                for s in range(seq, seq + BATCH):
                    written = self.write_message(
                        encode_sample(Sample(epoch, s, source.value(s), now))
                    )
                seq += BATCH
                assert written is not None
                await written
        except (tornado.websocket.WebSocketClosedError, tornado.iostream.StreamClosedError):
            pass

    def on_close(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def start_server(
    host: str, port: int, source: BernoulliSource, epoch: str
) -> tuple[int, Callable[[], Awaitable[None]]]:
    app = tornado.web.Application([("/websocket/", _Push, {"source": source, "epoch": epoch})])
    sockets = tornado.netutil.bind_sockets(port, host, family=socket.AF_INET)
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)

    async def stop() -> None:
        server.stop()
        await server.close_all_connections()

    return sockets[0].getsockname()[1], stop


async def read(host: str, port: int, epoch: str, sink: Sink) -> None:
    conn = await tornado.websocket.websocket_connect(f"ws://{host}:{port}/websocket/")
    try:
        while True:
            message = await conn.read_message()
            if message is None:
                return
            sink.take(decode_sample(message))
    finally:
        conn.close()
