"""A dead-peer deadline for a reader that takes one message per read, at no cost per read.

:class:`~transports.deadline.ReadDeadline` reads the clock and the current task on every read
that does not complete at once; a WebSocket client whose library hands over one message per
``receive()`` pays that on every message (a seventh of aiohttp's client at saturation). The
watchdog moves the work to a timer: the reader only counts its reads and says while it waits
(two attribute stores)::

    watch.reads += 1
    watch.waiting = True
    msg = await receive()          # PeerSilent comes out of here (see below)
    watch.waiting = False

and a timer every ``seconds / TICKS`` looks: a read that has been waiting since a look at
least ``seconds`` ago (the same read, no other in between) expires: the reader's task is
cancelled and :meth:`ReadWatchdog.silent` turns that cancellation into
:class:`~model.errors.PeerSilent`. So a silent peer is noticed after ``seconds`` of silence,
never before, and at most ``seconds / TICKS`` (plus the timer's own lateness) after; a
consumer that holds the reader (busy, or pacing itself) is never taken for a silent peer,
since the reader does not wait then.
"""

from __future__ import annotations

import asyncio

from model.errors import PeerSilent

__all__ = ["TICKS", "ReadWatchdog"]

#: Looks per deadline: how late, as a share of ``seconds``, a silent peer may be noticed.
TICKS = 4


class ReadWatchdog:
    """One connection's read deadline, checked by a timer; reads come from one task."""

    __slots__ = (
        "_cancelling",
        "_expired",
        "_looked_at",
        "_quiet_since",
        "_seconds",
        "_task",
        "_timer",
        "reads",
        "waiting",
    )

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        #: Reads started so far (the reader counts them).
        self.reads = 0
        #: Whether the reader is waiting in a read now (the reader says so).
        self.waiting = False
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._looked_at = -1
        self._quiet_since = 0.0
        self._expired = False
        self._cancelling = 0

    def start(self) -> None:
        """Watch the current task's reads (call it from the reading task, before reading)."""
        if self._seconds is None or self._timer is not None:
            return
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("ReadWatchdog.start runs in a task")
        self._task = task
        loop = task.get_loop()
        self._quiet_since = loop.time()
        self._timer = loop.call_later(self._seconds / TICKS, self._look)

    def silent(self, cancelled: asyncio.CancelledError) -> PeerSilent | None:
        """For a read that was cancelled: the :class:`PeerSilent` to raise instead, when the
        watchdog cancelled it (and nobody else asked for a cancellation meanwhile)."""
        task = self._task
        if not self._expired or task is None:
            return None
        self._expired = False
        if task.uncancel() > self._cancelling:
            return None  # another cancellation as well: that one wins
        silent = PeerSilent(f"nothing received for {self._seconds:g} s")
        silent.__cause__ = cancelled
        return silent

    def close(self) -> None:
        """Stop watching (the connection is over); idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._task = None

    def _look(self) -> None:
        task, seconds = self._task, self._seconds
        if task is None or seconds is None:
            return
        loop = task.get_loop()
        now = loop.time()
        if not self.waiting or self.reads != self._looked_at:
            # Between reads, or a newer read than at the last look: the peer is not silent.
            self._looked_at = self.reads
            self._quiet_since = now
        elif now - self._quiet_since >= seconds and not task.done():
            self._expired = True
            self._cancelling = task.cancelling()
            task.cancel()
            self._timer = None
            return
        self._timer = loop.call_later(seconds / TICKS, self._look)
