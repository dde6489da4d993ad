"""Pure figures over repeats: median and range, delivery totals, and how numbers print.

Nothing here does I/O. Latency percentiles are not here: they are pooled from HDR
histograms (:mod:`experiments.histogram`), never taken as medians of per-repeat percentiles.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from model.ledger import DeliveryCounts

__all__ = [
    "DELIVERY_KEYS",
    "Spread",
    "delivery_totals",
    "format_number",
    "format_spread",
    "spread",
]

DELIVERY_KEYS = ("delivered", "lost", "duplicated", "reordered", "corrupted")


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and range of one metric over repeats (``n`` values; missing ones left out)."""

    median: float
    low: float
    high: float
    n: int


def spread(values: Iterable[object]) -> Spread | None:
    """Median, min and max of the finite numbers among ``values``; None when there are none.

    Booleans are flags, not figures, and None/NaN mean "not measured": all are left out.
    """
    xs = [
        float(v)
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if not xs:
        return None
    return Spread(statistics.median(xs), min(xs), max(xs), len(xs))


def delivery_totals(counts: Iterable[DeliveryCounts]) -> dict[str, int]:
    """Ledger counts summed over clients (:data:`DELIVERY_KEYS`), plus ``clients_with_loss``."""
    total = DeliveryCounts()
    with_loss = 0
    for c in counts:
        total += c
        with_loss += c.lost > 0
    return {
        "delivered": total.delivered,
        "lost": total.lost,
        "duplicated": total.duplicated,
        "reordered": total.reordered,
        "corrupted": total.corrupted,
        "clients_with_loss": with_loss,
    }


def format_number(x: float) -> str:
    """Three significant digits, thousands separated; tiny values in scientific notation."""
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 1e-4:  # 0.0074 reads better than 7.40e-03
        return f"{x:.3g}"
    return f"{x:.2e}"


def format_spread(s: Spread, scale: float = 1.0) -> str:
    """``median [min–max]``: the range only when several repeats disagree."""
    text = format_number(s.median * scale)
    if s.n > 1 and s.low != s.high:
        text += f" [{format_number(s.low * scale)}–{format_number(s.high * scale)}]"
    return text
