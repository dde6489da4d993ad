"""A scenario's markdown table from its columns (pure).

One line per :class:`~experiments.report.rows.Row` (transport and params). Cells:

- a metric column: ``median [min–max]`` over repeats (the range only when several repeats
  disagree), ``×r`` beside it when the column asks for the ratio to ``tornado-ws`` under the
  same conditions;
- a pooled latency column (``latency:ROLE:PCT``): the percentile of every sample of every
  repeat; the table then gets an ``n samples`` column, and a percentile its count cannot
  support (:data:`~experiments.histogram.SUPPORT`) prints ``—`` with a numbered footnote.

Only the params that tell rows of one transport apart are columns; those that differ only
from one transport to another are stated once per transport under the table, and those the
same everywhere are conditions of the run (:func:`~experiments.report.rows.varying_params`).
Rows whose delivery check failed are marked ⚠N and explained under the table; failed
measurements (``error``) are listed there too, and so are rows that were not applicable (a
path, client kind, security or loop the transport cannot take, with the runner's reason)
instead of a line of empty cells. A scenario the registry does not know gets a
table of every numeric metric its records carry (:func:`generic_columns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from experiments.report.columns import Column
from experiments.report.dimensions import not_applicable
from experiments.report.figures import format_number, format_spread
from experiments.report.rows import (
    Figure,
    Row,
    figure,
    latency_metric,
    numeric_metrics,
    ratio,
    rows,
    varying_params,
)
from experiments.results import Record, Scalar

__all__ = [
    "NOT_MEASURED",
    "UNSUPPORTED",
    "format_cell",
    "format_param",
    "generic_columns",
    "header_for",
    "param_text",
    "scenario_table",
]

#: A cell with nothing measured.
NOT_MEASURED = "n/a"
#: A percentile left out because too few samples support it (a footnote says how many).
UNSUPPORTED = "—"

#: Metrics every scenario records that are verdicts or words, not figures for a column.
_NOT_COLUMNS = frozenset({"delivery_ok", "delivery_problems"})
_UNIT_WORDS = {"ms": "ms", "s": "s", "hz": "Hz", "bytes": "bytes", "percent": "%"}
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def header_for(key: str) -> str:
    """A readable header for a raw key: ``samples_per_s`` -> ``samples/s``, ``latency_ms_p99``
    -> ``latency p99 ms`` (the unit last), ``rate_hz`` -> ``rate Hz``."""
    words = key.split("_")
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i] == "per" and out and i + 1 < len(words):
            out[-1] = f"{out[-1]}/{words[i + 1]}"
            i += 2
            continue
        out.append(words[i])
        i += 1
    units = [w for w in out if w in _UNIT_WORDS]
    if units:
        out.remove(units[0])
        out.append(_UNIT_WORDS[units[0]])
    return " ".join(out)


def generic_columns(records: Sequence[Record]) -> tuple[Column, ...]:
    """Every numeric metric of ``records`` as a column (for scenarios the registry lacks)."""

    return tuple(
        Column(m, header_for(m)) for m in numeric_metrics(records) if m not in _NOT_COLUMNS
    )


def format_param(value: Scalar) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def format_cell(fig: Figure | None, column: Column, r: float | None = None) -> str:
    """One cell: the figure (scaled as the column says) and ``×r`` when given.

    An unsupported percentile is the caller's business (it needs a footnote).
    """
    if fig is None:
        return NOT_MEASURED
    if fig.spread is not None:
        text = format_spread(fig.spread, column.scale)
    else:
        text = format_number(fig.value * column.scale)
    if r is not None:
        text += f" ×{r:.0f}" if r >= 10 else f" ×{r:.2g}"
    return text


@dataclass
class _Notes:
    """Footnotes under one table, numbered in order of first use; equal texts share one."""

    texts: list[str] = field(default_factory=list)

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return str(self.texts.index(text) + 1).translate(_SUPERSCRIPT)

    def lines(self) -> list[str]:
        return [f"{str(i).translate(_SUPERSCRIPT)} {t}" for i, t in enumerate(self.texts, 1)]


def _roles(columns: Sequence[Column]) -> list[str]:
    return list(dict.fromkeys(lm.role for c in columns if (lm := latency_metric(c.metric))))


def _samples_cell(row: Row, role: str) -> str:
    pooled = row.latency.get(role)
    return NOT_MEASURED if pooled is None else f"{pooled.count:,}"


def param_text(key: str, value: Scalar) -> str:
    """``ws_ping_timeout_s``, 2.0 -> ``ws ping timeout 2 s`` (the unit after the value)."""
    label, _, unit = header_for(key).rpartition(" ")
    if label and unit in _UNIT_WORDS.values():
        return f"{label} {format_param(value)} {unit}"
    return f"{header_for(key)} {format_param(value)}"


def _per_transport(table_rows: Sequence[Row], keys: Sequence[str]) -> list[str]:
    firsts = {r.transport: r for r in reversed(table_rows)}
    lines = []
    for transport in dict.fromkeys(r.transport for r in table_rows):
        params = firsts[transport].params
        shown = [param_text(k, params[k]) for k in keys if params.get(k) is not None]
        if shown:
            lines.append(f"- {transport}: {', '.join(shown)}")
    return lines


def _describe(row: Row, params: Sequence[str]) -> str:
    shown = ", ".join(f"{header_for(k)} {format_param(row.params.get(k))}" for k in params)
    return f"{row.transport} ({shown})" if shown else row.transport


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def scenario_table(
    records: Sequence[Record], scenario: str, columns: Sequence[Column] | None = None
) -> str:
    """The markdown table of ``scenario`` over ``records``, with its notes ("" if no records).

    ``columns``: the scenario's (None: :func:`generic_columns`).
    """
    all_rows = rows(records, scenario)
    if not all_rows:
        return ""
    measured = [r for r in all_rows if r.records]
    cols = (
        tuple(columns)
        if columns is not None
        else generic_columns([rec for r in measured for rec in r.records])
    )
    params, per_transport = varying_params(all_rows)
    roles = _roles(cols)
    sample_headers = ["n samples" if len(roles) == 1 else f"n samples ({role})" for role in roles]
    head = ["transport", *(header_for(k) for k in params), *(_escape(c.header) for c in cols)]
    head += [*sample_headers, "repeats"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = _Notes()
    warnings: list[str] = []
    skipped: list[str] = []
    legacy = False
    for row in measured:
        why_not = not_applicable(row.records)
        if why_not is not None:
            given = [k for k in params if row.params.get(k) is not None]
            why = why_not.removeprefix("not applicable: ")
            skipped.append(f"{_describe(row, given)}: {why}")
            continue
        name = row.transport
        if row.problems:
            warnings.append(f"⚠{len(warnings) + 1} {_describe(row, params)}: "
                            + "; ".join(row.problems))  # fmt: skip
            name += f" ⚠{len(warnings)}"
        cells = [name, *(format_param(row.params.get(k)) for k in params)]
        for c in cols:
            fig = figure(row, c.metric)
            if fig is not None and not fig.supported:
                lm = latency_metric(c.metric)
                pct = lm.pct if lm else c.header
                cells.append(UNSUPPORTED + notes.mark(
                    f"{pct} needs ≥ {fig.needs or 0:,} samples; this row has {fig.samples or 0:,}."
                ))  # fmt: skip
                continue
            if fig is not None and latency_metric(c.metric) and fig.samples is None:
                legacy = True
            cells.append(format_cell(fig, c, ratio(row, c.metric, all_rows) if c.ratio else None))
        cells += [_samples_cell(row, role) for role in roles]
        cells.append(str(row.repeats))
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    if notes.texts:
        lines += ["", *notes.lines()]
    transport_params = _per_transport(measured, per_transport)
    if transport_params:
        lines += ["", "Params that differ only by transport:", "", *transport_params]
    if legacy:
        lines += [
            "",
            "Latency from results without histograms (schema 1): the median [min–max] of "
            "each repeat's own percentile; how many samples were behind them is not known.",
        ]
    if skipped:
        lines += ["", "Not applicable:", ""]
        lines += [f"- {_escape(s)}" for s in skipped]
    if warnings:
        lines += ["", "Delivery check failed (timings from these runs are not clean):", ""]
        lines += [f"- {_escape(w)}" for w in warnings]
    failed = [(row, rec) for row in all_rows for rec in row.failed]
    if failed:
        lines += ["", "Failed measurements (no figures):", ""]
        lines += [
            f"- {_describe(row, params)}, repeat {rec.repeat}: {_escape(rec.error or '')}"
            for row, rec in failed
        ]
    return "\n".join(lines)
