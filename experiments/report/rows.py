"""Records -> table rows: figures over repeats, pooled latency, ratio to the reference (pure).

Records of one scenario with the same transport and params (the repeat aside) form one
:class:`Row`. A row holds

- the :class:`~experiments.report.figures.Spread` (median, min, max over repeats) of every
  numeric metric its successful records carry;
- per client role, the latency pooled over every repeat: the records' HDR histograms merged,
  so its p99 is the p99 of every sample, with the count of samples behind it;
- the delivery problems and the failed records, so the table can flag them.

:func:`figure` reads one column's figure from a row: a metric key, or ``latency:ROLE:PCT``
for a pooled percentile. Rows from schema 1 files carry no histograms; their latency columns
fall back to the median of the per-repeat percentiles they stored (``latency_ms_p99``), with
no sample count. :func:`ratio` divides by the ``tornado-ws`` row with the same conditions:
the same values of the params that tell one transport's rows apart (:func:`varying_params`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from experiments.histogram import SUPPORT, LatencySummary, merge, summarize, supported
from experiments.report.figures import Spread, spread
from experiments.results import Record, Scalar

__all__ = [
    "IDENTITY_PARAMS",
    "REFERENCE",
    "Figure",
    "LatencyMetric",
    "Row",
    "figure",
    "latency_metric",
    "numeric_metrics",
    "ratio",
    "reference_row",
    "rows",
    "varying_params",
]

#: Ratios in the report are against this transport.
REFERENCE = "tornado-ws"

#: Params that name the transport's own parts (its modules, its baseline pusher), not the
#: conditions it ran under: ignored when matching a row with the reference's.
IDENTITY_PARAMS = frozenset({"modules", "pusher"})


@dataclass(frozen=True, slots=True)
class LatencyMetric:
    """A parsed ``latency:ROLE:PCT`` column metric."""

    role: str
    pct: str


def latency_metric(metric: str) -> LatencyMetric | None:
    """``latency:ROLE:PCT`` parsed; None for a plain metric key."""
    kind, _, rest = metric.partition(":")
    if kind != "latency":
        return None
    role, _, pct = rest.partition(":")
    if not role or pct not in SUPPORT:
        raise ValueError(f"bad latency column {metric!r}: want latency:ROLE:PCT, PCT in {SUPPORT}")
    return LatencyMetric(role, pct)


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    transport: str
    params: Mapping[str, Scalar]
    #: The records that measured something (no ``error``), one per repeat.
    records: tuple[Record, ...]
    #: The records whose measurement failed (``error`` set).
    failed: tuple[Record, ...]
    #: Every numeric metric over the measured repeats.
    spreads: Mapping[str, Spread]
    #: Role -> latency pooled over every measured repeat.
    latency: Mapping[str, LatencySummary]
    #: ``repeat N: why`` for each measured repeat whose delivery check failed.
    problems: tuple[str, ...]

    @property
    def repeats(self) -> int:
        return len(self.records)


@dataclass(frozen=True, slots=True)
class Figure:
    """What one column shows for one row.

    ``value``: the median over repeats, or the pooled latency. ``spread``: over repeats (None
    for a pooled figure). ``samples``: the samples behind a pooled figure (None otherwise).
    ``supported``: False when ``samples`` is below the percentile's
    :data:`~experiments.histogram.SUPPORT`; the value must then not be shown as a figure.
    """

    value: float
    spread: Spread | None = None
    samples: int | None = None
    supported: bool = True
    #: The least samples the figure needs (pooled latency only).
    needs: int | None = None


def _key(params: Mapping[str, Scalar], ignore: frozenset[str] = frozenset()) -> str:
    return json.dumps({k: v for k, v in params.items() if k not in ignore}, sort_keys=True)


def numeric_metrics(records: Iterable[Record]) -> list[str]:
    """Every metric key with a number (not a flag) in any record, in first-seen order."""
    names: dict[str, None] = {}
    for r in records:
        for k in r.metrics:
            if r.metric(k) is not None:
                names[k] = None
    return list(names)


def _pooled(records: Sequence[Record]) -> dict[str, LatencySummary]:
    roles = dict.fromkeys(role for r in records for role in r.latency)
    out: dict[str, LatencySummary] = {}
    for role in roles:
        h = merge(r.latency.get(role, "") for r in records)
        if h is not None:
            out[role] = summarize(h)
    return out


def _problems(records: Sequence[Record]) -> tuple[str, ...]:
    out = []
    for r in records:
        if r.metrics.get("delivery_ok") is False:
            why = r.metrics.get("delivery_problems") or "delivery check failed"
            out.append(f"repeat {r.repeat}: {why}")
    return tuple(out)


def rows(records: Iterable[Record], scenario: str) -> list[Row]:
    """One row per (transport, params) of ``scenario``, in the order first measured."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        if r.scenario == scenario:
            groups.setdefault((r.transport, _key(r.params)), []).append(r)
    out = []
    for (transport, _), group in groups.items():
        measured = tuple(r for r in group if r.error is None)
        out.append(
            Row(
                scenario=scenario,
                transport=transport,
                params=group[0].params,
                records=measured,
                failed=tuple(r for r in group if r.error is not None),
                spreads={
                    m: s
                    for m in numeric_metrics(measured)
                    if (s := spread(r.metrics.get(m) for r in measured)) is not None
                },
                latency=_pooled(measured),
                problems=_problems(measured),
            )
        )
    return out


