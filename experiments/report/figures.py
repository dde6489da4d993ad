"""Pure figures: latency percentiles, delivery totals, and median/range over repeats.

Nothing here does I/O; the scenarios and the report both use it, and the tests check it
directly.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CDF_PERCENTILES",
    "DELIVERY_KEYS",
    "PERCENTILES",
    "Spread",
    "cdf_points",
    "delivery_totals",
    "latency_summary",
    "pooled_latencies",
    "spread",
]

#: Metric suffix -> percentile, as named in design.md (``latency_ms_p999`` is the 99.9th).
PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
DELIVERY_KEYS = ("delivered", "lost", "duplicated", "reordered", "corrupted")


def latency_summary(
    latencies_ns: Sequence[int] | np.ndarray, prefix: str = "latency_ms"
) -> dict[str, float | None]:
    """``{prefix}_p50 … _p999, _max, _mean`` in milliseconds; None for each when empty.

    Percentiles use numpy's default (linear interpolation between closest ranks).
    """
    keys = [*PERCENTILES, "max", "mean"]
    if len(latencies_ns) == 0:
        return {f"{prefix}_{k}": None for k in keys}
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    values = np.percentile(ms, list(PERCENTILES.values()))
    out: dict[str, float | None] = {
        f"{prefix}_{k}": float(v) for k, v in zip(PERCENTILES, values, strict=True)
    }
    out[f"{prefix}_max"] = float(ms.max())
    out[f"{prefix}_mean"] = float(ms.mean())
    return out


#: Where the latency CDF is sampled for plots: every percent, then the tail more finely.
CDF_PERCENTILES: tuple[float, ...] = (
    *(float(p) for p in range(100)),
    99.5,
    99.9,
    99.95,
    99.99,
    100.0,
)


def cdf_points(latencies_ns: Sequence[int] | np.ndarray) -> list[list[float]]:
    """``[[percentile, latency_ms], ...]`` at :data:`CDF_PERCENTILES` (empty when no data)."""
    if len(latencies_ns) == 0:
        return []
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    values = np.percentile(ms, CDF_PERCENTILES)
    return [[p, float(v)] for p, v in zip(CDF_PERCENTILES, values, strict=True)]


def pooled_latencies(clients: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Every latency of every client, in one array (percentiles over all clients' samples)."""
    arrays = [np.asarray(c["latencies_ns"], dtype=np.int64) for c in clients]
    return np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)


def delivery_totals(clients: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Ledger counts summed over clients, plus ``clients_with_loss``."""
    totals = dict.fromkeys(DELIVERY_KEYS, 0)
    with_loss = 0
    for c in clients:
        for k in DELIVERY_KEYS:
            totals[k] += int(c["counts"][k])
        with_loss += int(c["counts"]["lost"] > 0)
    totals["clients_with_loss"] = with_loss
    return totals


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and range of one metric over repeats (None values are left out)."""

    median: float
    low: float
    high: float
    n: int


def spread(values: Iterable[float | int | None]) -> Spread | None:
    """Median, min and max of the numeric values; None when there are none."""
    xs = [
        float(v)
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if not xs:
        return None
    return Spread(statistics.median(xs), min(xs), max(xs), len(xs))
