"""The fan-out hub: one publisher, many subscribers, bounded memory whatever they do.

The hub keeps the last ``history`` samples of the current epoch (for resume and polling).
A subscription is a cursor into that history, not a copy, so a subscriber costs O(1) memory.
A subscriber may fall behind by at most ``queue_size`` live samples between two reads; past
that, or once its cursor falls out of history, it is cut (``SubscriberOverflow``) and its
``on_overflow`` callback runs so the transport can close the connection even while it is
blocked writing to a peer that stopped reading. It can resume from history.

Two ways to deliver. The plain way: each subscriber's own task waits (:meth:`next_batch`),
takes its samples and writes them. The fast way, for a library that lets a write be started
without awaiting it (:meth:`Subscription.write_directly`): ``publish`` encodes the batch once
per wire form and hands the bytes to every subscriber that is caught up, in one pass, so no
task wakes and no timer is armed per connection per sample. A subscriber whose socket cannot
take the bytes now (its ``write`` says so: the buffer is over its high-water mark) leaves the
fast way for the plain one: its task is woken, takes what it lacks, writes and awaits the
drain, and calls :meth:`Subscription.rejoin` to come back once it has caught up. Bytes are
never reordered: the hub writes directly only to a subscriber whose task has written (and
drained) everything before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence

from model.errors import SubscriberOverflow, TooManyConnections
from model.sample import Sample
from transports.resume import ResumeToken, start_seq
from transports.settings import Settings

__all__ = ["Encode", "Hub", "Subscription", "WriteNow"]

log = logging.getLogger(__name__)

#: One wire form: a batch of samples as the bytes a subscriber's socket gets.
Encode = Callable[[Sequence[Sample]], bytes]
#: Starts writing bytes to one subscriber without waiting; False when it cannot take them now.
WriteNow = Callable[[bytes], bool]


class Subscription:
    """One subscriber's position in the hub's stream."""

    __slots__ = (
        "_cursor",
        "_direct",
        "_hub",
        "_lagging",
        "_on_overflow",
        "_pending",
        "_ready",
        "closed_reason",
        "direct_writes",
    )

    def __init__(self, hub: Hub, cursor: int, on_overflow: Callable[[str], None] | None) -> None:
        self._hub = hub
        self._cursor = cursor
        self._pending = 0
        self._ready = asyncio.Event()
        self._on_overflow = on_overflow
        self.closed_reason: str | None = None
        #: The wire form's key and encoder, and the writer (None: the plain way only).
        self._direct: tuple[Hashable, Encode, WriteNow] | None = None
        # On the plain way until its task has caught up and rejoined.
        self._lagging = True
        #: Batches the hub wrote to it directly.
        self.direct_writes = 0
        if cursor < hub.next_seq:
            self._ready.set()

    @property
    def cursor(self) -> int:
        """The next seq this subscriber will receive."""
        return self._cursor

    def take(self, limit: int | None = None) -> list[Sample]:
        """The samples available now, oldest first, at most ``limit`` (default: the batch)."""
        if self.closed_reason is not None:
            raise SubscriberOverflow(self.closed_reason)
        samples = self._hub.slice(self._cursor, limit or self._hub.settings.batch)
        self._cursor += len(samples)
        self._pending = 0
        self._hub._room.set()
        if self._cursor >= self._hub.next_seq:
            self._ready.clear()
        return samples

    async def next_batch(self, timeout: float | None = None) -> list[Sample]:
        """Wait for samples and take them; ``[]`` when ``timeout`` passes first."""
        if not self._ready.is_set():
            try:
                # Not wait_for: on Python 3.11 it swallows a cancellation racing the wake-up.
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return []
        return self.take()

    def write_directly(self, form: Hashable, encode: Encode, write: WriteNow) -> None:
        """Let ``publish`` write new batches to this subscriber itself while it is caught up.

        ``form`` names the wire form (subscribers with the same form share one encoding of
        each batch); ``write`` starts a write and says whether the socket took it. The
        subscriber's task still serves the plain way (history, a full buffer) and calls
        :meth:`rejoin` after each drained write.
        """
        self._direct = (form, encode, write)

    def rejoin(self) -> None:
        """Back to the fast way, if caught up: called by the task after a drained write."""
        if self._direct is not None and self._cursor >= self._hub.next_seq:
            self._lagging = False

    @property
    def fast(self) -> bool:
        """Whether the hub writes to it directly now."""
        return self._direct is not None and not self._lagging

    def quiet_s(self) -> float:
        """Seconds since the hub last wrote to it directly (infinite when not on the fast
        way): a task that sends heartbeats when the stream is idle asks this, since the
        hub's direct writes do not wake it."""
        if not self.fast:
            return math.inf
        return time.monotonic() - self._hub.published_at

    def close(self) -> None:
        """Leave the hub (idempotent)."""
        self._hub._subscribers.discard(self)

    def _published(self, count: int) -> None:
        self._pending += count
        self._ready.set()
        if self._pending > self._hub.settings.queue_size:
            self._cut(f"fell behind by more than {self._hub.settings.queue_size} samples")
        elif self._cursor < self._hub.oldest_seq:
            self._cut("fell out of the resume history")

    def _cut(self, reason: str) -> None:
        self.closed_reason = reason
        self._hub.cut_count += 1
        self.close()
        if self._on_overflow is not None:
            self._on_overflow(reason)


