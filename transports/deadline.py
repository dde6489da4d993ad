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
    future = asyncio.ensure_future(read)
    if future.done() or seconds is None:
        return await future
    try:
        return await asyncio.wait_for(future, seconds)
    except TimeoutError as exc:
        raise PeerSilent(f"nothing received for {seconds:g} s") from exc
