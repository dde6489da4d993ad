"""The one list of transports. Tests, the CLI and the experiments iterate it."""

from __future__ import annotations

from transports.contract import Transport
from transports.polling import LONG_POLL, POLL
from transports.sse import SSE
from transports.tcp import TCP
from transports.tornado_ws import SEED, TORNADO_WS

__all__ = ["TRANSPORTS", "UnknownTransport", "get"]

TRANSPORTS: dict[str, Transport] = {
    t.name: t for t in (TORNADO_WS, SEED, SSE, POLL, LONG_POLL, TCP)
}


class UnknownTransport(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown transport {name!r}; known: {', '.join(TRANSPORTS)}")


def get(name: str) -> Transport:
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise UnknownTransport(name) from None
