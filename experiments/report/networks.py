"""The cross-network summary: per transport, how its headline figures move with the path.

One table per transport: a column per network the run used, a row per figure (latency
p50/p99 at the latency scenario's highest rate, saturation throughput, reconnect time after
a restart and a reset, black-hole detection by the client and the server). Each cell is the
same figure the scenario's own table shows (pooled latency with its support, medians over
repeats otherwise), so the summary never says more than the tables behind it. When other
dimensions vary too (via, security, client kind, loop), a transport gets one table per
combination of them (``### tcp · tls · uvloop``): no cell mixes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from experiments.report.dimensions import DIMENSIONS, split
from experiments.report.figures import format_number
from experiments.report.rows import Row, figure, rows
from experiments.results import Record, Results

__all__ = ["SUMMARY", "Line", "cross_network_section"]


@dataclass(frozen=True, slots=True)
class Line:
    """One row of the summary: a figure of one scenario."""

    label: str
    scenario: str
    metric: str


SUMMARY: tuple[Line, ...] = (
    Line("latency p50 ms (highest rate)", "latency", "latency:normal:p50"),
    Line("latency p99 ms (highest rate)", "latency", "latency:normal:p99"),
    Line("saturation samples/s", "throughput", "samples_per_s"),
    Line("reconnect s after a restart (median)", "restart", "reconnect_s_median"),
    Line("reconnect s after a reset (median)", "reset", "reconnect_s_median"),
    Line("black hole: client notices s (median)", "blackhole", "detect_s_median"),
    Line("black hole: server drops s (median)", "blackhole", "server_drop_s_median"),
    Line("kernel black hole: client notices s", "blackhole-kernel", "detect_s_median"),
    Line("kernel black hole: server drops s", "blackhole-kernel", "server_drop_s_median"),
)


def _rate(row: Row) -> float:
    value = row.params.get("rate_hz")
    return float(value) if isinstance(value, int | float) else 0.0


def _cell(records: Sequence[Record], line: Line, transport: str, network: str) -> str:
    mine = [
        r
        for r in records
        if r.transport == transport and r.params.get("network", "loopback") == network
    ]
    candidates = rows(mine, line.scenario)
    if not candidates:
        return "·"
    row = max(candidates, key=_rate)  # the latency scenario's highest rate
    fig = figure(row, line.metric)
    if fig is None:
        return "n/a"
    if not fig.supported:
        return f"— (n={fig.samples:,})"
    return format_number(fig.value)


def cross_network_section(results: Results) -> str:
    """``## Across networks`` (empty when the run used one network)."""
    records = results.records
    networks = list(dict.fromkeys(str(r.params.get("network", "loopback")) for r in records))
    if len(networks) < 2:
        return ""
    present = {r.scenario for r in records}
    lines = [s for s in SUMMARY if s.scenario in present]
    out = [
        "## Across networks",
        "",
        "Per transport, the headline figures of each scenario on every network path the run "
        "used (the paths as measured are in the conditions). `·`: not run there; `—`: too "
        "few samples for that percentile; `n/a`: not measured (e.g. a server that never "
        "drops a dead peer).",
    ]
    others = [k for k in DIMENSIONS if k != "network"]
    for transport in dict.fromkeys(r.transport for r in records):
        for group in split(records, others):
            in_group = [r for r in group.records if r.transport == transport]
            if not in_group:
                continue
            title = f"{transport} · {group.label}" if group.label else transport
            out += ["", f"### {title}", "", "| figure | " + " | ".join(networks) + " |"]
            out.append("|---|" + "---|" * len(networks))
            for line in lines:
                cells = [_cell(in_group, line, transport, n) for n in networks]
                out.append(f"| {line.label} | " + " | ".join(cells) + " |")
    return "\n".join(out)
