"""What crosses the process boundary to and from a client worker: typed, msgspec-encoded.

A :class:`ClientJob` travels to ``python -m experiments.worker`` as one JSON object on stdin;
the worker answers on stdout with JSON lines, each a :data:`WorkerLine`: one
:class:`WorkerReady` once every client has connected (or ``connect_timeout_s`` passed), then
one :class:`WorkerResult` once the run ends (duration over, every reading client reached
``count``, or the worker got SIGTERM). Both sides decode with these types, so a field that is
missing, misspelt or of the wrong type is an error at the boundary, not a ``KeyError`` later.

Client roles, so fault scenarios can mix them in one worker:

- ``normal``: reads as fast as samples come;
- ``slow``: reads at most ``read_rate_hz`` samples per second (a slow consumer);
- ``stopped``: connects once and never reads (the server's writes pile up).

The worker runs on the job's event loop (``loop``: ``asyncio`` or ``uvloop``, as the server
beside it), applies the job's garbage collector policy (``gc``, :mod:`transports.gc_policy`)
once its clients have connected, and reports the file limit it ran with (``nofile``: its
soft ``RLIMIT_NOFILE``, raised to the hard limit at start, as ``serve`` raises its own).
Given the server's clock endpoint (``clock_port``), it first estimates its clock's offset from
the server's (:mod:`experiments.clock_offset`), reads every latency on the server's clock and
reports the offset with its error bound (``clock``): latencies across hosts.

Latencies travel as one HDR histogram per role (:mod:`experiments.histogram` encodes,
merges and reads them), in microseconds: mergeable across clients, workers and repeats, and
a few hundred bytes however many samples they hold.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from experiments.clock_offset import ClockOffset
from model.ledger import DeliveryCounts, PosteriorError
from transports.gc_policy import GcName
from transports.loops import LoopName
from transports.settings import Settings

__all__ = [
    "ClientEvent",
    "ClientGroup",
    "ClientJob",
    "ClientOutcome",
    "ConnectFailed",
    "Connected",
    "Disconnected",
    "EngineRecord",
    "FailureKind",
    "Role",
    "ServerUsage",
    "Window",
    "WorkerLine",
    "WorkerReady",
    "WorkerResult",
    "decode_job",
    "decode_line",
    "encode",
]

Role = Literal["normal", "slow", "stopped"]


class ClientGroup(msgspec.Struct, frozen=True):
    """``count`` clients of one role."""

    count: int
    role: Role = "normal"
    #: For ``slow`` clients: the most samples per second they take.
    read_rate_hz: float = 0.0
    #: Connect here instead of the job's host and port (e.g. one fault proxy per client).
    port: int | None = None
    host: str | None = None


class ClientJob(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one worker process runs. ``host``/``port`` may point at a fault proxy."""

    transport: str
    host: str
    port: int
    groups: tuple[ClientGroup, ...]
    settings: Settings = msgspec.field(default_factory=Settings)
    #: The transport's own options (its ``Options`` struct, as JSON; ``{}``: its defaults).
    options: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))
    #: The source's parameters, so the ledger can check every value.
    seed: int = 0
    p: float = 0.72
    #: The measurement window starts ``warmup_s`` after ready and lasts ``duration_s``.
    warmup_s: float = 0.0
    #: None: run until ``count`` is reached or SIGTERM arrives.
    duration_s: float | None = None
    #: Each reading client stops after this many samples (None: no limit).
    count: int | None = None
    #: Keep (receive ns, epoch, seq, sent ns) of every sample, for fault figures and traces.
    keep_samples: bool = False
    #: Record the latency of each sample received in the window (the role histograms).
    keep_latencies: bool = True
    #: How long to wait for every client's first connection before saying ready anyway.
    connect_timeout_s: float = 30.0
    #: Clients' first connect attempts in flight at once in this worker (its start-up),
    #: each a bounded handshake: thousands started at once would queue behind each other in
    #: the server's accept queue past their connect timeout, and every retry adds to it.
    #: Reconnects later in the run are not held.
    connect_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 128
    #: Optional server pid: the worker samples its CPU, RSS and I/O at the window's edges.
    server_pid: int | None = None
    #: The server's own port (not a proxy's): its sockets' byte counters are read too.
    server_port: int | None = None
    #: The network namespace the server runs in (an emulated path), for those counters.
    server_netns: str | None = None
    #: The event loop the worker runs on (:mod:`transports.loops`).
    loop: LoopName = "asyncio"
    #: The collector's policy, applied once every client has connected, before ready.
    gc: GcName = "default"
    #: The server's clock endpoint (UDP, on ``host``; ``serve --clock-port``): the worker
    #: estimates its clock's offset from the server's before its clients start and reads
    #: every latency on the server's clock (None: one host, no correction).
    clock_port: int | None = None

    @property
    def clients(self) -> int:
        return sum(g.count for g in self.groups)


#: Why an attempt or a connection failed (see :mod:`transports.failures`).
FailureKind = Literal["unavailable", "refused", "not-this-protocol", "certificate", "lost"]


class Connected(msgspec.Struct, frozen=True, tag="connected"):
    at_ns: int
    connection: int
    #: The resume token offered: (epoch, seq), or None.
    token: tuple[str, int] | None = None
    #: The client's attempt number (every attempt counts, from 1).
    attempt: int = 1


