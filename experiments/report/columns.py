"""How a scenario declares a column of its report table (the report renders it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LATENCY_COLUMNS", "Column", "latency_column"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a scenario's table.

    ``metric`` names a key of ``Record.metrics``, or a pooled latency percentile written
    ``latency:ROLE:PCT`` (``PCT`` one of p50, p90, p99, p999, max; ROLE a client role), which
    the report computes from the records' merged HDR histograms over every repeat and prints
    with its sample count, leaving out a percentile the count cannot support.
    """

    metric: str
    #: The header, unit included ("p99 ms", "samples/s").
    header: str
    #: Multiply the stored value by this before printing (a fraction shown as %).
    scale: float = 1.0
    #: Show the ratio to the reference transport (tornado-ws) beside the value.
    ratio: bool = False


def latency_column(pct: str, role: str = "normal", header: str | None = None) -> Column:
    return Column(f"latency:{role}:{pct}", header or f"{pct} ms", ratio=pct in ("p50", "p99"))


#: The pooled latency columns most scenarios show.
LATENCY_COLUMNS: tuple[Column, ...] = tuple(
    latency_column(p) for p in ("p50", "p90", "p99", "p999", "max")
)