def _legacy_keys(lm: LatencyMetric) -> tuple[str, ...]:
    """Where schema 1 records kept a role's per-repeat percentile."""
    own = (f"{lm.role}_client_latency_ms_{lm.pct}", f"{lm.role}_latency_ms_{lm.pct}")
    return (f"latency_ms_{lm.pct}", *own) if lm.role == "normal" else own


def figure(row: Row, metric: str) -> Figure | None:
    """The figure of column ``metric`` for ``row``; None when it was not measured."""
    lm = latency_metric(metric)
    if lm is None:
        s = row.spreads.get(metric)
        return None if s is None else Figure(s.median, spread=s)
    pooled = row.latency.get(lm.role)
    if pooled is not None:
        return Figure(
            pooled.value(lm.pct),
            samples=pooled.count,
            supported=supported(lm.pct, pooled.count),
            needs=SUPPORT[lm.pct],
        )
    # No histogram (schema 1): the median of what each repeat stored, sample count unknown.
    for key in _legacy_keys(lm):
        s = row.spreads.get(key)
        if s is not None:
            return Figure(s.median, spread=s)
    return None


def _differs(rows_: Sequence[Row], key: str) -> bool:
    return len({json.dumps(r.params.get(key), sort_keys=True) for r in rows_}) > 1


def varying_params(table_rows: Sequence[Row]) -> tuple[list[str], list[str]]:
    """The params that differ between rows, split in two:

    - columns: those that tell two rows of one transport apart (a rate, a client count);
    - per transport: those that differ only from one transport to another (its keepalive
      figures, its own settings). As columns they would repeat a transport's settings on
      every row; the table states them once per transport under it instead.

    A param the same on every row is neither: it is a condition of the whole run.
    """
    keys = dict.fromkeys(k for r in table_rows for k in r.params if k not in IDENTITY_PARAMS)
    by_transport: dict[str, list[Row]] = {}
    for r in table_rows:
        by_transport.setdefault(r.transport, []).append(r)
    columns, per_transport = [], []
    for k in keys:
        if not _differs(table_rows, k):
            continue
        if any(_differs(rs, k) for rs in by_transport.values()):
            columns.append(k)
        else:
            per_transport.append(k)
    return columns, per_transport


def reference_row(row: Row, all_rows: Sequence[Row]) -> Row | None:
    """The reference transport's row run under the same conditions as ``row``: the same
    values of the params that tell one transport's rows apart (a transport's own settings,
    which differ only by transport, do not count)."""
    dimensions, _ = varying_params(all_rows)
    ignore = frozenset(k for r in all_rows for k in r.params if k not in dimensions)
    mine = _key(row.params, ignore)
    for other in all_rows:
        if other.transport == REFERENCE and _key(other.params, ignore) == mine:
            return other
    return None


def ratio(row: Row, metric: str, all_rows: Sequence[Row]) -> float | None:
    """``row``'s figure over the reference's under the same conditions (None: no such pair,
    an unsupported percentile on either side, or a reference figure of zero)."""
    ref = reference_row(row, all_rows)
    if ref is None:
        return None
    mine, theirs = figure(row, metric), figure(ref, metric)
    if mine is None or theirs is None or not (mine.supported and theirs.supported):
        return None
    if theirs.value <= 0 or mine.value < 0:
        return None
    return mine.value / theirs.value
