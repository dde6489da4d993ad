"""The ``--engine builtin|ray`` dimension: what runs a step's clients (pure).

``builtin`` (the default): the suite's own worker processes on this machine
(:mod:`experiments.worker`). ``ray``: the same clients as Ray actors over a cluster
(:mod:`experiments.ray_engine`); every record says its engine in ``params["engine"]``. A run
has one engine (its records are never a mix).

Under ``ray`` only the scenarios in :data:`RAY_SCENARIOS` run; every other step is one
"not applicable" record saying why (:func:`engine_not_applicable`):

- the fault scenarios, slow-consumer and the like put a fault proxy, a kernel fault or a
  second worker beside one client worker on this machine, which is what they measure;
- throughput and complexity compare one client process with a pusher or count code;
- latency measures one client: nothing to spread;
- browser clients are Chromium pages on this machine, not Ray actors;
- TLS through a cluster the run joined: the clients' CA is a file on this machine, which
  actors on other machines cannot read.

The actors run their clients on the step's loop, uvloop included (each actor runs its job
on a loop of the job's own kind, :mod:`.actor`), under the step's collector policy.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "RAY_SCENARIOS",
    "EngineName",
    "engine_not_applicable",
]

EngineName = Literal["builtin", "ray"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)
DEFAULT_ENGINE: EngineName = "builtin"
#: The scenarios whose clients run as Ray actors under ``--engine ray``.
RAY_SCENARIOS = ("fanout",)


def engine_not_applicable(
    engine: str, *, scenario: str, client_kind: str, security: str, joined: bool
) -> str | None:
    """Why a step does not run under ``engine`` (None: it does). ``joined``: the cluster is
    the user's (``--ray-address``), not one the run started on this machine."""
    if engine != "ray":
        return None
    if client_kind != "python":
        return f"not applicable: {client_kind} clients run on this machine, not as Ray actors"
    if scenario not in RAY_SCENARIOS:
        return (
            f"not applicable: under --engine ray only {', '.join(RAY_SCENARIOS)} spreads its "
            f"clients over the cluster; {scenario} measures clients beside this machine's "
            "proxies, faults or pushers"
        )
    if security == "tls" and joined:
        return (
            "not applicable: the clients' CA is a file on this machine, which actors on the "
            "cluster's other machines cannot read"
        )
    return None
