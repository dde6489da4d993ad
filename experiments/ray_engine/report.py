"""The fan-out's figures under ``--engine ray`` and their report section (pure).

:func:`ray_figures` adds what a Ray run says to a fan-out record: ``ray_nodes`` and
``ray_actors`` (params), ``clock_bound_ms`` (the widest error bound of the actors' clock
offsets: every latency of the record is that uncertain), ``clock_offset_ms`` (that actor's
offset), ``ray_overhead_cpu_s`` and ``ray_overhead_rss_bytes`` (metrics).
:func:`ray_section` is a short table of those beside the latencies they qualify: one line per
transport, client count and network, medians over repeats (the widest bound, the least
delivered fraction).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence

from experiments.results import Record, Scalar
from experiments.worker.schema import WorkerResult

__all__ = ["ray_figures", "ray_section"]

_MIB = 1024 * 1024


def ray_figures(result: WorkerResult) -> tuple[dict[str, Scalar], dict[str, Scalar]]:
    """(params, metrics) a fan-out record gets from a result the Ray engine produced."""
    engine = result.engine
    if engine is None:
        return {}, {}
    params: dict[str, Scalar] = {"ray_nodes": len(engine.nodes), "ray_actors": engine.actors}
    clock = result.clock
    metrics: dict[str, Scalar] = {
        "clock_bound_ms": None if clock is None else clock.bound_ns / 1e6,
        "clock_offset_ms": None if clock is None else clock.offset_ns / 1e6,
        "ray_overhead_cpu_s": engine.overhead_cpu_s,
        "ray_overhead_rss_bytes": engine.overhead_rss_bytes,
    }
    return params, metrics


def _numbers(records: Sequence[Record], key: str) -> list[float]:
    return [
        float(v)
        for r in records
        if isinstance(v := r.metrics.get(key), int | float) and not isinstance(v, bool)
    ]


_PICK: dict[str, Callable[[list[float]], float]] = {
    "median": statistics.median,
    "max": max,
    "min": min,
}


def _cell(values: list[float], pick: str = "median", fmt: str = "{:.2f}") -> str:
    return fmt.format(_PICK[pick](values)) if values else "n/a"


def ray_section(records: Iterable[Record]) -> str:
    """The markdown table of the fan-out records that ran over Ray ("" when none did)."""
    ray = [r for r in records if r.params.get("engine") == "ray" and r.metrics]
    if not ray:
        return ""
    groups: dict[tuple[str, int, str], list[Record]] = {}
    for r in ray:
        clients = r.params.get("clients")
        key = (r.transport, int(clients) if isinstance(clients, int) else 0,
               str(r.params.get("network", "loopback")))  # fmt: skip
        groups.setdefault(key, []).append(r)
    lines = [
        "### Clients over Ray",
        "",
        "The fan-out's clients as Ray actors (``--engine ray``): nodes and actors that ran "
        "them, latencies on the server's clock with the widest error bound of the actors' "
        "clock offsets, and what Ray itself cost over the window on the server's machine "
        "(medians over repeats).",
        "",
        "| transport | clients | network | nodes | actors | p50 ms | p99 ms | ± clock ms "
        "| delivered % | Ray CPU s | Ray RSS MiB | repeats |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (transport, clients, network), rs in groups.items():
        nodes = sorted({str(r.params.get("ray_nodes")) for r in rs})
        actors = sorted({str(r.params.get("ray_actors")) for r in rs})
        lines.append(
            f"| {transport} | {clients:,} | {network} | {', '.join(nodes)} | "
            f"{', '.join(actors)} | {_cell(_numbers(rs, 'latency_ms_p50'))} | "
            f"{_cell(_numbers(rs, 'latency_ms_p99'))} | "
            f"{_cell(_numbers(rs, 'clock_bound_ms'), 'max', '{:.3f}')} | "
            f"{_cell([100 * v for v in _numbers(rs, 'delivered_fraction')], 'min', '{:.1f}')} | "
            f"{_cell(_numbers(rs, 'ray_overhead_cpu_s'))} | "
            f"{_cell([v / _MIB for v in _numbers(rs, 'ray_overhead_rss_bytes')], fmt='{:.0f}')} "
            f"| {len(rs)} |"
        )
    return "\n".join(lines)
