"""``python -m experiments.client_worker``: run many stream clients in one process.

Reads a :class:`~experiments.jobs.ClientJob` as JSON (from argv[1], or stdin when no argument
is given), runs ``job.clients`` clients of the job's roles with the real
:class:`transports.client.StreamClient` (``normal`` and ``slow``) or one bare
``transport.connect`` (``stopped``), and writes JSON lines to stdout:

``{"type": "ready", "at_ns": T, "connected": K, "clients": N}``
    every client has connected once (or ``connect_timeout_s`` passed: K < N then). The
    measurement window opens ``warmup_s`` later.

``{"type": "result", ...}``
    after the window closes (``duration_s`` over, every reading client reached ``count``, or
    SIGTERM). Keys: ``ready_ns``, ``window`` (``start_ns``, ``end_ns``; null if it never
    opened), ``cpu_s`` (this process: ``window``, ``total``), ``server`` (null, or the server
    process's ``cpu_s``, ``rss_start``, ``rss_end``, ``read_chars``, ``write_chars`` and, with
    ``server_port``, ``tcp_sent``/``tcp_received`` (kernel socket byte counters, see
    :mod:`experiments.sockstats`) deltas over the window, sampled here at the window's edges
    so they line up with the sample counts),
    and ``clients``: one object per client with ``index``, ``role``, ``received`` (all
    samples, duplicates included), ``received_in_window``, ``counts`` (the
    :class:`model.ledger.DeliveryLedger` counts over the whole run), ``posterior_error``,
    ``epochs``, ``events`` (``connected``/``disconnected``/``connect_failed`` with ``at_ns``),
    ``latencies_ns`` (receive ``time.monotonic_ns()`` minus ``sample.sent_ns`` for each sample
    received inside the window), ``samples`` (``[recv_ns, epoch, seq]`` for every sample, when
    ``keep_samples``) and ``error`` (null, or why the client task died).

``time.monotonic_ns()`` is one clock for every process of a host, so latencies across the
server and worker processes are comparable. SIGINT exits quietly with 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import signal
import sys
import time
from dataclasses import asdict
from typing import Any

import psutil

from experiments.jobs import ClientGroup, ClientJob
from experiments.sockstats import tcp_bytes
from model.errors import StreamError
from model.ledger import DeliveryLedger
from model.source import BernoulliSource
from transports.backoff import Backoff
from transports.client import ClientEvent, Connected, ConnectFailed, Disconnected, StreamClient
from transports.contract import Transport
from transports.registry import get

__all__ = ["ServerProbe", "cpu_seconds", "main", "run_job"]


class _Window:
    """The measurement window, shared by every client of the worker."""

    __slots__ = ("end_ns", "open", "start_ns")

    def __init__(self) -> None:
        self.open = False
        self.start_ns: int | None = None
        self.end_ns: int | None = None


def _event_dict(event: ClientEvent) -> dict[str, Any]:
    if isinstance(event, Connected):
        token = None if event.token is None else [event.token.epoch, event.token.since]
        return {
            "type": "connected",
            "at_ns": event.at_ns,
            "connection": event.connection,
            "token": token,
        }
    if isinstance(event, Disconnected):
        return {
            "type": "disconnected",
            "at_ns": event.at_ns,
            "connection": event.connection,
            "reason": event.reason,
        }
    return {
        "type": "connect_failed",
        "at_ns": event.at_ns,
        "reason": event.reason,
        "retry_in_s": event.retry_in_s,
    }


class _Client:
    """One client of the worker and everything it observed."""

    def __init__(
        self,
        index: int,
        group: ClientGroup,
        transport: Transport,
        job: ClientJob,
        window: _Window,
        connected: asyncio.Event,
    ) -> None:
        self.index, self.group, self.transport, self.job = index, group, transport, job
        self.window = window
        self.connected = connected
        self.ledger = DeliveryLedger(BernoulliSource(job.p, job.seed))
        self.events: list[dict[str, Any]] = []
        self.latencies: list[int] = []
        self.samples: list[tuple[int, str, int]] = []
        self.received = 0
        self.received_in_window = 0
        self.error: str | None = None
        self.done = False
        #: Set at the end of the run: the read loop returns at its next sample.
        self.stopping = False

    def _on_event(self, event: ClientEvent) -> None:
        self.events.append(_event_dict(event))
        if isinstance(event, Connected):
            self.connected.set()

    async def run(self) -> None:
        try:
            if self.group.role == "stopped":
                await self._run_stopped()
            else:
                await self._run_reading()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported in the result, not lost with the task
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done = True

    async def _run_reading(self) -> None:
        job, window = self.job, self.window
        client = StreamClient(
            self.transport,
            job.host,
            self.group.port or job.port,
            job.settings,
            on_event=self._on_event,
        )
        ledger, latencies, samples = self.ledger, self.latencies, self.samples
        keep_latencies, keep_samples = job.keep_latencies, job.keep_samples
        slow_rate = self.group.read_rate_hz if self.group.role == "slow" else 0.0
        paced_from = time.monotonic()
        count = job.count
        clock = time.monotonic_ns
        # aclosing: leaving the loop closes the client's generators here, in order, rather
        # than at interpreter shutdown (httpx's would complain of running twice).
        async with contextlib.aclosing(client.__aiter__()) as stream:
            async for sample in stream:
                if self.stopping:
                    return
                now = clock()
                self.received += 1
                ledger.record(sample, client.connection)
                if window.open:
                    self.received_in_window += 1
                    if keep_latencies:
                        latencies.append(now - sample.sent_ns)
                if keep_samples:
                    samples.append((now, sample.epoch, sample.seq))
                if count is not None and self.received >= count:
                    return
                if slow_rate > 0:
                    # A slow consumer: never more than read_rate_hz samples per second.
                    ahead = paced_from + self.received / slow_rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)

    async def _run_stopped(self) -> None:
        # Connect once (retrying until the server answers) and never read.
        settings = self.transport.settings(self.job.settings)
        backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s, settings.backoff_jitter)
        while True:
            try:
                port = self.group.port or self.job.port
                async with self.transport.connect(self.job.host, port, None, settings):
                    self._on_event(Connected(time.monotonic_ns(), 1, None))
                    await asyncio.Event().wait()  # until cancelled at the end of the run
            except StreamError as exc:
                delay = backoff.next_delay()
                self._on_event(ConnectFailed(time.monotonic_ns(), str(exc), delay))
                await asyncio.sleep(delay)

    def result(self) -> dict[str, Any]:
        error = self.ledger.posterior_error()
        return {
            "index": self.index,
            "role": self.group.role,
            "received": self.received,
            "received_in_window": self.received_in_window,
            "counts": asdict(self.ledger.counts()),
            "posterior_error": asdict(error),
            "epochs": self.ledger.epochs,
            "events": self.events,
            "latencies_ns": self.latencies,
            "samples": [list(s) for s in self.samples],
            "error": self.error,
        }


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


class ServerProbe:
    """CPU, RSS and character I/O of the server process at the window's edges."""

    def __init__(self, pid: int, port: int | None = None) -> None:
        self.proc = psutil.Process(pid)
        self.port = port
        self.start: dict[str, float] | None = None
        self.end: dict[str, float] | None = None

    def snapshot(self) -> dict[str, float] | None:
        try:
            with self.proc.oneshot():
                io = self.proc.io_counters()
                snap = {
                    "cpu_s": cpu_seconds(self.proc),
                    "rss": float(self.proc.memory_info().rss),
                    "read_chars": float(io.read_chars),
                    "write_chars": float(io.write_chars),
                }
        except psutil.Error:
            return None  # the server is gone (a fault scenario killed it)
        wire = tcp_bytes(self.port) if self.port is not None else None
        if wire is not None:
            snap["tcp_sent"] = float(wire.sent)
            snap["tcp_received"] = float(wire.received)
            snap["tcp_connections"] = float(wire.connections)
        return snap

    def delta(self) -> dict[str, float] | None:
        if self.start is None or self.end is None:
            return None
        s, e = self.start, self.end
        out = {
            "cpu_s": e["cpu_s"] - s["cpu_s"],
            "rss_start": s["rss"],
            "rss_end": e["rss"],
            "read_chars": e["read_chars"] - s["read_chars"],
            "write_chars": e["write_chars"] - s["write_chars"],
        }
        if "tcp_sent" in s and "tcp_sent" in e:
            out["tcp_sent"] = e["tcp_sent"] - s["tcp_sent"]
            out["tcp_received"] = e["tcp_received"] - s["tcp_received"]
            out["tcp_connections"] = e["tcp_connections"]
        return out


