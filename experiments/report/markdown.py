"""report.md and PNG plots, written from results.json alone.

``python -m experiments.report RESULTS_DIR`` (re)writes ``RESULTS_DIR/report.md`` and its
plots. Per scenario (in the order measured) a table: each cell is the median over repeats,
``[min–max]`` when there are several, and ``×r``, the ratio of medians to the reference
transport (``tornado-ws``) with the same params. Rows whose delivery check failed are marked
⚠ and explained under the table. Then the conditions (machine, versions, settings, profile,
repeats, commit) and a line on how to cite the figures.

Extra sections: :data:`SECTIONS` maps a scenario name to functions
``(results, out_dir) -> markdown`` that run after that scenario's table (plots live in
:mod:`experiments.plots`). Fault scenarios register their reconnection section and timeline
plots by adding their module's dict to :data:`SECTIONS`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments import aggregate, plots, report_faults
from experiments.results import load_results
from experiments.stats import Spread

__all__ = ["SECTIONS", "Section", "format_cell", "format_number", "main", "render", "write_report"]

Section = Callable[[Mapping[str, Any], Path], str]

#: Scenario -> extra sections rendered after its table.
SECTIONS: dict[str, tuple[Section, ...]] = {**plots.SECTIONS, **report_faults.SECTIONS}


def format_number(x: float) -> str:
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 0.01:
        return f"{x:.3g}"
    return f"{x:.2e}"


def format_cell(s: Spread | None, ratio: float | None = None) -> str:
    """``median [min–max] ×ratio`` (range only with several repeats, ratio when known)."""
    if s is None:
        return "–"
    text = format_number(s.median)
    if s.n > 1 and s.low != s.high:
        text += f" [{format_number(s.low)}–{format_number(s.high)}]"
    if ratio is not None:
        text += f" ×{ratio:.2g}"
    return text


def _varying_params(rows: Sequence[aggregate.Row]) -> list[str]:
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r.params))
    varying = [
        k for k in keys if len({json.dumps(r.params.get(k), sort_keys=True) for r in rows}) > 1
    ]
    return [k for k in varying if k != "modules"]


def scenario_table(records: Sequence[Mapping[str, Any]], scenario: str) -> str:
    rows = aggregate.rows(records, scenario)
    if not rows:
        return ""
    columns = aggregate.headline(scenario, [r for row in rows for r in row.records])
    params = _varying_params(rows)
    head = ["transport", *params, *columns, "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for row in rows:
        name = row.transport
        if row.problems:
            name += f" ⚠{len(notes) + 1}"
            notes.append(f"{len(notes) + 1}. {row.transport}: " + "; ".join(row.problems))
        cells = [name, *(str(row.params.get(k, "")) for k in params)]
        cells += [format_cell(row.spreads.get(m), aggregate.ratio(row, m, rows)) for m in columns]
        cells.append(str(row.repeats))
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "⚠ delivery check failed (timings from these runs are not clean):", ""]
        lines += notes
    return "\n".join(lines)


def _conditions(results: Mapping[str, Any]) -> str:
    env = results["environment"]
    packages = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()) if v)
    dirty = " (uncommitted changes)" if env.get("git_dirty") else ""
    lines = [
        "## Conditions",
        "",
        f"- Created: {results['created']}; profile **{results['profile']}**, "
        f"{env.get('repeats', '?')} repeat(s); elapsed {env.get('elapsed_s', '?')} s",
        f"- Machine: {env.get('cpu_model')}, {env.get('cores')} cores, {env.get('os')}",
        f"- Python {env.get('python')} ({env.get('python_implementation', '')})",
        f"- Packages: {packages}",
        f"- Commit: `{env.get('git_commit')}`{dirty}",
        f"- Command: `{' '.join(env.get('argv', []))}`",
        "",
        "Settings shared by every transport (sent to servers as `--set KEY=VALUE`):",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    shared = results["settings"]
    lines += [f"| {k} | {v} |" for k, v in shared.items()]
    overrides = []
    for name, eff in env.get("effective_settings", {}).items():
        diff = {k: v for k, v in eff.items() if shared.get(k) != v}
        if diff:
            overrides.append(
                f"- {name} runs with its fixed settings: "
                + ", ".join(f"{k}={v}" for k, v in diff.items())
            )
    if overrides:
        lines += ["", *overrides]
    return "\n".join(lines)


def _cite(results: Mapping[str, Any]) -> str:
    env = results["environment"]
    commit = (env.get("git_commit") or "unknown")[:12]
    return (
        "## How to cite\n\n"
        f"> transport-bench @ {commit}, profile {results['profile']}, "
        f"{env.get('repeats', '?')} repeats, {env.get('cpu_model')} ({env.get('cores')} cores), "
        f"Python {env.get('python')}, {results['created']}; figures are medians over repeats "
        "with [min–max], ratios ×r against tornado-ws."
    )


def render(results: Mapping[str, Any], out_dir: Path) -> str:
    """The whole report as markdown; writes the plots into ``out_dir``."""
    records = results["records"]
    env = results["environment"]
    docs: Mapping[str, str] = env.get("scenario_docs", {})
    scenarios = list(dict.fromkeys(r["scenario"] for r in records))
    parts = [
        "# Transport comparison",
        "",
        f"Profile **{results['profile']}**, {env.get('repeats', '?')} repeat(s), "
        f"transports: {', '.join(dict.fromkeys(r['transport'] for r in records))}. "
        "Cells: median [min–max] over repeats, ×ratio to tornado-ws.",
    ]
    for scenario in scenarios:
        parts += ["", f"## {scenario}", ""]
        if scenario in docs:
            parts += [docs[scenario], ""]
        parts.append(scenario_table(records, scenario))
        for section in SECTIONS.get(scenario, ()):
            text = section(results, out_dir)
            if text:
                parts += ["", text]
    parts += ["", _conditions(results), "", _cite(results), ""]
    return "\n".join(parts)


def write_report(directory: Path) -> Path:
    """Read ``directory/results.json``; write ``report.md`` and plots beside it."""
    results = load_results(directory)
    path = directory / "report.md"
    path.write_text(render(results, directory))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m experiments.report RESULTS_DIR", file=sys.stderr)
        return 2
    try:
        path = write_report(Path(args[0]))
    except (OSError, ValueError) as exc:
        print(f"python -m experiments.report: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
