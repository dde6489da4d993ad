"""``python -m experiments.worker``: run many stream clients in one process.

Reads a :class:`~experiments.worker.schema.ClientJob` as JSON (from argv[1], or stdin when no
argument is given), runs ``job.clients`` clients of the job's roles with the real
:class:`transports.client.StreamClient` (``normal`` and ``slow``) or one bare
``transport.connect`` (``stopped``), and writes one
:class:`~experiments.worker.schema.WorkerReady` line once every client has connected, then one
:class:`~experiments.worker.schema.WorkerResult` line when the window closes (see the schema
module for every field).

The worker runs on the job's event loop (``job.loop``, :mod:`transports.loops`), applies the
job's garbage collector policy (``job.gc``, :mod:`transports.gc_policy`) once its clients have
connected, just before its ready line, and first raises its soft ``RLIMIT_NOFILE`` to the hard
limit (a fan-out of thousands of clients needs a descriptor each), reporting both in its result.

``time.monotonic_ns()`` is one clock for every process of a host, so latencies across the
server and worker processes are comparable. SIGINT exits quietly with 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import psutil

from experiments.clock_offset import ClockOffset, estimate_offset
from experiments.histogram import encode_latencies
from experiments.worker.probe import ServerProbe, cpu_seconds
from experiments.worker.schema import (
    ClientEvent,
    ClientGroup,
    ClientJob,
    ClientOutcome,
    Connected,
    ConnectFailed,
    Disconnected,
    Window,
    WorkerReady,
    WorkerResult,
    decode_job,
    encode,
)
from model.errors import StreamError
from model.ledger import DeliveryLedger
from model.sample import Sample, SampleRun
from model.source import BernoulliSource
from transports import client as stream
from transports.admission import Admission
from transports.backoff import Backoff
from transports.contract import Transport
from transports.failures import failure_kind
from transports.gc_policy import apply_gc, collector_held
from transports.limits import fd_limit, raise_fd_limit
from transports.loops import run as run_on_loop
from transports.loops import running_loop_name
from transports.options import Options
from transports.registry import get

__all__ = ["main", "run_job"]


class _Window:
    """The measurement window, shared by every client of the worker."""

    __slots__ = ("end_ns", "open", "start_ns")

    def __init__(self) -> None:
        self.open = False
        self.start_ns: int | None = None
        self.end_ns: int | None = None


def event_of(event: stream.ClientEvent) -> ClientEvent:
    """The shared client's event as the worker reports it."""
    if isinstance(event, stream.Connected):
        token = None if event.token is None else (event.token.epoch, event.token.since)
        return Connected(event.at_ns, event.connection, token, event.attempt)
    if isinstance(event, stream.Disconnected):
        return Disconnected(event.at_ns, event.connection, event.reason, event.kind, event.samples)
    return ConnectFailed(event.at_ns, event.reason, event.retry_in_s, event.attempt, event.kind)


