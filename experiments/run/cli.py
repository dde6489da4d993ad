"""``python -m experiments``: run the comparison and write results.json, report.md, plots.

``python -m experiments [--profile quick|default|full] [--transports a,b] [--scenarios x,y]
[--repeat N] [--out DIR]`` — transports and scenarios default to every registered one.
A bad argument or an unknown name is one line on stderr and exit code 2; Ctrl-C tears every
process down and exits with 130. A rich progress bar shows what runs; a summary table
follows; the report is written from results.json by :mod:`experiments.report`.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from experiments import aggregate
from experiments.fault_profiles import fault_profile
from experiments.harness import PRESPAWN, discard_spare, kill_all, settle_teardowns
from experiments.profiles import EXPERIMENT_SETTINGS, PROFILES
from experiments.report import write_report
from experiments.results import environment, new_results, results_dir, write_results
from experiments.runner import Progress as RunProgress
from experiments.runner import run_suite, scenario_repeats
from experiments.scenarios import SCENARIOS, Scenario, UnknownScenario
from experiments.scenarios import get as get_scenario
from experiments.stats import spread
from transports.registry import TRANSPORTS, UnknownTransport
from transports.registry import get as get_transport

__all__ = ["main"]

PROG = "python -m experiments"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--profile", choices=sorted(PROFILES), default="default")
    p.add_argument("--transports", type=_names, help=f"comma-separated; of {', '.join(TRANSPORTS)}")
    p.add_argument("--scenarios", type=_names, help=f"comma-separated; of {', '.join(SCENARIOS)}")
    p.add_argument("--repeat", type=int, help="repeats (default: the profile's)")
    p.add_argument("--out", type=Path, help="output directory (default: results/<UTC time>/)")
    return p


#: The summary table's figures per scenario: (metric, label, unit, scale).
SUMMARY_FIGURES: dict[str, tuple[tuple[str, str, str, float], ...]] = {
    "latency": (
        ("latency_ms_p50", "p50", " ms", 1.0),
        ("latency_ms_p99", "p99", " ms", 1.0),
        ("latency_ms_max", "max", " ms", 1.0),
    ),
    "throughput": (
        ("samples_per_s", "", "/s", 1.0),
        ("pusher_samples_per_s", "pusher", "/s", 1.0),
        ("overhead_fraction", "overhead", "%", 100.0),
    ),
    "fanout": (
        ("latency_ms_p99", "p99", " ms", 1.0),
        ("delivered_fraction", "delivered", "%", 100.0),
        ("server_cpu_percent", "server cpu", "%", 1.0),
    ),
    "complexity": (
        ("sloc", "sloc", "", 1.0),
        ("cyclomatic_total", "ccn", "", 1.0),
        ("wire_bytes_per_sample", "wire", " B/sample", 1.0),
    ),
    **{
        fault: (
            ("detect_s_median", "detect", " s", 1.0),
            *(
                (("server_drop_s_median", "server drop", " s", 1.0),)
                if fault == "blackhole"
                else ()
            ),
            ("reconnect_s_median", "reconnect", " s", 1.0),
            ("lost", "lost", "", 1.0),
            ("duplicated", "dup", "", 1.0),
        )
        for fault in ("restart", "reset", "blackhole")
    },
    "slow-consumer": (
        ("server_rss_growth_bytes", "rss growth", " MiB", 1.0 / (1 << 20)),
        ("normal_client_latency_ms_p99", "p99", " ms", 1.0),
        ("steady_latency_ms_p99", "steady p99", " ms", 1.0),
    ),
    "bad-input": (
        ("server_survived", "survived", "", 1.0),
        ("others_unaffected", "unaffected", "", 1.0),
    ),
}


def _variant(scenario: str, params: Mapping[str, Any]) -> str:
    """What tells a scenario's rows of one transport apart (rate, clients), in short."""
    if scenario == "latency":
        return f" {params.get('rate_hz', 0):g}/s"
    if scenario == "fanout":
        return f" ×{params.get('clients', 0)}"
    return ""


def _figure(value: float, unit: str) -> str:
    if unit == " s" and abs(value) < 1.0:
        return f"{value * 1000:.3g} ms"  # a reset noticed in 1 ms reads better than 0.000932 s
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return text + unit


def row_figures(row: aggregate.Row) -> str:
    """The row's headline medians (over repeats) as ``label value`` pairs."""
    parts: list[str] = []
    for metric, label, unit, scale in SUMMARY_FIGURES.get(row.scenario, ()):
        s = row.spreads.get(metric)
        if s is None:
            s = spread(r.get("metrics", {}).get(metric) for r in row.records)
        if s is None:
            if metric.startswith(("detect_s", "server_drop_s", "reconnect_s")):
                parts.append(f"{label} —")
            continue
        parts.append(f"{label} {_figure(s.median * scale, unit)}".strip())
    if row.scenario in ("restart", "reset", "blackhole"):
        faults = sum(int(r.get("metrics", {}).get("faults") or 0) for r in row.records)
        parts.insert(0, f"{faults} faults")
        hold = row.params.get("hold_max_s")
        within = f" within {hold:g} s" if isinstance(hold, int | float) else ""
        for key, side in (("detect_s", "client"), ("server_drop_s", "server")):
            missed = sum(int(r.get("metrics", {}).get(f"{key}_missed") or 0) for r in row.records)
            if missed:
                parts.append(f"{side}: {missed} not detected{within}")
    if row.scenario == "bad-input":
        cases = row.spreads.get("cases")
        if cases is not None:
            parts = [f"{p}/{cases.median:g}" for p in parts]
    return " · ".join(parts)