class Hub:
    """Holds the current epoch's recent samples and fans new ones out to subscribers."""

    def __init__(self, epoch: str, settings: Settings | None = None) -> None:
        self.epoch = epoch
        self.settings = settings or Settings()
        # A ring indexed by seq % capacity: slicing costs O(samples taken), whatever the offset.
        self._ring: list[Sample | None] = [None] * self.settings.history
        self._subscribers: set[Subscription] = set()
        self.next_seq = 0
        #: ``time.monotonic()`` at the last publish.
        self.published_at = time.monotonic()
        #: Subscribers cut so far for falling behind.
        self.cut_count = 0
        #: Batch writes ``publish`` made itself (the fast path), over all subscribers.
        self.direct_writes = 0
        # Resolved by the next publish; replaced after. A future, not an Event: set-then-clear
        # would lose the wake-up of a waiter that had checked but not yet started waiting.
        self._published: asyncio.Future[None] | None = None
        self._room = asyncio.Event()
        # Positions of readers the hub does not feed itself (pollers), asked for on demand.
        self._watched: list[Callable[[], int | None]] = []

    @property
    def oldest_seq(self) -> int:
        """The oldest seq still held (``next_seq`` when nothing is held)."""
        return max(0, self.next_seq - len(self._ring))

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def fast_count(self) -> int:
        """Subscribers the hub writes to directly now (counted on demand)."""
        return sum(sub.fast for sub in self._subscribers)

    def publish(self, samples: Iterable[Sample]) -> None:
        """Append samples (consecutive seqs of this epoch) and wake every subscriber."""
        batch = list(samples)
        if not batch:
            return
        if batch[0].seq != self.next_seq or batch[0].epoch != self.epoch:
            raise ValueError(f"expected seq {self.next_seq} of {self.epoch}, got {batch[0]}")
        ring, capacity = self._ring, len(self._ring)
        # The batch's last ``capacity`` samples into their slots, by slices (its seqs are
        # consecutive): a loop per sample cost a tenth of a µs each at saturation.
        held = batch[-capacity:]
        at, count = held[0].seq % capacity, len(held)
        if at + count <= capacity:
            ring[at : at + count] = held
        else:
            ring[at:] = held[: capacity - at]
            ring[: count - (capacity - at)] = held[capacity - at :]
        first, self.next_seq = self.next_seq, batch[-1].seq + 1
        self.published_at = time.monotonic()
        encoded: dict[Hashable, bytes] = {}
        for sub in list(self._subscribers):
            direct = sub._direct
            if direct is not None and not sub._lagging and sub._cursor == first:
                form, encode, write = direct
                data = encoded.get(form)
                if data is None:
                    data = encoded[form] = encode(batch)
                try:
                    took = write(data)
                except Exception:
                    # A broken writer must not stop the stream for everyone: its task takes
                    # over (and meets the error itself).
                    log.warning(
                        "a direct write failed; back to the subscriber's task", exc_info=True
                    )
                    sub._direct, took = None, False
                if took:
                    sub._cursor = self.next_seq
                    sub.direct_writes += 1
                    self.direct_writes += 1
                    continue
                sub._lagging = True  # its task takes this batch and awaits the drain
            sub._published(len(batch))
        if self._published is not None:
            if not self._published.done():
                self._published.set_result(None)
            self._published = None

    def subscribe(
        self,
        token: ResumeToken | None = None,
        on_overflow: Callable[[str], None] | None = None,
    ) -> Subscription:
        """A new subscription placed by the resume rules; raises TooManyConnections at the limit."""
        if len(self._subscribers) >= self.settings.max_connections:
            raise TooManyConnections(f"connection limit {self.settings.max_connections} reached")
        sub = Subscription(self, self.start_seq(token), on_overflow)
        self._subscribers.add(sub)
        self._room.set()
        return sub

    def start_seq(self, token: ResumeToken | None) -> int:
        return start_seq(token, self.epoch, self.oldest_seq, self.next_seq)

    def slice(self, start: int, limit: int) -> list[Sample]:
        """Held samples from seq ``start`` on, at most ``limit`` of them."""
        start = max(start, self.oldest_seq)
        stop = min(self.next_seq, start + limit)
        if start >= stop:
            return []
        capacity = len(self._ring)
        a, b = start % capacity, (stop - 1) % capacity + 1
        held = self._ring[a:b] if a < b else self._ring[a:] + self._ring[:b]
        return held  # type: ignore[return-value]  # every slot in [oldest, next) is filled

    def watch(self, position: Callable[[], int | None]) -> None:
        """Count a reader the hub does not feed (a poller) among :meth:`lowest_reader`'s.

        ``position`` gives the next seq that reader lacks, None while it has asked nothing.
        Whoever moves it calls :meth:`room_made`.
        """
        self._watched.append(position)

    def room_made(self) -> None:
        """A reader moved on: wake a publisher waiting for room."""
        self._room.set()

    def lowest_reader(self) -> int | None:
        """The position of the reader furthest behind, None when nobody reads."""
        positions = [sub.cursor for sub in self._subscribers]
        positions += [p for watched in self._watched if (p := watched()) is not None]
        return min(positions) if positions else None

    async def wait_for_room(self, ahead: int) -> None:
        """Wait until some reader exists and none is more than ``ahead`` samples behind.

        Used by the saturating publisher (rate 0): it publishes as fast as readers take.
        """
        while True:
            lowest = self.lowest_reader()
            if lowest is not None and self.next_seq - lowest < ahead:
                return
            self._room.clear()
            await self._room.wait()

    async def wait_beyond(self, seq: int, timeout: float) -> bool:
        """Wait until a sample newer than ``seq`` exists (for long polling); say if one does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.next_seq <= seq + 1:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._published is None:
                self._published = loop.create_future()
            try:
                # shield: the future is shared by every waiter; one timing out must not
                # cancel it for the others. asyncio.timeout, not wait_for (see next_batch).
                async with asyncio.timeout(remaining):
                    await asyncio.shield(self._published)
            except TimeoutError:
                return False
        return True
