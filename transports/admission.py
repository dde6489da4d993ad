"""Admission: at most N holders at once, first come first served, O(1) a turn.

``asyncio.Semaphore`` would do, but on Python 3.11 its ``acquire`` scans every waiter
(``locked()``), so thousands of clients waiting for their turn cost time quadratic in their
number: 9,000 clients behind a limit of 128 took 42.7 s to connect here (9.0 s with this one,
7.1 s with no limit). Tokens in an ``asyncio.Queue`` wake the next waiter in O(1), and a waiter
cancelled after it was woken passes its turn on (the queue's own ``get`` does).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["Admission"]


class Admission:
    """``async with admission:`` waits its turn among at most ``limit`` holders."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an admission limit must be >= 1, got {limit}")
        self.limit = limit
        #: How many wait for a turn now.
        self.waiting = 0
        self._tokens: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(limit):
            self._tokens.put_nowait(None)

    @property
    def holders(self) -> int:
        """How many hold a turn now."""
        return self.limit - self._tokens.qsize()

    async def __aenter__(self) -> None:
        self.waiting += 1
        try:
            await self._tokens.get()
        finally:
            self.waiting -= 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tokens.put_nowait(None)
