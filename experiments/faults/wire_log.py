"""Bytes on the wire, per connection and direction, as a relay forwards them (pure).

A :class:`WireLog` is a :class:`~experiments.faults.proxy.FaultProxy` ``tap``: it notes each
chunk's size, direction, connection and the time just before the proxy wrote it on (so a
peer that received the chunk did so after that time), and keeps the first
:data:`HEAD_BYTES` of each connection's each direction, where a TLS connection's cleartext
hellos are (:mod:`experiments.faults.tls_hello`). What crossed between two instants, and
which connections carried it, is then a question about the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HEAD_BYTES", "Chunk", "WireLog"]

#: The start of each direction of each connection kept: the TLS hellos fit many times over.
HEAD_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    at_ns: int
    connection: int
    #: Server to client.
    downstream: bool
    size: int


class WireLog:
    """Every chunk a proxy forwarded (TCP payload), and the start of each stream."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self.chunks: list[Chunk] = []
        self._heads: dict[tuple[int, bool], bytearray] = {}
        self._last_downstream_ns = -1

    def __call__(self, connection: int, downstream: bool, data: bytes) -> None:
        at = self._clock()
        self.chunks.append(Chunk(at, connection, downstream, len(data)))
        if downstream:
            self._last_downstream_ns = at
        head = self._heads.setdefault((connection, downstream), bytearray())
        if len(head) < HEAD_BYTES:
            head += data[: HEAD_BYTES - len(head)]

    def head(self, connection: int, downstream: bool) -> bytes:
        """The first bytes of one direction of one connection."""
        return bytes(self._heads.get((connection, downstream), b""))

    def between(self, after_ns: int, until_ns: int) -> list[Chunk]:
        """The chunks forwarded after ``after_ns`` and no later than ``until_ns``."""
        return [c for c in self.chunks if after_ns < c.at_ns <= until_ns]

    def downstream_after(self, after_ns: int, chunks: int = 1) -> bool:
        """Whether at least ``chunks`` chunks of server data were forwarded after
        ``after_ns``."""
        if self._last_downstream_ns <= after_ns:
            return False
        seen = 0
        for c in reversed(self.chunks):
            if c.at_ns <= after_ns:
                break
            seen += c.downstream
            if seen >= chunks:
                return True
        return False