def _summary(records: Sequence[dict[str, Any]], scenarios: Sequence[str]) -> Table:
    table = Table(title="Summary (median over repeats; report.md has every figure)")
    table.add_column("scenario", no_wrap=True)
    table.add_column("transport", no_wrap=True)
    table.add_column("headline figures")
    table.add_column("check", max_width=28)
    for scenario in scenarios:
        for row in aggregate.rows(records, scenario):
            if row.problems:
                first = row.problems[0].split(": ", 1)[-1]
                status = f"[red]⚠ {len(row.problems)}: {first[:40]}"
            else:
                status = "[green]ok"
            label = scenario + _variant(scenario, row.params)
            table.add_row(label, row.transport, row_figures(row), status)
    return table


async def _run(args: argparse.Namespace, console: Console) -> int:
    profile = PROFILES[args.profile]
    transports = [get_transport(n) for n in (args.transports or list(TRANSPORTS))]
    scenarios = [get_scenario(n) for n in (args.scenarios or list(SCENARIOS))]
    repeats = profile.repeats if args.repeat is None else args.repeat
    # --repeat N repeats the faults too; otherwise the fault profile says (its runs inject
    # enough faults each).
    fault_repeats = fault_profile(profile.name).repeats if args.repeat is None else None
    out = results_dir(args.out)
    settings = EXPERIMENT_SETTINGS
    env = environment(
        profile=profile.name,
        repeats=repeats,
        transports=[t.name for t in transports],
        scenarios=[s.name for s in scenarios],
        effective_settings={t.name: t.settings(settings).as_dict() for t in transports},
        seeds=list(range(1, repeats + 1)),
        scenario_docs={s.name: inspect.getdoc(s) or "" for s in scenarios},
    )
    results = new_results(profile.name, settings.as_dict(), env)
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    ) as bar:
        steps = sum(scenario_repeats(s, repeats, fault_repeats) for s in scenarios)
        task = bar.add_task("starting", total=steps * len(transports), note="")
        hooks = RunProgress(
            step=lambda d: bar.update(task, description=d, note=""),
            note=lambda n: bar.update(task, note=n),
            advance=lambda: bar.advance(task),
        )
        PRESPAWN["enabled"] = True
        try:
            results["records"] = await run_suite(
                profile,
                transports,
                scenarios,
                repeats,
                settings,
                out,
                hooks,
                fault_repeats=fault_repeats,
            )
        finally:
            await settle_teardowns()
            await discard_spare()
    elapsed = round(time.monotonic() - started, 2)
    results["environment"]["elapsed_s"] = elapsed
    results["environment"]["fault_repeats"] = min(repeats, fault_repeats or repeats)
    by_kind = _elapsed_by_kind(results["records"], scenarios)
    results["environment"]["elapsed_by_kind_s"] = by_kind
    path = write_results(out, results)
    report = write_report(out)
    summary = _summary(results["records"], [s.name for s in scenarios])
    if not console.is_terminal:  # a log or CI: rich assumes 80 columns and wraps every figure
        console.width = max(console.width, 120)
    console.print(summary)
    console.print(
        f"wall time {elapsed:.0f} s: "
        + ", ".join(f"{kind} {seconds:.0f} s" for kind, seconds in by_kind.items())
    )
    console.print(f"results: {path}\nreport:  {report}")
    return 0


def _elapsed_by_kind(
    records: Sequence[dict[str, Any]], scenarios: Sequence[Scenario]
) -> dict[str, float]:
    """Wall seconds spent per scenario kind (steady, fault). Concurrent transports of one
    scenario overlap, so each (scenario, repeat) counts its slowest transport."""
    kinds = {s.name: s.kind for s in scenarios}
    spans: dict[tuple[str, int, str], float] = {}
    for r in records:
        key = (r["scenario"], r["repeat"], r["transport"])
        spans[key] = float(r.get("elapsed_s") or 0.0)  # every record of a step: the same span
    slowest: dict[tuple[str, int], float] = {}
    summed: dict[tuple[str, int], float] = {}
    for (scenario, repeat, _), seconds in spans.items():
        slowest[(scenario, repeat)] = max(slowest.get((scenario, repeat), 0.0), seconds)
        summed[(scenario, repeat)] = summed.get((scenario, repeat), 0.0) + seconds
    out: dict[str, float] = {}
    for (scenario, repeat), seconds in summed.items():
        concurrent = getattr(SCENARIOS.get(scenario), "concurrent", False)
        span = slowest[(scenario, repeat)] if concurrent else seconds
        kind = kinds.get(scenario, "steady")
        out[kind] = round(out.get(kind, 0.0) + span, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    err = Console(stderr=True)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.repeat is not None and args.repeat < 1:
        print(f"{PROG}: error: --repeat must be >= 1, got {args.repeat}", file=sys.stderr)
        return EXIT_USAGE
    try:
        for name in args.transports or ():
            get_transport(name)
        for name in args.scenarios or ():
            get_scenario(name)
    except (UnknownTransport, UnknownScenario) as exc:
        print(f"{PROG}: error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, err))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; every server and client stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        kill_all()
