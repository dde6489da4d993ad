"""Reading with a dead-peer deadline, shared by every client.

A peer that goes silent without closing (a black hole) is only noticed by a deadline on
reads. The timer is armed only when the read would actually wait, so a busy stream pays
nothing per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from model.errors import PeerSilent

__all__ = ["read_within"]

T = TypeVar("T")


async def read_within(read: Awaitable[T], seconds: float | None) -> T:
    """Await ``read``; raise :class:`PeerSilent` if it takes longer than ``seconds``."""
    if seconds is None or (isinstance(read, asyncio.Future) and read.done()):
        return await read
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
    # arrives just as the read completes, and the cancelled reader then runs on forever.
    try:
        async with asyncio.timeout(seconds):
            return await read
    except TimeoutError as exc:
        raise PeerSilent(f"nothing received for {seconds:g} s") from exc
