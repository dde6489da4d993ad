"""Reading with a dead-peer deadline, shared by every client.

A peer that goes silent without closing (a black hole) is only noticed by a deadline on
reads. Two forms, with the same meaning (a read that waits longer than ``seconds`` raises
:class:`PeerSilent`):

- :func:`read_within`, for one read: it arms a timer only when the read would actually wait,
  which suits clients that read a whole batch per read (a socket chunk);
- :class:`ReadDeadline`, for a connection read message by message (tornado's WebSocket
  client waits on nearly every message): one timer serves every read of the connection,
  re-armed lazily, instead of a timer armed and cancelled per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from model.errors import PeerSilent

__all__ = ["ReadDeadline", "read_within"]

T = TypeVar("T")

#: A timer running this much before its read's deadline counts as on time.
_EARLY_S = 0.001


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


class ReadDeadline:
    """One connection's read deadline: :meth:`read` is :func:`read_within` with one timer.

    The timer is armed by the first read that waits and then only checks, when it fires,
    whether the read waiting now started ``seconds`` ago; if not, it re-arms for when it
    would have. So a busy connection pays a clock reading per waiting read and one timer
    per ``seconds``. Reads must come from one task at a time (a connection's reader).
    Expiry cancels the waiting task, like ``asyncio.timeout``, and the cancellation is
    turned into :class:`PeerSilent`; a cancellation from elsewhere passes through.
    """

    __slots__ = ("_expired", "_seconds", "_timer", "_waiter", "_waiting_since")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._timer: asyncio.TimerHandle | None = None
        #: The task waiting in :meth:`read` and the loop time it started waiting.
        self._waiter: asyncio.Task[object] | None = None
        self._waiting_since = 0.0
        self._expired = False

    async def read(self, read: Awaitable[T]) -> T:
        """Await ``read``; raise :class:`PeerSilent` if it waits longer than ``seconds``."""
        seconds = self._seconds
        if seconds is None or (isinstance(read, asyncio.Future) and read.done()):
            return await read
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("ReadDeadline.read runs in a task")
        loop = task.get_loop()
        self._waiting_since = loop.time()
        self._waiter = task
        if self._timer is None:
            self._timer = loop.call_at(self._waiting_since + seconds, self._check)
        cancelling = task.cancelling()
        try:
            return await read
        except asyncio.CancelledError as exc:
            # Ours only if we expired it and nobody else asked for a cancellation meanwhile.
            if self._expired and task.uncancel() <= cancelling:
                raise PeerSilent(f"nothing received for {seconds:g} s") from exc
            raise
        finally:
            self._waiter = None
            self._expired = False

    def close(self) -> None:
        """Drop the timer (the connection is over); idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        waiter, seconds = self._waiter, self._seconds
        if waiter is None or seconds is None:
            return  # nobody waits: the next read that waits arms a new timer
        loop = waiter.get_loop()
        due = self._waiting_since + seconds
        # Asyncio may run a timer up to its clock resolution early: a margin, not a spin.
        if due - loop.time() > _EARLY_S:
            self._timer = loop.call_at(due, self._check)
            return
        self._expired = True
        waiter.cancel()