class _Client:
    """One client of the worker and everything it observed."""

    def __init__(
        self,
        index: int,
        group: ClientGroup,
        transport: Transport,
        options: Options,
        job: ClientJob,
        window: _Window,
        latencies: list[int],
        admission: Admission,
    ) -> None:
        self.index, self.group, self.transport, self.job = index, group, transport, job
        #: Shared by the worker's clients: their first connect attempts in flight at once.
        self.admission = admission
        self.options = options
        self.window = window
        self.connected = asyncio.Event()
        self.ledger = DeliveryLedger(BernoulliSource(job.p, job.seed))
        self.events: list[ClientEvent] = []
        #: The latencies of this client's role (shared by the role's clients).
        self.latencies = latencies
        self.samples: list[tuple[int, str, int, int]] = []
        self.received = 0
        self.received_in_window = 0
        self.error: str | None = None
        self.done = False
        #: The server's clock minus this host's (``run_job`` sets it from the job's clock
        #: endpoint): a latency is ``local now + clock_offset_ns - sent_ns``.
        self.clock_offset_ns = 0
        #: Set at the end of the run: the read loop returns at its next sample.
        self.stopping = False

    def _on_event(self, event: stream.ClientEvent) -> None:
        self.events.append(event_of(event))
        if isinstance(event, stream.Connected):
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
        job = self.job
        client = stream.StreamClient(
            self.transport,
            self.group.host or job.host,
            self.group.port or job.port,
            job.settings,
            self.options,
            on_event=self._on_event,
            admission=self.admission,
        )
        slow_rate = self.group.read_rate_hz if self.group.role == "slow" else 0.0
        paced_from = time.monotonic()
        count = job.count
        clock = time.monotonic_ns
        offset = self.clock_offset_ns
        # aclosing: leaving the loop closes the client's generators here, in order, rather
        # than at interpreter shutdown (httpx's would complain of running twice).
        async with contextlib.aclosing(client.batches()) as batches_in:
            async for batch in batches_in:
                if self.stopping:
                    return
                if count is not None and self.received + len(batch) > count:
                    batch = batch[: count - self.received]
                if slow_rate > 0:
                    # A slow consumer: never more than read_rate_hz samples per second,
                    # each taken in its turn.
                    for sample in batch:
                        self._take([sample], clock() + offset, client.connection, None)
                        ahead = paced_from + self.received / slow_rate - time.monotonic()
                        if ahead > 0:
                            await asyncio.sleep(ahead)
                else:
                    # One read's samples arrived together: one receipt time for all of them,
                    # and the ledger accounts for them at once.
                    self._take(batch, clock() + offset, client.connection, client.run)
                if count is not None and self.received >= count:
                    return

    def _take(
        self, batch: Sequence[Sample], now: int, connection: int, run: SampleRun | None
    ) -> None:
        """Account for ``batch``, received at ``now`` (server clock), over ``connection``;
        ``run``: the run it makes if known (:attr:`StreamClient.run`)."""
        if len(batch) == 1:  # a transport that reads a sample at a time: no list work
            sample = batch[0]
            self.received += 1
            self.ledger.record(sample, connection)
            if self.window.open:
                self.received_in_window += 1
                if self.job.keep_latencies:
                    self.latencies.append(now - sample.sent_ns)
            if self.job.keep_samples:
                self.samples.append((now, sample.epoch, sample.seq, sample.sent_ns))
            return
        self.received += len(batch)
        self.ledger.record_batch(batch, connection, run)
        if self.window.open:
            self.received_in_window += len(batch)
            if self.job.keep_latencies:
                self.latencies.extend([now - sample.sent_ns for sample in batch])
        if self.job.keep_samples:
            self.samples.extend([(now, s.epoch, s.seq, s.sent_ns) for s in batch])

    async def _run_stopped(self) -> None:
        # Connect once (retrying until the server answers) and never read.
        settings = self.transport.settings(self.job.settings)
        backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s, settings.backoff_jitter)
        host, port = self.group.host or self.job.host, self.group.port or self.job.port
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.transport.connect(host, port, None, settings, self.options):
                    self._on_event(stream.Connected(time.monotonic_ns(), 1, None, attempt))
                    await asyncio.Event().wait()  # until cancelled at the end of the run
            except StreamError as exc:
                delay = backoff.next_delay()
                kind = failure_kind(exc)
                failed = stream.ConnectFailed(time.monotonic_ns(), str(exc), delay, attempt, kind)
                self._on_event(failed)
                await asyncio.sleep(delay)

    def outcome(self) -> ClientOutcome:
        return ClientOutcome(
            index=self.index,
            role=self.group.role,
            received=self.received,
            received_in_window=self.received_in_window,
            counts=self.ledger.counts(),
            posterior_error=self.ledger.posterior_error(),
            epochs=list(self.ledger.epochs),
            events=self.events,
            samples=self.samples,
            error=self.error,
        )


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


def _emit(line: WorkerReady | WorkerResult) -> None:
    sys.stdout.buffer.write(encode(line) + b"\n")
    sys.stdout.flush()


