"""Minimal standalone pushers: each library's honest ceiling, beside the transport built on it.

A pusher is the smallest program that pushes the same wire bytes from the same
:class:`~model.source.BernoulliSource` over one library, at saturation, with writes batched
the way the library allows (one flush per batch of :data:`BATCH` samples). Its reader does the
same per-sample work as the experiments' client worker (decode with the shared codec, record
in the :class:`~model.ledger.DeliveryLedger`), so ``overhead_fraction`` isolates what the
transport adds (hub, resume, shared client, framing choices), not the measurement itself.

Each pusher module offers ``async start_server(host, port, source, epoch) -> (port, stop)``
and ``async read(host, port, epoch, sink)`` (runs until cancelled, ``sink.take(sample)`` per
sample). ``python -m experiments.pushers serve|read NAME`` runs either side as a process.

Transports map to pushers by library (:func:`pusher_for`): the first of a transport's
``dependencies`` found in :data:`BY_LIBRARY`; a transport on the standard library alone gets
the raw asyncio TCP pusher.
"""

from __future__ import annotations

from dataclasses import dataclass

from transports.contract import Transport

__all__ = ["BATCH", "BY_LIBRARY", "PUSHERS", "Pusher", "pusher_for"]

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
    "experiments.pushers.tornado_ws",
    "tornado WebSocketHandler, write_message per sample, one await per batch",
)
ASYNCIO_TCP = Pusher(
    "asyncio-tcp",
    "stdlib",
    "experiments.pushers.asyncio_tcp",
    "asyncio streams, NDJSON lines coalesced into one write per batch",
)
SSE = Pusher(
    "sse-starlette",
    "sse-starlette",
    "experiments.pushers.sse",
    "starlette + sse-starlette under uvicorn, a batch of events per chunk; httpx-sse reader",
)
AIOHTTP_POLL = Pusher(
    "aiohttp-poll",
    "aiohttp",
    "experiments.pushers.aiohttp_poll",
    "aiohttp web, GET answers 1,000 samples per response; aiohttp client",
)

PUSHERS: dict[str, Pusher] = {p.name: p for p in (TORNADO_WS, ASYNCIO_TCP, SSE, AIOHTTP_POLL)}
BY_LIBRARY: dict[str, Pusher] = {p.library: p for p in PUSHERS.values()}


def pusher_for(transport: Transport) -> Pusher:
    """The pusher on the library the transport is built on."""
    for library in transport.dependencies:
        if library in BY_LIBRARY:
            return BY_LIBRARY[library]
    return ASYNCIO_TCP
