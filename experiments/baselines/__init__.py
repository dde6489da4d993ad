"""Minimal standalone pushers: each library's honest ceiling, beside the transport built on it.

A pusher is the smallest program that pushes the same wire bytes from the same
:class:`~model.source.BernoulliSource` over one library, at saturation, with writes batched
the way the library allows (one flush per batch of :data:`BATCH` samples). Its reader does the
same work as the experiments' client worker (decode with the shared codec, record in the
:class:`~model.ledger.DeliveryLedger`; where the wire gives lines, a read's lines decoded and
accounted at once, as the worker does for tcp and webtransport: :mod:`.lines`), so
``overhead_fraction`` isolates what the transport adds (hub, resume, shared client, framing
choices), not the measurement itself.

Each pusher module offers ``async start_server(host, port, source, epoch) -> (port, stop)``
and ``async read(host, port, epoch, sink)`` (runs until cancelled, ``sink.take(sample)`` per
sample or ``sink.take_batch(samples)`` per read). ``python -m experiments.baselines
serve|read NAME`` runs either side as a process.

A transport names its baseline on its registry record (``Transport.baseline``);
:func:`baseline_of` looks it up and fails loudly when the name is unknown (a test checks
every registered transport).
"""

from __future__ import annotations

from dataclasses import dataclass

from transports.contract import Transport

__all__ = ["BATCH", "PUSHERS", "Pusher", "UnknownBaseline", "baseline_of"]

#: Samples generated and written per flush.
BATCH = 256


@dataclass(frozen=True, slots=True)
class Pusher:
    name: str
    #: The distribution it is built on ("stdlib" for asyncio).
    library: str
    #: The module holding ``start_server`` and ``read``.
    module: str
    summary: str


TORNADO_WS = Pusher(
    "tornado-ws",
    "tornado",
    "experiments.baselines.tornado_ws",
    "tornado WebSocketHandler, write_message per sample, one await per batch",
)
ASYNCIO_TCP = Pusher(
    "asyncio-tcp",
    "stdlib",
    "experiments.baselines.asyncio_tcp",
    "asyncio streams, NDJSON lines coalesced into one write per batch",
)
SSE = Pusher(
    "sse-starlette",
    "sse-starlette",
    "experiments.baselines.sse",
    "starlette + sse-starlette under uvicorn, a batch of events per chunk; httpx-sse reader",
)
AIOHTTP_POLL = Pusher(
    "aiohttp-poll",
    "aiohttp",
    "experiments.baselines.aiohttp_poll",
    "aiohttp web, GET answers 1,000 samples per response; aiohttp client",
)
WEBSOCKETS = Pusher(
    "websockets",
    "websockets",
    "experiments.baselines.websockets_ws",
    "websockets (asyncio) server, send() per sample, no compression; recv() reader",
)
AIOHTTP_WS = Pusher(
    "aiohttp-ws",
    "aiohttp",
    "experiments.baselines.aiohttp_ws",
    "aiohttp WebSocketResponse, send_frame per sample, no compression; ws_connect reader",
)
STARLETTE_STREAM = Pusher(
    "starlette-stream",
    "starlette",
    "experiments.baselines.starlette_stream",
    "starlette StreamingResponse under uvicorn, a batch of NDJSON lines per chunk; httpx lines",
)

AIOQUIC_WEBTRANSPORT = Pusher(
    "aioquic-webtransport",
    "aioquic",
    "experiments.baselines.webtransport",
    "aioquic HTTP/3 WebTransport, one uni stream of NDJSON lines, one write per batch",
)

GRPC = Pusher(
    "grpc",
    "grpcio",
    "experiments.baselines.grpc",
    "grpcio asyncio, the generated servicer yielding one message per sample; generated stub",
)

PUSHERS: dict[str, Pusher] = {
    p.name: p
    for p in (
        TORNADO_WS,
        ASYNCIO_TCP,
        SSE,
        AIOHTTP_POLL,
        WEBSOCKETS,
        AIOHTTP_WS,
        STARLETTE_STREAM,
        AIOQUIC_WEBTRANSPORT,
        GRPC,
    )
}


class UnknownBaseline(LookupError):
    def __init__(self, transport: Transport) -> None:
        super().__init__(
            f"{transport.name} names baseline {transport.baseline!r}; known: {', '.join(PUSHERS)}"
        )


def baseline_of(transport: Transport) -> Pusher:
    """The minimal pusher the transport names as its baseline (on its own library)."""
    try:
        return PUSHERS[transport.baseline]
    except KeyError:
        raise UnknownBaseline(transport) from None