async def run_job(
    job: ClientJob,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[WorkerReady], Awaitable[None] | None] = _emit,
) -> WorkerResult:
    """Run ``job`` in this event loop; say the ready line (``on_ready``: print it); return
    the result. An ``on_ready`` that returns an awaitable holds the warm-up and window back
    until it completes (a Ray actor waits for the driver to let every actor go at once)."""
    transport = get(job.transport)
    options = msgspec.json.decode(job.options, type=type(transport.options))
    stop = stop or asyncio.Event()
    window = _Window()
    me = psutil.Process()
    cpu_at_start = cpu_seconds(me)
    server = (
        ServerProbe(job.server_pid, job.server_port, job.server_netns) if job.server_pid else None
    )
    by_role: dict[str, list[int]] = {}
    clients: list[_Client] = []
    admission = Admission(job.connect_concurrency)
    for group in job.groups:
        latencies = by_role.setdefault(group.role, [])
        for _ in range(group.count):
            clients.append(
                _Client(len(clients), group, transport, options, job, window, latencies, admission)
            )
    # Across hosts, read every latency on the server's clock: the offset is measured before
    # any client loads the path (a short round trip makes a tight bound).
    clock: ClockOffset | None = None
    if job.clock_port is not None:
        clock = await estimate_offset(job.host, job.clock_port)
        for c in clients:
            c.clock_offset_ns = clock.offset_ns
    tasks = [asyncio.create_task(c.run()) for c in clients]
    stopping = asyncio.create_task(stop.wait())
    try:
        # Connecting is start-up: with the collector held off (see transports.gc_policy).
        with collector_held(), contextlib.suppress(TimeoutError):
            async with asyncio.timeout(job.connect_timeout_s):
                for c, task in zip(clients, tasks, strict=True):
                    # A client that gave up for good (a certificate it refuses, a server
                    # that does not speak the protocol) will never connect: not waited for.
                    connected = asyncio.create_task(c.connected.wait())
                    try:
                        await asyncio.wait(
                            {connected, task, stopping}, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        connected.cancel()
                    if stop.is_set():
                        break
        apply_gc(job.gc)  # after start-up, as the server beside it does
        ready_ns = time.monotonic_ns()
        held = on_ready(
            WorkerReady(ready_ns, sum(c.connected.is_set() for c in clients), len(clients))
        )
        if held is not None:
            await held
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
    return WorkerResult(
        transport=job.transport,
        clients_requested=len(clients),
        ready_ns=ready_ns,
        window=Window(window.start_ns, window.end_ns),
        cpu_window_s=cpu_at_end - cpu_at_window,
        cpu_total_s=cpu_seconds(me) - cpu_at_start,
        server=server.usage() if server is not None else None,
        settings=transport.settings(job.settings),
        latency={role: encode_latencies(ns) for role, ns in by_role.items() if ns},
        clients=[c.outcome() for c in clients],
        nofile=fd_limit(),
        loop=running_loop_name(),
        clock=clock,
    )


async def _main_async(job: ClientJob) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    _emit(await run_job(job, stop))


def main(argv: list[str] | None = None) -> int:
    # ``kill -USR1 PID`` prints every thread's stack to stderr: how a hung worker is diagnosed.
    faulthandler.register(signal.SIGUSR1)
    args = sys.argv[1:] if argv is None else argv
    if args == ["--spare"]:
        # A spare, started ahead of need: say that the imports are done, then wait for a job.
        print("spare", flush=True)
        args = []
    text = args[0] if args else sys.stdin.read()
    if not text.strip():
        return 0  # a spare worker dismissed without a job
    try:
        job = decode_job(text)
    except msgspec.ValidationError as exc:
        print(f"python -m experiments.worker: bad job: {exc}", file=sys.stderr)
        return 2
    raise_fd_limit()
    try:
        run_on_loop(_main_async(job), job.loop)
    except KeyboardInterrupt:
        return 130
    return 0
