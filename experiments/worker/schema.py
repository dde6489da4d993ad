"""The job a client worker runs and the result it hands back (pure data, JSON both ways).

A :class:`ClientJob` travels to ``python -m experiments.client_worker`` as one JSON object on
stdin; the worker answers on stdout with JSON lines: ``{"type": "ready", ...}`` once every
client has connected (or ``connect_timeout_s`` passed), then ``{"type": "result", ...}`` once
the run ends (duration over, every client reached ``count``, or the worker got SIGTERM).

The result (a plain dict, described in :mod:`experiments.client_worker`) holds per client the
ledger counts, posterior error, latencies of the samples received inside the measurement
window, connection events and optionally every sample's (receive time, epoch, seq).

Client roles, so fault scenarios can mix them in one worker:

- ``normal``: reads as fast as samples come;
- ``slow``: reads at most ``read_rate_hz`` samples per second (a slow consumer);
- ``stopped``: connects once and never reads (the server's writes pile up).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from transports.settings import Settings

__all__ = ["ClientGroup", "ClientJob", "Role"]

Role = Literal["normal", "slow", "stopped"]


@dataclass(frozen=True, slots=True)
class ClientGroup:
    """``count`` clients of one role."""

    count: int
    role: Role = "normal"
    #: For ``slow`` clients: the most samples per second they take.
    read_rate_hz: float = 0.0
    #: Connect here instead of the job's port (e.g. one fault proxy per group).
    port: int | None = None


@dataclass(frozen=True, slots=True)
class ClientJob:
    """What one worker process runs. ``host``/``port`` may point at a fault proxy."""

    transport: str
    host: str
    port: int
    groups: tuple[ClientGroup, ...]
    settings: Settings = field(default_factory=Settings)
    #: The source's parameters, so the ledger can check every value.
    seed: int = 0
    p: float = 0.72
    #: The measurement window starts ``warmup_s`` after ready and lasts ``duration_s``.
    warmup_s: float = 0.0
    #: None: run until ``count`` is reached or SIGTERM arrives.
    duration_s: float | None = None
    #: Each reading client stops after this many samples (None: no limit).
    count: int | None = None
    #: Keep (receive ns, epoch, seq) of every sample, for timeline plots.
    keep_samples: bool = False
    #: Keep the latency of each sample received in the window (pooled percentiles need them).
    keep_latencies: bool = True
    #: How long to wait for every client's first connection before saying ready anyway.
    connect_timeout_s: float = 30.0
    #: Optional server pid: the worker samples its CPU, RSS and I/O at the window's edges.
    server_pid: int | None = None
    #: The server's own port (not a proxy's): its sockets' byte counters are read too.
    server_port: int | None = None

    @property
    def clients(self) -> int:
        return sum(g.count for g in self.groups)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ClientJob:
        data: dict[str, Any] = json.loads(text)
        data["groups"] = tuple(ClientGroup(**g) for g in data["groups"])
        data["settings"] = Settings(**data["settings"])
        return cls(**data)
