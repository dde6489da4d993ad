"""How long and how often the fault scenarios run, per profile (quick, default, full).

Kept beside :mod:`experiments.profiles` rather than inside it so the fault scenarios own their
knobs; every value a scenario uses is also written into its records' ``params``.

Faults per transport = ``repeats`` (this profile's, not the steady-state repeats) x rounds
(x connections, for the black hole, where each faulted connection goes through its own proxy
and is one independent fault). The default profile injects 5 or more of each per transport.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FAULT_PROFILES", "FaultProfile", "fault_profile"]


@dataclass(frozen=True, slots=True)
class FaultProfile:
    #: How many of the run's repeats the fault scenarios take part in (the faults of one run
    #: are already many; ``--repeat N`` given on the command line overrides it).
    repeats: int
    #: Publish rate during the fault scenarios (samples per second).
    rate_hz: float
    #: Samples flow this long before each fault and after the last recovery.
    settle_s: float
    #: Most seconds to wait for samples to flow again after a fault before giving up on it.
    recover_timeout_s: float
    restart_rounds: int
    #: The server stays dead this long before it is started again.
    restart_downtime_s: float
    reset_rounds: int
    blackhole_rounds: int
    #: Connections faulted at once, each through its own proxy, holes staggered across a
    #: heartbeat interval so their phases differ.
    blackhole_connections: int
    #: A hole is healed once the client and the server both dropped the connection, or at the
    #: target (heartbeat + dead-after + 1 s) plus this grace, or at ``blackhole_max_hold_s``.
    blackhole_grace_s: float
    blackhole_max_hold_s: float
    #: Each phase (steady state, then with the slow consumers) lasts this long.
    slow_phase_s: float
    #: The slow consumer reads at this fraction of the publish rate.
    slow_read_fraction: float
    #: Idle connections opened at once by the bad-input burst.
    idle_burst: int
    #: How long a bad peer waits for the server's answer.
    bad_answer_timeout_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FAULT_PROFILES: dict[str, FaultProfile] = {
    "quick": FaultProfile(
        repeats=1,
        rate_hz=100.0,
        settle_s=0.4,
        recover_timeout_s=12.0,
        restart_rounds=1,
        restart_downtime_s=0.3,
        reset_rounds=1,
        blackhole_rounds=1,
        blackhole_connections=2,
        blackhole_grace_s=0.0,
        blackhole_max_hold_s=7.0,
        slow_phase_s=1.0,
        slow_read_fraction=0.1,
        idle_burst=200,
        bad_answer_timeout_s=1.0,
    ),
    "default": FaultProfile(
        repeats=1,
        rate_hz=100.0,
        settle_s=0.5,
        recover_timeout_s=15.0,
        restart_rounds=5,
        restart_downtime_s=0.5,
        reset_rounds=5,
        blackhole_rounds=1,
        blackhole_connections=6,
        blackhole_grace_s=2.0,
        blackhole_max_hold_s=30.0,
        slow_phase_s=2.0,
        slow_read_fraction=0.1,
        idle_burst=300,
        bad_answer_timeout_s=2.0,
    ),
    "full": FaultProfile(
        repeats=2,
        rate_hz=100.0,
        settle_s=1.0,
        recover_timeout_s=20.0,
        restart_rounds=5,
        restart_downtime_s=1.0,
        reset_rounds=5,
        blackhole_rounds=1,
        blackhole_connections=5,
        blackhole_grace_s=6.0,
        blackhole_max_hold_s=45.0,
        slow_phase_s=8.0,
        slow_read_fraction=0.1,
        idle_burst=500,
        bad_answer_timeout_s=5.0,
    ),
}


def fault_profile(name: str) -> FaultProfile:
    """The fault knobs of profile ``name`` (the default profile's for an unknown name)."""
    return FAULT_PROFILES.get(name, FAULT_PROFILES["default"])
