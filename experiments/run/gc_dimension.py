"""The ``--gc default,freeze`` dimension: every process of a step runs under the same policy.

The transport servers (``serve --gc``, :class:`~experiments.run.processes.ServerProcess`),
the client workers (``ClientJob.gc``), and the throughput scenario's baseline pushers, both
sides (:class:`~experiments.run.processes.Placement` ``gc``), apply the step's policy
(:mod:`transports.gc_policy`) at the same point after start-up, so every transport and every
pusher is treated alike. The harness itself, and what runs inside it (browser clients' page
host, the interop scenario's third-party readers), keeps the interpreter's collector: it
coordinates and does not carry the measured stream's load. Browser clients are Chromium's.
"""

from __future__ import annotations

from transports.gc_policy import DEFAULT_GC, GCS, GcName, UnknownGc, parse_gcs, policy_words

__all__ = [
    "DEFAULT_GC",
    "GCS",
    "GcName",
    "UnknownGc",
    "parse_gcs",
    "policy_words",
]
