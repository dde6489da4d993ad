"""HDR latency histograms: recorded by the worker, pooled by scenarios and the report.

Latencies are recorded in microseconds from 1 µs to 1 h with 3 significant digits
(HdrHistogram's usual range; any value is kept within 0.1 %). A histogram travels as its
base64 "HISTFAAA…" text (:func:`encode_latencies`, :func:`encode`), a few hundred bytes however
many samples it holds, and histograms add: :func:`merge` pools clients, workers and repeats,
so a percentile over repeats is the percentile of every sample, not a median of per-repeat
percentiles taken from small windows.

A percentile means something only with enough samples behind it: :data:`SUPPORT` gives the
least count each one needs (HdrHistogram/wrk2 practice: about ten samples beyond the
percentile's rank, so p99 needs ~1,000 and p99.9 ~10,000); :func:`supported` checks it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "CDF_PERCENTILES",
    "HIGHEST_US",
    "LOWEST_US",
    "PERCENTILES",
    "SIGNIFICANT_DIGITS",
    "SUPPORT",
    "HdrHistogram",
    "LatencySummary",
    "cdf_points",
    "encode",
    "encode_latencies",
    "merge",
    "merge_encoded",
    "new_histogram",
    "summarize",
    "supported",
]

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3

#: Percentile name (as in the metric keys and ``latency:ROLE:PCT`` columns) -> percentile.
PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}

#: The least samples each figure needs to mean anything. A percentile from fewer samples is
#: decided by a handful of values (a p99 from 43 samples is the largest but one), so the
#: report leaves it out. ``max`` and ``mean`` need one sample.
SUPPORT: dict[str, int] = {"p50": 20, "p90": 100, "p99": 1_000, "p999": 10_000, "max": 1, "mean": 1}

#: Where the CDF is sampled for plots: every percent, then the tail ever more finely.
CDF_PERCENTILES: tuple[float, ...] = (
    *(float(p) for p in range(100)),
    99.5,
    99.9,
    99.95,
    99.99,
    99.995,
    99.999,
    100.0,
)


def supported(pct: str, count: int) -> bool:
    """Whether ``count`` samples support the figure ``pct`` (a key of :data:`SUPPORT`)."""
    return count >= SUPPORT[pct]


def new_histogram() -> HdrHistogram:
    """An empty histogram with the suite's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _lowest_equivalent(us: npt.NDArray[np.int64], h: HdrHistogram) -> npt.NDArray[np.int64]:
    """Each value rounded down to the first value of its HDR bucket (vectorised).

    HDR keeps ``sub_bucket_count`` linear steps per power of two above the first bucket: a
    value whose bit length is ``b`` loses its lowest ``b - (half_magnitude + 1)`` bits. Doing
    this in numpy first leaves at most a few thousand distinct values for ``np.unique``,
    however many samples there are.
    """
    half_magnitude = int(h.sub_bucket_half_count_magnitude) + int(h.unit_magnitude)
    # frexp's exponent is the bit length, exact for integers below 2**53.
    bit_length = np.frexp(us.astype(np.float64))[1].astype(np.int64)
    shift = np.maximum(bit_length - (half_magnitude + 1), 0)
    return (us >> shift) << shift


def encode_latencies(latencies_ns: Sequence[int] | npt.NDArray[np.integer]) -> str:
    """The HDR histogram (µs) of ``latencies_ns``, encoded; ``""`` when there are none.

    Values are rounded to the nearest microsecond and clamped into [0, 1 h] (a latency can
    only fall outside through a clock error; clamping keeps the count honest).
    """
    ns = np.asarray(latencies_ns, dtype=np.int64)
    if ns.size == 0:
        return ""
    us = np.clip((ns + 500) // 1000, 0, HIGHEST_US)
    h = new_histogram()
    values, counts = np.unique(_lowest_equivalent(us, h), return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        h.record_value(value, count)
    return encode(h)


def encode(h: HdrHistogram) -> str:
    """``h`` as its base64 text (what results.json and the worker's answer carry)."""
    return bytes(h.encode()).decode("ascii")


def merge(encoded: Iterable[str]) -> HdrHistogram | None:
    """The sum of encoded histograms (``""`` skipped); None when no sample is left."""
    total = new_histogram()
    for text in encoded:
        if text:
            total.add(HdrHistogram.decode(text))
    return total if int(total.get_total_count()) > 0 else None


def merge_encoded(encoded: Iterable[str]) -> str:
    """The sum of encoded histograms, encoded (``""`` when no sample is left): what a
    scenario stores after pooling several workers' or clients' histograms."""
    h = merge(encoded)
    return "" if h is None else encode(h)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """One histogram in milliseconds, with the count of samples behind it."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    def value(self, pct: str) -> float:
        """The figure named ``pct`` (p50, p90, p99, p999, max, mean) in ms."""
        if pct not in SUPPORT:
            raise KeyError(f"unknown latency figure {pct!r}; known: {', '.join(SUPPORT)}")
        return float(getattr(self, f"{pct}_ms"))


def summarize(h: HdrHistogram) -> LatencySummary:
    """Count, percentiles, max and mean of ``h`` (µs) in ms.

    A percentile is the highest value equivalent (within 0.1 %) to the sample at its rank,
    HdrHistogram's convention: it never understates the tail.
    """
    count = int(h.get_total_count())
    if count == 0:
        raise ValueError("an empty histogram has no percentiles")
    at = h.get_percentile_to_value_dict(list(PERCENTILES.values()))
    ms = {name: float(at[pct]) / 1000 for name, pct in PERCENTILES.items()}
    return LatencySummary(
        count=count,
        p50_ms=ms["p50"],
        p90_ms=ms["p90"],
        p99_ms=ms["p99"],
        p999_ms=ms["p999"],
        max_ms=float(h.get_max_value()) / 1000,
        mean_ms=float(h.get_mean_value()) / 1000,
    )


def cdf_points(h: HdrHistogram) -> list[tuple[float, float]]:
    """``(percentile, ms)`` at :data:`CDF_PERCENTILES`, for plots (empty for no samples).

    Percentiles finer than the samples can resolve (beyond 1 - 1/count) are left out but
    the last point, the maximum, is always there.
    """
    count = int(h.get_total_count())
    if count == 0:
        return []
    reach = 100.0 * (1.0 - 1.0 / count)
    wanted = [p for p in CDF_PERCENTILES if p <= reach or p == 100.0]
    at = h.get_percentile_to_value_dict(wanted)
    return [(p, float(at[p]) / 1000) for p in wanted]
