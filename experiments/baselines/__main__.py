"""``python -m experiments.baselines serve|read NAME``: one side of a minimal pusher.

``serve NAME [--host H] [--port P] [--seed S] [--p P]`` announces itself with the same JSON
line as ``python -m transports serve --ready-json`` (so the harness's readiness check
applies) and pushes at saturation to every reader until SIGTERM.

``read NAME --port P --epoch E [--warmup S] [--duration S] [--seed S] [--server-pid PID]``
reads for warm-up + window and prints one :class:`~experiments.baselines.process.BaselineResult`
as JSON.

Both take ``--loop asyncio|uvloop`` (:mod:`transports.loops`), the event loop they run on; the
server's announcement names it, as ``serve``'s does. Both take ``--gc default|freeze``
(:mod:`transports.gc_policy`), applied after start-up: the server just before it announces
itself, the reader just before it starts reading.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import secrets
import signal
import sys
import time

import msgspec
import psutil

from experiments.baselines import PUSHERS
from experiments.baselines.process import BaselineResult
from experiments.baselines.sink import Sink
from experiments.worker.probe import ServerProbe, cpu_seconds
from model.source import BernoulliSource
from transports.announce import Announcement, Ready
from transports.gc_policy import DEFAULT_GC, GCS, apply_gc
from transports.loops import DEFAULT_LOOP, LOOPS, running_loop_name
from transports.loops import run as run_on_loop

__all__ = ["main"]


async def _serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(PUSHERS[args.name].module)
    epoch = secrets.token_hex(4)
    port, stop = await module.start_server(
        args.host, args.port, BernoulliSource(args.p, args.seed), epoch
    )
    collector = apply_gc(args.gc)  # after start-up, as ``serve`` does
    print(
        f"serving pusher-{args.name} on {args.host}:{port} epoch={epoch} rate=0/s "
        f"p={args.p} seed={args.seed} {collector.describe()}",
        flush=True,
    )
    ready = Announcement(
        Ready(f"pusher-{args.name}", args.host, port, epoch, os.getpid(), running_loop_name())
    )
    print(ready.encode(), flush=True)
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    await stop()
    return 0


async def _read(args: argparse.Namespace) -> BaselineResult:
    module = importlib.import_module(PUSHERS[args.name].module)
    sink = Sink(BernoulliSource(args.p, args.seed))
    me = psutil.Process()
    probe = ServerProbe(args.server_pid, args.port, args.server_netns) if args.server_pid else None
    apply_gc(args.gc)
    reading = asyncio.create_task(module.read(args.host, args.port, args.epoch, sink))
    error: str | None = None
    window = 0.0
    cpu = 0.0
    # The sleeps time the warm-up and the window (what is measured), not synchronisation.
    done, _ = await asyncio.wait({reading}, timeout=args.warmup)
    if not done:
        if probe is not None:
            probe.start = probe.snapshot()
        cpu0, t0 = cpu_seconds(me), time.monotonic()
        sink.window_open = True
        done, _ = await asyncio.wait({reading}, timeout=args.duration)
        sink.window_open = False
        window, cpu = time.monotonic() - t0, cpu_seconds(me) - cpu0
        if probe is not None:
            probe.end = probe.snapshot()
    if done:
        exc = reading.exception()
        error = f"{type(exc).__name__}: {exc}" if exc else "the reader stopped early"
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    return BaselineResult(
        pusher=args.name,
        samples_in_window=sink.in_window,
        received=sink.received,
        window_s=window,
        cpu_s=cpu,
        server=probe.usage() if probe is not None else None,
        counts=sink.ledger.counts(),
        error=error,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.baselines")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("serve", "read"):
        p = sub.add_parser(command)
        p.add_argument("name", choices=sorted(PUSHERS))
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=0)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--p", type=float, default=0.72)
        p.add_argument("--loop", choices=LOOPS, default=DEFAULT_LOOP)
        p.add_argument("--gc", choices=GCS, default=DEFAULT_GC)
    read = sub.choices["read"]
    read.add_argument("--epoch", required=True)
    read.add_argument("--warmup", type=float, default=0.5)
    read.add_argument("--duration", type=float, default=2.0)
    read.add_argument("--server-pid", type=int)
    read.add_argument("--server-netns", help="the network namespace the server runs in")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return run_on_loop(_serve(args), args.loop)
        result = run_on_loop(_read(args), args.loop)
        sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")
        sys.stdout.flush()
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
