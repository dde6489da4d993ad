"""report.md and its PNG plots, written from results.json alone.

``python -m experiments.report RESULTS_DIR`` (re)writes ``RESULTS_DIR/report.md`` and its
plots. For each scenario, in the order measured: ``## name``, the scenario's docstring (as
recorded in the run, else the registry's), its table (:mod:`experiments.report.tables`), then
whatever its ``sections(results, out_dir)`` add (plots, reconnection table, ...). A run over
several network paths gets one ``### on NETWORK`` section per path under each scenario (the
path as measured, then that path's table and sections, its plots in ``NETWORK/``), and an
``## Across networks`` summary; a run over several ``--via`` paths gets ``## Through a reverse
proxy`` (:mod:`experiments.report.via`); a run plain and over TLS ``## TLS overhead``, one on
both event loops ``## Event loops side by side`` (:mod:`experiments.report.side_by_side`),
one under both ``--gc`` policies ``## Garbage collector``
(:mod:`experiments.report.garbage_collector`).
Then the conditions with the one settings table, and how to cite. Records differ by every
dimension they ran under (network, via, security, client kind, loop, gc): a table shows those that
vary as columns, and no summary takes a figure from a mix of them
(:mod:`experiments.report.dimensions`).

A scenario the registry does not know (results of an older or newer version) still gets a
table of every numeric metric its records carry; schema 1 files load through
:func:`experiments.results.load_results` and render the same way.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from experiments.report.conditions import cite_section, conditions_section
from experiments.report.garbage_collector import gc_section
from experiments.report.networks import cross_network_section
from experiments.report.reconnect_cost import reconnect_cost_section
from experiments.report.rows import REFERENCE
from experiments.report.side_by_side import client_kinds_section, loops_section, tls_section
from experiments.report.tables import scenario_table
from experiments.report.via import via_section
from experiments.report.websocket_libraries import websocket_libraries_section
from experiments.results import Record, Results, load_results
from transports.registry import get as get_transport

if TYPE_CHECKING:
    from experiments.scenarios.scenario import Scenario

__all__ = ["main", "render", "write_report"]


def _registry() -> Mapping[str, Scenario]:
    # Imported when a report is written, not with this module: scenarios import the report
    # (their sections), so a module-level import would be a cycle.
    from experiments.scenarios.registry import SCENARIOS

    return SCENARIOS


def _intro(results: Results) -> str:
    env = results.environment
    transports = ", ".join(dict.fromkeys(r.transport for r in results.records))
    return (
        f"Profile **{results.profile}**, {env.repeats or '?'} repeat(s), transports: "
        f"{transports or 'none'}.\n\n"
        "How to read the tables: each cell is the median over repeats, with [min–max] when "
        "repeats differ; latency percentiles are pooled over every sample of every repeat "
        "(column *n samples*), and a percentile with too few samples behind it shows — with a "
        f"footnote; ×r is the ratio to {REFERENCE} under the same conditions. ⚠N marks a row "
        "whose delivery check failed (explained under its table). The settings every "
        "transport ran with are in [Conditions](#conditions)."
    )


def _network(record: Record) -> str:
    return str(record.params.get("network", "loopback"))


#: A plot's link in a section's markdown: ``![alt](file.png)`` with no directory.
_PLOT = re.compile(r"(!\[[^\]]*\]\()([^)/]+\.png\))")
_HEADING = re.compile(r"^(#{2,}) ", re.MULTILINE)


def _scenario_body(
    results: Results, name: str, scenario: Scenario | None, out_dir: Path, subdir: str = ""
) -> list[str]:
    """The table and sections of one scenario over ``results``; plots go in ``subdir``."""
    parts = [scenario_table(results.records, name, None if scenario is None else scenario.columns)]
    if scenario is not None:
        where = out_dir / subdir if subdir else out_dir
        where.mkdir(parents=True, exist_ok=True)
        for text in scenario.sections(results, where):
            if text and subdir:  # one level down, under the path's own heading
                text = _HEADING.sub(r"#\g<1> ", _PLOT.sub(rf"\g<1>{subdir}/\g<2>", text))
            if text:
                parts.append("\n" + text)
    return parts


def _path_line(results: Results, network: str) -> str:
    measured = results.environment.networks.get(network)
    if measured is None:
        return "Loopback: no namespaces, no emulation." if network == "loopback" else ""
    return f"{measured.nominal}; measured before the run: {measured.measured}"


def _is_websocket(name: str) -> bool:
    """Whether the registry's transport of that name is a WebSocket one (a ws:// endpoint)."""
    try:
        return get_transport(name).endpoint.startswith("ws://")
    except LookupError:
        return False


def render(results: Results, out_dir: Path, scenarios: Mapping[str, Scenario] | None = None) -> str:
    """The whole report as markdown; the scenarios' sections write their plots into
    ``out_dir``. ``scenarios``: name -> scenario (None: the registry)."""
    registry = _registry() if scenarios is None else scenarios
    docs = results.environment.scenario_docs
    parts = ["# Transport comparison", "", _intro(results)]
    for name in dict.fromkeys(r.scenario for r in results.records):
        scenario = registry.get(name)
        parts += ["", f"## {name}", ""]
        doc = docs.get(name) or (inspect.getdoc(scenario) if scenario is not None else None)
        if doc:
            parts += [doc, ""]
        if scenario is None:
            parts += [
                "*This version does not know this scenario: every numeric metric it "
                "recorded is shown.*",
                "",
            ]
        mine = [r for r in results.records if r.scenario == name]
        networks = list(dict.fromkeys(_network(r) for r in mine))
        if len(networks) < 2:
            parts += _scenario_body(results, name, scenario, out_dir)
            continue
        for network in networks:
            on_path = msgspec.structs.replace(
                results, records=[r for r in results.records if _network(r) == network]
            )
            parts += ["", f"### {name} on {network}", "", _path_line(results, network), ""]
            parts += _scenario_body(on_path, name, scenario, out_dir, subdir=network)
    across = cross_network_section(results)
    if across:
        parts += ["", across]
    sections = (
        via_section(results),
        tls_section(results),
        reconnect_cost_section(results),
        loops_section(results),
        client_kinds_section(results),
        gc_section(results),
        websocket_libraries_section(results, _is_websocket),
    )
    for section in sections:
        if section:
            parts += ["", section]
    parts += ["", conditions_section(results), "", cite_section(results), ""]
    return "\n".join(parts)


def write_report(directory: Path, scenarios: Mapping[str, Scenario] | None = None) -> Path:
    """Read ``directory/results.json``; write ``report.md`` and plots beside it."""
    results = load_results(directory)
    path = directory / "report.md"
    text = render(results, directory, scenarios)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.report RESULTS_DIR``: 0, or 2 with one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m experiments.report RESULTS_DIR", file=sys.stderr)
        return 2
    directory = Path(args[0])
    if not (directory / "results.json").is_file():
        print(f"python -m experiments.report: no results.json in {directory}", file=sys.stderr)
        return 2
    try:
        path = write_report(directory)
    except (OSError, ValueError) as exc:
        print(f"python -m experiments.report: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