async def _end(clients: list[_Client], tasks: list[asyncio.Task[None]]) -> None:
    """Stop every client task, however deep in a library it is waiting."""
    for c in clients:
        c.stopping = True
    # Cancel again while any task survives: on Python 3.11 ``asyncio.wait_for`` (used by the
    # shared read deadline) can swallow a cancellation that races with a completed read, and
    # a client on a busy stream would then read on forever.
    for _ in range(100):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=0.05)
    raise RuntimeError(f"{sum(not t.done() for t in tasks)} client tasks ignore cancellation")


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def run_job(job: ClientJob, stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Run ``job`` in this event loop; print the ready line; return the result dict."""
    transport = get(job.transport)
    stop = stop or asyncio.Event()
    window = _Window()
    me = psutil.Process()
    cpu_at_start = cpu_seconds(me)
    server = ServerProbe(job.server_pid, job.server_port) if job.server_pid else None
    clients: list[_Client] = []
    for group in job.groups:
        for _ in range(group.count):
            clients.append(_Client(len(clients), group, transport, job, window, asyncio.Event()))
    tasks = [asyncio.create_task(c.run()) for c in clients]
    stopping = asyncio.create_task(stop.wait())
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(job.connect_timeout_s):
                for c in clients:
                    await asyncio.wait(
                        {asyncio.create_task(c.connected.wait()), stopping},
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if stop.is_set():
                        break
        ready_ns = time.monotonic_ns()
        _emit(
            {
                "type": "ready",
                "at_ns": ready_ns,
                "connected": sum(c.connected.is_set() for c in clients),
                "clients": len(clients),
            }
        )
        readers = [t for t, c in zip(tasks, clients, strict=True) if c.group.role != "stopped"]

        async def until(seconds: float | None) -> None:
            # Wait for ``seconds``, SIGTERM, or (with a count) every reader finishing.
            waits: set[asyncio.Future[Any]] = {stopping}
            if seconds is not None:
                waits.add(asyncio.ensure_future(asyncio.sleep(seconds)))
            if job.count is not None and readers:
                waits.add(asyncio.ensure_future(asyncio.wait(readers)))
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for f in pending:
                if f is not stopping:
                    f.cancel()

        if job.warmup_s > 0:
            await until(job.warmup_s)
        cpu_at_window = cpu_at_start
        if not stop.is_set() and not all(c.done for c in clients if c.group.role != "stopped"):
            if server is not None:
                server.start = server.snapshot()
            cpu_at_window = cpu_seconds(me)
            window.start_ns = time.monotonic_ns()
            window.open = True
            await until(job.duration_s)
            window.open = False
            window.end_ns = time.monotonic_ns()
            if server is not None:
                server.end = server.snapshot()
        cpu_at_end = cpu_seconds(me)
    finally:
        stopping.cancel()
        await _end(clients, tasks)
    return {
        "type": "result",
        "transport": job.transport,
        "clients_requested": len(clients),
        "ready_ns": ready_ns,
        "window": {"start_ns": window.start_ns, "end_ns": window.end_ns},
        "cpu_s": {"window": cpu_at_end - cpu_at_window, "total": cpu_seconds(me) - cpu_at_start},
        "server": server.delta() if server is not None else None,
        "settings": asdict(transport.settings(job.settings)),
        "clients": [c.result() for c in clients],
    }


async def _main_async(job: ClientJob) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    _emit(await run_job(job, stop))


def main(argv: list[str] | None = None) -> int:
    # ``kill -USR1 PID`` prints every thread's stack to stderr: how a hung worker is diagnosed.
    faulthandler.register(signal.SIGUSR1)
    args = sys.argv[1:] if argv is None else argv
    text = args[0] if args else sys.stdin.read()
    if not text.strip():
        return 0  # a spare worker dismissed without a job
    try:
        job = ClientJob.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        print(f"python -m experiments.client_worker: bad job: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_main_async(job))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