class Disconnected(msgspec.Struct, frozen=True, tag="disconnected"):
    at_ns: int
    connection: int
    reason: str
    kind: FailureKind = "lost"
    #: Samples the connection delivered (0: it ended before streaming: a refusal, a storm).
    samples: int = 0


class ConnectFailed(msgspec.Struct, frozen=True, tag="connect_failed"):
    at_ns: int
    reason: str
    #: None: the client gave up (not this protocol, or its wait ran out).
    retry_in_s: float | None
    attempt: int = 1
    kind: FailureKind = "unavailable"


ClientEvent = Connected | Disconnected | ConnectFailed


class ClientOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one client of the worker observed."""

    index: int
    role: Role
    #: Every sample, duplicates included.
    received: int
    received_in_window: int
    #: The :class:`~model.ledger.DeliveryLedger` counts over the whole run.
    counts: DeliveryCounts
    posterior_error: PosteriorError
    epochs: list[str]
    events: list[ClientEvent]
    #: ``(receive ns, epoch, seq, sent ns)`` of every sample, when the job keeps samples.
    samples: list[tuple[int, str, int, int]] = []
    #: Why the client task died (None: it did not).
    error: str | None = None

    def connected_once(self) -> bool:
        return any(isinstance(e, Connected) for e in self.events)

    def disconnects(self) -> int:
        return sum(isinstance(e, Disconnected) for e in self.events)


class Window(msgspec.Struct, frozen=True):
    """The measurement window (``time.monotonic_ns()``); None when it never opened."""

    start_ns: int | None = None
    end_ns: int | None = None

    @property
    def seconds(self) -> float:
        if self.start_ns is None or self.end_ns is None:
            return 0.0
        return (self.end_ns - self.start_ns) / 1e9


class ServerUsage(msgspec.Struct, frozen=True, kw_only=True):
    """The server process over the window: CPU seconds, RSS at both edges, I/O deltas, and
    (with the server's port) the kernel's TCP payload counters of its sockets."""

    cpu_s: float
    rss_start: int
    rss_end: int
    read_chars: int
    write_chars: int
    tcp_sent: int | None = None
    tcp_received: int | None = None
    tcp_connections: int | None = None

    @property
    def wire_bytes(self) -> int | None:
        """TCP payload both ways on the server's sockets (None: unknown)."""
        if self.tcp_sent is None or self.tcp_received is None:
            return None
        return self.tcp_sent + self.tcp_received


class EngineRecord(msgspec.Struct, frozen=True, kw_only=True):
    """How a distributed engine ran a job (``--engine ray``, :mod:`experiments.ray_engine`).

    ``nodes`` are the distinct Ray node ids that ran actors (each actor reports its own),
    ``node_addresses`` their IP addresses, in the same order; ``clients_per_actor`` the
    share of each actor, in actor order (the result's clients are in that order too);
    ``clocks`` each actor's clock offset against the server (None: not measured).

    Ray's own cost over the window, measured by the driver with psutil on its own machine
    (``overhead_processes`` processes): CPU seconds of every Ray process there (GCS, raylet,
    agents, monitors, idle workers, the driver itself) plus, in each actor process, the CPU of
    the threads Ray had running before the job started (its core worker, gRPC and event-loop
    threads, not the job's own thread that runs the clients); RSS at the window's end of those
    processes, the actors' left out (their memory holds the clients). Not counted: Ray
    processes on other machines, and what Ray's threads in an actor share with the job (the
    GIL, caches).
    """

    name: Literal["ray"]
    version: str
    nodes: list[str]
    node_addresses: list[str]
    actors: int
    clients_per_actor: list[int]
    clocks: list[ClockOffset | None]
    overhead_cpu_s: float
    overhead_rss_bytes: int
    overhead_processes: int


class WorkerReady(msgspec.Struct, frozen=True, tag="ready"):
    at_ns: int
    connected: int
    clients: int


class WorkerResult(msgspec.Struct, frozen=True, kw_only=True, tag="result"):
    transport: str
    clients_requested: int
    ready_ns: int
    window: Window
    #: This worker's CPU seconds: over the window, and over the whole job.
    cpu_window_s: float
    cpu_total_s: float
    server: ServerUsage | None
    #: The settings the clients effectively ran with.
    settings: Settings
    #: Role -> HDR histogram (µs, encoded) of the latencies received in the window.
    latency: dict[str, str]
    clients: list[ClientOutcome]
    #: The worker's soft ``RLIMIT_NOFILE`` (raised to the hard limit; None: unlimited).
    nofile: int | None = None
    #: The event loop it ran on.
    loop: LoopName = "asyncio"
    #: The offset applied to every latency and its error bound (None: the job gave no
    #: ``clock_port``, the latencies are on this host's clock).
    clock: ClockOffset | None = None
    #: The engine that ran the clients when it was not the built-in worker (Ray: what ran
    #: where, and what Ray itself cost).
    engine: EngineRecord | None = None


WorkerLine = WorkerReady | WorkerResult

_job_decoder = msgspec.json.Decoder(ClientJob)
_line_decoder = msgspec.json.Decoder(WorkerLine)
_encoder = msgspec.json.Encoder()


def encode(obj: ClientJob | WorkerReady | WorkerResult) -> bytes:
    return _encoder.encode(obj)


def decode_job(data: bytes | str) -> ClientJob:
    return _job_decoder.decode(data)


def decode_line(data: bytes | str) -> WorkerLine:
    return _line_decoder.decode(data)
