"""Helpers every scenario uses: run one worker against a server, judge delivery first.

:func:`delivery_metrics` turns a worker result into the ledger totals plus ``delivery_ok``:
true only when every client connected, none died, none disconnected, and the ledger shows no
lost, duplicated, reordered or corrupted sample. Scenarios put these metrics in every record
beside their timings, so the report can flag a timing taken from a run that lost samples.
"""

from __future__ import annotations

from typing import Any

from experiments.context import RunContext
from experiments.harness import ServerProcess
from experiments.jobs import ClientGroup
from experiments.stats import delivery_totals

__all__ = ["delivery_metrics", "problems", "run_worker", "window_s", "wire_bytes"]


def wire_bytes(probe: dict[str, Any] | None) -> float | None:
    """TCP payload bytes both ways on the server's sockets over the window (None: unknown)."""
    if probe is None or "tcp_sent" not in probe:
        return None
    return float(probe["tcp_sent"] + probe["tcp_received"])


def window_s(result: dict[str, Any]) -> float:
    """Length of the worker's measurement window in seconds (0 if it never opened)."""
    w = result["window"]
    if w["start_ns"] is None or w["end_ns"] is None:
        return 0.0
    return float(w["end_ns"] - w["start_ns"]) / 1e9


def problems(result: dict[str, Any]) -> list[str]:
    """What went wrong for the clients of one worker result, in words (empty: nothing)."""
    out: list[str] = []
    clients = result["clients"]
    totals = delivery_totals(clients)
    for key in ("lost", "duplicated", "reordered", "corrupted"):
        if totals[key]:
            out.append(f"{totals[key]} {key}")
    never = sum(1 for c in clients if not any(e["type"] == "connected" for e in c["events"]))
    if never:
        out.append(f"{never} of {len(clients)} clients never connected")
    drops = sum(1 for c in clients for e in c["events"] if e["type"] == "disconnected")
    if drops:
        out.append(f"{drops} disconnects")
    errors = [c["error"] for c in clients if c["error"]]
    if errors:
        out.append(f"{len(errors)} client errors (first: {errors[0]})")
    if not any(c["received_in_window"] for c in clients if c["role"] != "stopped"):
        out.append("nothing received in the measurement window")
    return out


def delivery_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """Ledger totals over the worker's clients, ``delivery_ok`` and ``delivery_problems``."""
    clients = result["clients"]
    totals = delivery_totals(clients)
    found = problems(result)
    return {
        **totals,
        "received": sum(c["received"] for c in clients),
        "received_in_window": sum(c["received_in_window"] for c in clients),
        "posterior_mean_error": max(
            (c["posterior_error"]["mean_error"] for c in clients), default=0.0
        ),
        "delivery_ok": not found,
        "delivery_problems": "; ".join(found),
    }


async def run_worker(
    ctx: RunContext,
    server: ServerProcess,
    groups: tuple[ClientGroup, ...],
    *,
    warmup_s: float,
    duration_s: float,
    **job_kwargs: Any,
) -> dict[str, Any]:
    """One worker against ``server`` for warm-up + window; its result."""
    job_kwargs.setdefault("server_pid", server.pid)
    job_kwargs.setdefault("server_port", server.port)
    job = ctx.job(server.port, groups, warmup_s=warmup_s, duration_s=duration_s, **job_kwargs)
    async with ctx.clients(job) as worker:
        return await worker.result()
