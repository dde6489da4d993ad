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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from experiments import aggregate
from experiments.harness import PRESPAWN, discard_spare, kill_all
from experiments.profiles import EXPERIMENT_SETTINGS, PROFILES
from experiments.report import write_report
from experiments.results import environment, new_results, results_dir, write_results
from experiments.runner import Progress as RunProgress
from experiments.runner import run_suite
from experiments.scenarios import SCENARIOS, UnknownScenario
from experiments.scenarios import get as get_scenario
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


def _summary(records: Sequence[dict[str, Any]], scenarios: Sequence[str]) -> Table:
    table = Table(title="Summary (median over repeats)")
    table.add_column("scenario")
    table.add_column("transport")
    table.add_column("params")
    table.add_column("figures")
    table.add_column("delivery")
    for scenario in scenarios:
        for row in aggregate.rows(records, scenario):
            cols = aggregate.headline(scenario, row.records)[:4]
            figures = ", ".join(
                f"{m}={s.median:.4g}" for m in cols if (s := row.spreads.get(m)) is not None
            )
            params = " ".join(f"{k}={v}" for k, v in row.params.items() if k != "warmup_s")
            status = "[red]" + "; ".join(row.problems)[:60] if row.problems else "[green]ok"
            table.add_row(scenario, row.transport, params, figures, status)
    return table


async def _run(args: argparse.Namespace, console: Console) -> int:
    profile = PROFILES[args.profile]
    transports = [get_transport(n) for n in (args.transports or list(TRANSPORTS))]
    scenarios = [get_scenario(n) for n in (args.scenarios or list(SCENARIOS))]
    repeats = profile.repeats if args.repeat is None else args.repeat
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
        task = bar.add_task("starting", total=repeats * len(scenarios) * len(transports), note="")
        hooks = RunProgress(
            step=lambda d: bar.update(task, description=d, note=""),
            note=lambda n: bar.update(task, note=n),
            advance=lambda: bar.advance(task),
        )
        PRESPAWN["enabled"] = True
        try:
            results["records"] = await run_suite(
                profile, transports, scenarios, repeats, settings, out, hooks
            )
        finally:
            await discard_spare()
    results["environment"]["elapsed_s"] = round(time.monotonic() - started, 2)
    path = write_results(out, results)
    report = write_report(out)
    console.print(_summary(results["records"], [s.name for s in scenarios]))
    console.print(f"results: {path}\nreport:  {report}")
    return 0


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
