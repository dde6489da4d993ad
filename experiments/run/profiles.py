"""Run profiles and the one set of settings every transport runs with.

A :class:`Profile` says how many repeats a run makes; each scenario owns its own knobs per
profile (durations, rates, clients, rounds: its ``knobs`` mapping), so adding a scenario never
touches this module. ``quick`` is a smoke test of the whole pipeline (not citable figures),
``default`` runs with 3 repeats on loopback and the emulated ``wan`` path (about 17 minutes
here), ``full`` longer with 5 repeats on every network profile.
``soak`` is another kind of run: the ``soak`` scenario alone (a seeded nemesis over every
resuming transport for ``--duration`` minutes, 30 by default), with ``full``'s knobs; no other
profile runs it unless asked (``--scenarios soak``), so it is opt-in.

Every transport runs with the same :data:`EXPERIMENT_SETTINGS` (heartbeat, dead-peer timeout,
backoff); only ``tornado-ws-seed`` overrides them with its fixed settings, which
``Transport.settings()`` applies. The settings travel to servers and client workers as one
JSON document, and are written into results.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from transports.settings import Settings

__all__ = ["EXPERIMENT_SETTINGS", "OPT_IN", "PROFILES", "PROFILE_NAMES", "Profile"]

#: The one set of settings every transport runs with in the experiments.
EXPERIMENT_SETTINGS = Settings(
    heartbeat_s=2.0,
    dead_after_s=6.0,
    backoff_base_s=0.1,
    backoff_cap_s=2.0,
    header_timeout_s=2.0,  # bad-input's slowloris case waits this long per transport
)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    #: Repeats of the steady-state scenarios (the outer loop of the run).
    repeats: int
    #: Repeats of the fault scenarios (one run of them already injects many faults).
    fault_repeats: int
    #: Seconds a server or worker gets to become ready before the run fails.
    ready_timeout_s: float = 20.0
    #: The only scenarios it runs (empty: every scenario that no profile claims this way).
    scenarios: tuple[str, ...] = ()
    #: The profile whose knobs its scenarios run with (None: knobs of its own).
    knobs_of: str | None = None
    #: Its scenarios judge resumption: unless ``--transports`` says, only the transports
    #: that resume run.
    resuming_only: bool = False
    #: Minutes the soak runs (``--duration``; None: its knobs say).
    duration_min: float | None = None
    #: The network paths it runs over when ``--network`` is not given. Emulated paths need
    #: root; without it they are left out with one line saying why (an explicit ``--network``
    #: that cannot be built is an error instead).
    networks: tuple[str, ...] = ("loopback",)
    #: Fan-out sizes for this run (``--clients N,N,...``), overriding the fan-out scenario's
    #: own (None: its knobs say).
    clients: tuple[int, ...] | None = None

    @property
    def knob_set(self) -> str:
        """The key of ``Scenario.knobs`` this profile runs with."""
        return self.knobs_of or self.name


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("quick", repeats=1, fault_repeats=1),
        Profile("default", repeats=3, fault_repeats=1, networks=("loopback", "wan")),
        Profile(
            "full",
            repeats=5,
            fault_repeats=2,
            networks=("loopback", "lan", "wan", "mobile", "lossy"),
        ),
        # Half an hour of faults is a run of its own, never a part of the comparison.
        Profile(
            "soak",
            repeats=1,
            fault_repeats=1,
            scenarios=("soak",),
            knobs_of="full",
            resuming_only=True,
        ),
    )
}
#: The profiles with knobs of their own: every scenario has knobs for each of them.
PROFILE_NAMES = tuple(p.name for p in PROFILES.values() if p.knobs_of is None)
#: Scenarios only a profile that names them runs (or ``--scenarios``): the soak.
OPT_IN = frozenset(name for p in PROFILES.values() for name in p.scenarios)
