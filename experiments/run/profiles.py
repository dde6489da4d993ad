"""Run profiles: how long, how fast, how many clients, how many repeats.

A :class:`Profile` bundles one frozen dataclass per scenario family. ``quick`` runs the
steady-state scenarios for every transport in under a minute (a smoke test of the whole
pipeline, not citable figures), ``default`` in a few minutes with 3 repeats, ``full`` longer
with 5 repeats for figures worth citing.

Every transport runs with the same :data:`EXPERIMENT_SETTINGS` (heartbeat, dead-peer timeout,
backoff); only ``tornado-ws-seed`` overrides them with its fixed settings, which
``Transport.settings()`` applies. The settings go to servers as ``--set KEY=VALUE`` and to the
client workers in their job, and are written into results.json.

Fault scenarios add their own dataclass here and a field on :class:`Profile` (with a value in
each of the three profiles below).
"""

from __future__ import annotations

from dataclasses import dataclass

from transports.settings import Settings

__all__ = [
    "EXPERIMENT_SETTINGS",
    "PROFILES",
    "ComplexityProfile",
    "FanoutProfile",
    "LatencyProfile",
    "Profile",
    "ThroughputProfile",
]

#: The one set of settings every transport runs with in the experiments.
EXPERIMENT_SETTINGS = Settings(
    heartbeat_s=2.0,
    dead_after_s=6.0,
    backoff_base_s=0.1,
    backoff_cap_s=2.0,
)


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """Open-loop latency: one client, one server per rate."""

    rates_hz: tuple[float, ...]
    warmup_s: float
    duration_s: float
    #: Longer windows for slow rates, so they still collect enough samples for a p99.
    min_samples: int = 0


@dataclass(frozen=True, slots=True)
class ThroughputProfile:
    """Saturation (server ``--rate 0``), one client, beside the transport's minimal pusher."""

    warmup_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class FanoutProfile:
    """N clients at ``rate_hz`` each; clients spread over up to ``max_workers`` processes."""

    clients: tuple[int, ...]
    rate_hz: float
    warmup_s: float
    duration_s: float
    max_workers: int = 2
    #: Below this many clients, one worker process carries them all.
    clients_per_worker_min: int = 200


@dataclass(frozen=True, slots=True)
class ComplexityProfile:
    """Code size plus the wire bytes per sample measured at a fixed, moderate rate."""

    wire_rate_hz: float
    wire_duration_s: float


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    repeats: int
    latency: LatencyProfile
    throughput: ThroughputProfile
    fanout: FanoutProfile
    complexity: ComplexityProfile
    #: Seconds a server or worker gets to become ready before the run fails.
    ready_timeout_s: float = 20.0


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="quick",
            repeats=1,
            # A smoke test of the pipeline under a minute for every transport: short windows.
            latency=LatencyProfile(rates_hz=(1000.0,), warmup_s=0.2, duration_s=0.8),
            throughput=ThroughputProfile(warmup_s=0.2, duration_s=0.6),
            fanout=FanoutProfile(clients=(1, 10, 100), rate_hz=10.0, warmup_s=0.2, duration_s=0.5),
            complexity=ComplexityProfile(wire_rate_hz=200.0, wire_duration_s=0.4),
        ),
        Profile(
            name="default",
            repeats=3,
            # Windows sized to the 10-minute budget of the whole default run (steady state
            # and faults): 1.5 s is 1,500 samples at 1,000/s, 15 per client at 10/s.
            latency=LatencyProfile(
                rates_hz=(10.0, 1000.0, 10000.0), warmup_s=0.3, duration_s=1.5, min_samples=40
            ),
            throughput=ThroughputProfile(warmup_s=0.3, duration_s=1.5),
            fanout=FanoutProfile(
                clients=(1, 10, 100, 1000), rate_hz=10.0, warmup_s=0.3, duration_s=1.5
            ),
            complexity=ComplexityProfile(wire_rate_hz=200.0, wire_duration_s=1.0),
        ),
        Profile(
            name="full",
            repeats=5,
            latency=LatencyProfile(
                rates_hz=(10.0, 1000.0, 10000.0), warmup_s=2.0, duration_s=10.0, min_samples=300
            ),
            throughput=ThroughputProfile(warmup_s=2.0, duration_s=10.0),
            fanout=FanoutProfile(
                clients=(1, 10, 100, 1000), rate_hz=10.0, warmup_s=2.0, duration_s=10.0
            ),
            complexity=ComplexityProfile(wire_rate_hz=200.0, wire_duration_s=3.0),
        ),
    )
}
