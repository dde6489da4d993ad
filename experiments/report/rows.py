"""Records -> table rows: median and min–max over repeats, ratio to the reference (pure).

Records with the same scenario, transport and params (repeat aside) form one :class:`Row`.
:data:`HEADLINE_METRICS` names the columns each scenario's table shows; a scenario missing
from it shows every numeric metric its records carry. Fault scenarios add their entry here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.stats import Spread, spread

__all__ = [
    "HEADLINE_METRICS",
    "NO_RATIO",
    "REFERENCE",
    "Row",
    "headline",
    "ratio",
    "rows",
]

#: Ratios in the report are against this transport.
REFERENCE = "tornado-ws"

HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "latency": (
        "latency_ms_p50",
        "latency_ms_p90",
        "latency_ms_p99",
        "latency_ms_p999",
        "latency_ms_max",
        "delivered",
        "lost",
        "duplicated",
        "reordered",
    ),
    "throughput": (
        "samples_per_s",
        "pusher_samples_per_s",
        "overhead_fraction",
        "server_cpu_s_per_1k",
        "client_cpu_s_per_1k",
        "wire_bytes_per_sample",
    ),
    "fanout": (
        "latency_ms_p50",
        "latency_ms_p99",
        "delivered_fraction",
        "server_cpu_percent",
        "server_rss_bytes_per_connection",
    ),
    "complexity": (
        "sloc",
        "cyclomatic_total",
        "dependencies",
        "wire_bytes_per_sample",
        "resume",
        "heartbeat",
        "browser_native",
        "bidirectional",
        "push",
    ),
    **{
        fault: (
            "faults",
            "detect_s_median",
            "detect_s_max",
            *(("server_drop_s_median", "server_drop_s_max") if fault == "blackhole" else ()),
            "reconnect_s_median",
            "reconnect_s_max",
            "lost",
            "duplicated",
            "reordered",
            "posterior_mean_error",
            *(("moved_to_new_epoch",) if fault == "restart" else ()),
        )
        for fault in ("restart", "reset", "blackhole")
    },
    "slow-consumer": (
        "server_rss_growth_bytes",
        "normal_client_latency_ms_p99",
        "steady_latency_ms_p99",
        "normal_p99_ratio",
        "slow_cuts",
        "stopped_cut_s",
    ),
    "bad-input": ("cases", "server_survived", "others_unaffected", "lost"),
}

#: Metrics that get no ratio: fractions, flags and counts that are 0 when all is well.
NO_RATIO = frozenset(
    {
        "overhead_fraction",
        "delivered_fraction",
        "lost",
        "duplicated",
        "reordered",
        "clients",
        "resume",
        "heartbeat",
        "browser_native",
        "bidirectional",
        "push",
    }
)


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    transport: str
    params: Mapping[str, Any]
    spreads: Mapping[str, Spread | None]
    repeats: int
    #: Delivery problems or errors of any repeat, in words.
    problems: tuple[str, ...]
    #: The raw records this row aggregates.
    records: tuple[Mapping[str, Any], ...]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, str)


def headline(scenario: str, records: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """The metric columns of one scenario's table."""
    if scenario in HEADLINE_METRICS:
        return HEADLINE_METRICS[scenario]
    names: dict[str, None] = {}
    for r in records:
        for k, v in r.get("metrics", {}).items():
            if _is_number(v):
                names[k] = None
    return tuple(names)


#: Params that name the transport's own parts, not the conditions: ignored when matching a
#: row with the reference's.
IDENTITY_PARAMS = frozenset({"modules", "pusher"})


def _params_key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _conditions_key(params: Mapping[str, Any]) -> str:
    return _params_key({k: v for k, v in params.items() if k not in IDENTITY_PARAMS})


def rows(records: Sequence[Mapping[str, Any]], scenario: str) -> list[Row]:
    """One row per (transport, params) of ``scenario``, in the order first measured."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        if r["scenario"] != scenario:
            continue
        groups.setdefault((r["transport"], _params_key(r.get("params", {}))), []).append(r)
    columns = headline(scenario, [r for rs in groups.values() for r in rs])
    out = []
    for (transport, _), rs in groups.items():
        spreads = {m: spread(r.get("metrics", {}).get(m) for r in rs) for m in columns}
        problems: list[str] = []
        for r in rs:
            if r.get("error"):
                problems.append(f"repeat {r['repeat']}: error: {r['error']}")
            elif r.get("metrics", {}).get("delivery_ok") is False:
                why = r["metrics"].get("delivery_problems", "delivery check failed")
                problems.append(f"repeat {r['repeat']}: {why}")
        out.append(
            Row(
                scenario=scenario,
                transport=transport,
                params=rs[0].get("params", {}),
                spreads=spreads,
                repeats=len(rs),
                problems=tuple(problems),
                records=tuple(rs),
            )
        )
    return out


def ratio(row: Row, metric: str, all_rows: Sequence[Row]) -> float | None:
    """``row``'s median over the reference transport's median with the same params."""
    mine = row.spreads.get(metric)
    if metric in NO_RATIO:
        return None
    for other in all_rows:
        same = _conditions_key(other.params) == _conditions_key(row.params)
        if other.transport == REFERENCE and same:
            ref = other.spreads.get(metric)
            if mine is None or ref is None or ref.median <= 0 or mine.median < 0:
                return None
            return mine.median / ref.median
    return None
