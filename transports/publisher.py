"""The server's clock: publishes the source's samples into the hub at a fixed rate.

Each sample carries the time it was *due* on the schedule (``t0 + seq / rate``), not the time
it was sent, so a server that falls behind shows its lag in every latency measured from it
(open-loop, no coordinated omission). Rate 0 saturates instead: samples are published as fast
as the slowest reader takes them, stamped when published.
"""

from __future__ import annotations

import asyncio
import math
import time
from itertools import repeat

from model.sample import Sample
from model.source import BernoulliSource
from transports.hub import Hub

__all__ = ["MAX_RATE_HZ", "MIN_RATE_HZ", "check_rate", "publish_forever"]

#: Most samples created in one step, so a lagging server still lets its connections run.
_STEP = 1_000
#: Rates a schedule can hold: below a sample a day the period overflows nothing but means
#: nothing either, and at 1e-300 it is infinite; above 10 M/s no server here keeps up.
MIN_RATE_HZ = 1 / 86_400
MAX_RATE_HZ = 10_000_000.0


def check_rate(rate_hz: float) -> float:
    """``rate_hz`` if a publisher can keep to it (0: saturate); ValueError saying why not."""
    if not math.isfinite(rate_hz) or not (rate_hz == 0 or MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ):
        raise ValueError(
            f"rate must be 0 (as fast as read) or between {MIN_RATE_HZ:.3g} and "
            f"{MAX_RATE_HZ:g} samples/s, got {rate_hz!r}"
        )
    return rate_hz


async def publish_forever(hub: Hub, source: BernoulliSource, rate_hz: float) -> None:
    """Publish until cancelled."""
    check_rate(rate_hz)
    if rate_hz == 0:
        await _saturate(hub, source)
        return
    period_ns = 1e9 / rate_hz
    t0 = time.monotonic_ns()
    epoch = hub.epoch
    while True:
        now = time.monotonic_ns()
        due = int((now - t0) / period_ns) + 1  # samples 0 .. due-1 are due by now
        first = hub.next_seq
        last = min(due, first + _STEP)
        if last > first:
            hub.publish(
                Sample(epoch, seq, source.value(seq), t0 + int(seq * period_ns))
                for seq in range(first, last)
            )
        wake = t0 + int(hub.next_seq * period_ns)
        await asyncio.sleep(max(0.0, (wake - time.monotonic_ns()) / 1e9))


async def _saturate(hub: Hub, source: BernoulliSource) -> None:
    epoch = hub.epoch
    # Up to the queue bound ahead of the slowest reader: never enough to cut it, and enough
    # for a poller to get full batches.
    ahead = max(1, hub.settings.queue_size)
    while True:
        await hub.wait_for_room(ahead)
        first = hub.next_seq
        stop = first + min(_STEP, ahead)
        now = time.monotonic_ns()
        # Whole-batch columns mapped into samples, not a generator calling value() per sample:
        # 0.3 us less per sample, over a tenth of the tcp server's CPU at saturation.
        hub.publish(
            map(Sample, repeat(epoch), range(first, stop), source.values(first, stop), repeat(now))
        )
        await asyncio.sleep(0)  # let the connections write what was just published
