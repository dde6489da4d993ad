"""The console summary: a rich table at the end, and one plain line per finished scenario.

Both show each scenario's ``headline`` columns, read exactly as the report's tables read
them (medians over repeats, latency pooled over repeats; a percentile with too few samples
is ``—``), and say whether the delivery check passed: the console never shows a figure the
report would flag without the flag. A row names the dimensions that tell a transport's rows
apart (``tcp tls · uvloop``), so rows run under different conditions never look alike, and a row
that was not applicable says why instead of showing empty figures.

:func:`scenario_line` is for output that is not a terminal (a log, CI): one line when a
scenario finishes, instead of ten silent minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from experiments.report.columns import Column
from experiments.report.dimensions import label, not_applicable, telling_apart
from experiments.report.figures import format_number
from experiments.report.rows import Row, figure, rows
from experiments.report.tables import NOT_MEASURED, UNSUPPORTED
from experiments.results import Record

if TYPE_CHECKING:
    from experiments.scenarios.scenario import Scenario

__all__ = ["headline_figures", "labelled", "row_check", "scenario_line", "skipped", "summary_table"]

#: Last words of a header that are its unit: the value goes before them ("p99 1.4 ms").
_UNITS = frozenset({"ms", "s", "%", "Hz", "bytes", "B", "KiB", "MiB", "×"})


def labelled(column: Column, value: str) -> str:
    """``value`` with the column's label and unit: header "p99 ms" -> "p99 1.4 ms",
    "samples/s" -> "1,200 samples/s", "lost" -> "lost 0"."""
    label, _, last = column.header.rpartition(" ")
    if value in (NOT_MEASURED, UNSUPPORTED):  # no figure: no unit either
        return f"{label if last in _UNITS else column.header} {value}".strip()
    if last in _UNITS or "/" in last:
        return f"{label} {value} {last}".strip()
    return f"{column.header} {value}"


def _figure(row: Row, column: Column) -> str:
    fig = figure(row, column.metric)
    if fig is None:
        return labelled(column, NOT_MEASURED)
    if not fig.supported:
        return labelled(column, UNSUPPORTED)
    value = fig.value * column.scale
    label, _, unit = column.header.rpartition(" ")
    if unit == "s" and 0 < abs(value) < 1:  # "detect 7.4 ms" reads better than 0.0074 s
        return f"{label} {format_number(value * 1000)} ms".strip()
    return labelled(column, format_number(value))


def headline_figures(scenario: Scenario, row: Row) -> str:
    """The row's headline figures, ``label value unit`` joined by commas."""
    return ", ".join(_figure(row, c) for c in scenario.headline)


def skipped(row: Row) -> str | None:
    """Why a row was not measured at all, when its scenario said so (``skipped: ...``, e.g.
    "not applicable: UDP (...)" for a fault a UDP transport cannot have) or the runner did
    (``metrics["not_applicable"]``: a path, client kind, security or loop it cannot take),
    else None."""
    if row.records and not row.failed:
        return not_applicable(row.records)
    reasons = {(r.error or "").partition("skipped: ")[2] for r in row.failed}
    if row.records or not row.failed or "" in reasons:
        return None
    return "; ".join(sorted(reasons))


def row_check(row: Row) -> str | None:
    """What is wrong with a row, in a few words (None: nothing)."""
    if skipped(row) is not None:
        return None
    if row.failed:
        first = row.failed[0].error or "failed"
        return f"{len(row.failed)} failed: {first}"
    if row.problems:
        return f"{len(row.problems)}: {row.problems[0].split(': ', 1)[-1]}"
    return None


def _variant(scenario: Scenario, row: Row) -> str:
    """What tells the row apart within its scenario ("" for a row that did not run)."""
    return "" if skipped(row) is not None else scenario.variant(row.params).strip()


def _label(scenario: Scenario, row: Row, dimensions: Sequence[str] = ()) -> str:
    words = [row.transport, _variant(scenario, row), label(row.params, dimensions)]
    return " ".join(w for w in words if w)


def _figures(scenario: Scenario, row: Row) -> str:
    reason = skipped(row)
    if reason is not None:
        return reason
    return headline_figures(scenario, row) if row.records else "failed"


def scenario_line(scenario: Scenario, records: Sequence[Record]) -> str:
    """``latency done: tornado-ws 100/s p99 1.4 ms · sse 100/s p99 1.5 ms (3 ⚠)``."""
    table_rows = rows(records, scenario.name)
    if not table_rows:
        return f"{scenario.name} done: no records"
    dimensions = telling_apart(records)
    parts = []
    for row in table_rows:
        parts.append(f"{_label(scenario, row, dimensions)} {_figures(scenario, row)}")
    flagged = sum(row_check(row) is not None for row in table_rows)
    tail = f" ({flagged} ⚠)" if flagged else ""
    return f"{scenario.name} done: " + " · ".join(parts) + tail


def summary_table(records: Sequence[Record], scenarios: Sequence[Scenario]) -> Table:
    """One line per scenario row: its headline figures and the delivery check."""
    table = Table(title="Summary (medians over repeats, latency pooled; report.md has all)")
    table.add_column("scenario", no_wrap=True)
    table.add_column("transport", no_wrap=True)
    table.add_column("headline figures")
    table.add_column("check", max_width=40)
    dimensions = telling_apart(records)
    for scenario in scenarios:
        for row in rows(records, scenario.name):
            variant = _variant(scenario, row)
            name = f"{scenario.name} {variant}" if variant else scenario.name
            who = " ".join(w for w in (row.transport, label(row.params, dimensions)) if w)
            problem = row_check(row)
            check = "[green]ok" if problem is None else f"[red]⚠ {escape(problem[:60])}"
            table.add_row(escape(name), escape(who), escape(_figures(scenario, row)), check)
    return table
