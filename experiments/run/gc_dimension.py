"""The ``--gc default,freeze`` dimension: every process of a step runs under the same policy.

The transport servers (``serve --gc``, :class:`~experiments.run.processes.ServerProcess`),
the client workers (``ClientJob.gc``), and the throughput scenario's baseline pushers, both
sides (:class:`~experiments.run.processes.Placement` ``gc``), apply the step's policy
(:mod:`transports.gc_policy`) at the same point after start-up, so every transport and every
pusher is treated alike. The harness itself, and what runs inside it (browser clients' page
host, the interop scenario's third-party readers), keeps the interpreter's collector: it
coordinates and does not carry the measured stream's load. Browser clients are Chromium's.

``bad-input`` starts some servers of its own (the cases that need a server configured
apart) without the step's policy, so under ``freeze`` it would mix policies in one record:
it is "not applicable" there (:func:`gc_not_applicable`), as it is on uvloop.
"""

from __future__ import annotations

from transports.gc_policy import DEFAULT_GC, GCS, GcName, UnknownGc, parse_gcs, policy_words

__all__ = [
    "DEFAULT_GC",
    "GCS",
    "GC_UNAWARE_SCENARIOS",
    "GcName",
    "UnknownGc",
    "gc_not_applicable",
    "parse_gcs",
    "policy_words",
]

#: Scenarios that start processes of their own without the step's policy: why, for each.
GC_UNAWARE_SCENARIOS: dict[str, str] = {
    "bad-input": "its servers of its own (cases configured apart) keep the default collector",
}


def gc_not_applicable(gc: str, scenario: str) -> str | None:
    """Why ``scenario`` does not run under policy ``gc`` (None: it does)."""
    if gc == DEFAULT_GC:
        return None
    why = GC_UNAWARE_SCENARIOS.get(scenario)
    return None if why is None else f"not applicable under gc {gc}: {why}"
