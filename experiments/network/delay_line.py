"""A packet-level delay line on a TUN device, in the manner of Mahimahi's delay shell.

``python -m experiments.network.delay_line --tun NAME --delay-ms D`` creates the TUN device
``NAME`` in the namespace it runs in (the path starts it with ``ip netns exec <router>``),
prints ``ready NAME`` on stdout, then reads every IP packet the kernel routes into the device,
holds it ``D`` milliseconds and writes it back. Policy routing in the router namespace sends
packets arriving from the veths into the device and lets packets coming back out of it
(``iif`` the TUN) continue to their destination, so each direction passes once and TCP itself
sees the delay: connects, retransmission timers and every round trip.

The device is not persistent: when this process dies, for whatever reason, the kernel removes
it, and the path's fallback rule (``prohibit``) makes the path fail loudly instead of
silently skipping the delay. It also exits when its parent goes away, so a killed run leaves
no delay line behind.

:class:`DelayQueue` is the pure part (a FIFO with due times and a byte bound); :func:`run` is
the I/O loop around it.
"""

from __future__ import annotations

import argparse
import collections
import os
import select
import signal
import sys
import time
from collections.abc import Iterator, Sequence

__all__ = ["DelayQueue", "main", "run"]

#: Bound on the bytes held at once: generous for any profile (50 Mbit/s x 60 ms is 375 kB),
#: small enough that a flood cannot eat the machine.
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024
#: Packets read per wake-up before the due ones are written, so a flood cannot starve writes.
READ_BATCH = 256
#: Longest sleep while idle: how soon a dead parent is noticed.
IDLE_S = 0.25


class DelayQueue:
    """Packets in arrival order, each due ``delay_ns`` after it arrived.

    One constant delay keeps arrival order equal to due order, so a deque is enough (no heap).
    A packet that would push the held bytes over ``limit_bytes`` is dropped and counted, as a
    full router queue would.
    """

    def __init__(self, delay_ns: int, limit_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        if delay_ns < 0:
            raise ValueError("delay must not be negative")
        self.delay_ns = delay_ns
        self.limit_bytes = limit_bytes
        self.held_bytes = 0
        self.dropped = 0
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, now_ns: int, packet: bytes) -> bool:
        """Hold ``packet``; False (and counted) when the queue is full."""
        if self.held_bytes + len(packet) > self.limit_bytes:
            self.dropped += 1
            return False
        self._queue.append((now_ns + self.delay_ns, packet))
        self.held_bytes += len(packet)
        return True

    def pop_due(self, now_ns: int) -> Iterator[bytes]:
        """The packets due at ``now_ns``, oldest first (removed as they are yielded)."""
        queue = self._queue
        while queue and queue[0][0] <= now_ns:
            _, packet = queue.popleft()
            self.held_bytes -= len(packet)
            yield packet

    def next_due_ns(self) -> int | None:
        return self._queue[0][0] if self._queue else None


def _wait_s(queue: DelayQueue, now_ns: int) -> float:
    due = queue.next_due_ns()
    if due is None:
        return IDLE_S
    return min(IDLE_S, max(0.0, (due - now_ns) / 1e9))


def run(fd: int, queue: DelayQueue, parent_pid: int) -> None:
    """Forward packets on the TUN descriptor ``fd`` through ``queue`` until the parent dies."""
    os.set_blocking(fd, False)
    clock = time.monotonic_ns
    while os.getppid() == parent_pid:
        now = clock()
        for packet in queue.pop_due(now):
            try:
                os.write(fd, packet)
            except OSError:
                queue.dropped += 1  # a packet the kernel refuses back: lost, as on a wire
        readable, _, _ = select.select([fd], [], [], _wait_s(queue, clock()))
        if not readable:
            continue
        now = clock()
        for _ in range(READ_BATCH):
            try:
                packet = os.read(fd, 65_536)
            except BlockingIOError:
                break
            queue.push(now, packet)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.network.delay_line",
        description="Hold every IP packet routed into a new TUN device for a fixed delay.",
    )
    parser.add_argument("--tun", required=True, help="name of the TUN device to create")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    parser.add_argument("--queue-bytes", type=int, default=DEFAULT_QUEUE_BYTES)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    # The path owns this process's lifetime: a Ctrl-C meant for the harness must not take the
    # delay line down before the harness has torn the path down in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    import pytun  # type: ignore[import-not-found]  # no stubs; only this process needs it

    try:
        tun = pytun.TunTapDevice(name=args.tun, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        tun.mtu = 1500
        tun.up()
    except (pytun.Error, OSError) as exc:
        print(f"delay line: cannot create TUN device {args.tun}: {exc}", file=sys.stderr)
        return 2
    print(f"ready {tun.name}", flush=True)
    run(tun.fileno(), DelayQueue(round(args.delay_ms * 1e6), args.queue_bytes), parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
