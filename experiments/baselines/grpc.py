"""Minimal grpcio asyncio pusher: the generated servicer, one response message per sample.

The same ``transportbench.Stream/Subscribe`` call and protobuf messages as the grpc transport,
through the code protoc generated: the servicer's async generator yields samples as fast as
grpc takes them (grpc awaits each write; its API has no batched write), the stub's call is
read message by message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import grpc.aio

from experiments.baselines import BATCH
from experiments.baselines.sink import Sink
from model.sample import Sample
from model.source import BernoulliSource
from transports.proto import transportbench_pb2 as pb
from transports.proto import transportbench_pb2_grpc as pb_grpc

__all__ = ["read", "start_server"]


class _Pusher(pb_grpc.StreamServicer):
    def __init__(self, source: BernoulliSource, epoch: str) -> None:
        self.source, self.epoch = source, epoch

    async def Subscribe(
        self, request: pb.ResumeToken, context: grpc.aio.ServicerContext[pb.ResumeToken, pb.Sample]
    ) -> AsyncIterator[pb.Sample]:
        source, epoch, seq = self.source, self.epoch, 0
        while True:
            now = time.monotonic_ns()
            for s in range(seq, seq + BATCH):
                yield pb.Sample(epoch=epoch, seq=s, value=source.value(s), sent_ns=now)
            seq += BATCH


async def start_server(
    host: str, port: int, source: BernoulliSource, epoch: str
) -> tuple[int, Callable[[], Awaitable[None]]]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_StreamServicer_to_server(_Pusher(source, epoch), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()

    async def stop() -> None:
        await server.stop(None)

    return bound, stop


async def read(host: str, port: int, epoch: str, sink: Sink) -> None:
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        async for message in pb_grpc.StreamStub(channel).Subscribe(pb.ResumeToken()):
            sink.take(Sample(message.epoch, message.seq, message.value, message.sent_ns))
