"""The ``complexity`` scenario: how much code and wire each transport takes."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lizard

from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.scenarios.delivery import judge
from experiments.scenarios.scenario import Column, Kind
from experiments.worker.schema import ClientGroup
from transports.contract import Transport

__all__ = ["COMPLEXITY", "Complexity", "ComplexityKnobs", "code_size", "module_files"]


@dataclass(frozen=True, slots=True)
class ComplexityKnobs:
    """The wire bytes per sample are measured at a fixed, moderate rate."""

    wire_rate_hz: float
    wire_duration_s: float


def module_files(modules: tuple[str, ...]) -> list[Path]:
    """The source files of ``modules`` (every .py file of a package)."""
    files: list[Path] = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"module {name!r} not found")
        origin = Path(spec.origin)
        if spec.submodule_search_locations:  # a package: all of it
            files.extend(sorted(origin.parent.rglob("*.py")))
        else:
            files.append(origin)
    return files


def code_size(files: list[Path]) -> dict[str, int]:
    """lizard's counts: non-comment source lines, functions, summed and worst CCN."""
    sloc = functions = total = worst = 0
    for path in files:
        info = lizard.analyze_file(str(path))
        sloc += int(info.nloc)
        for fn in info.function_list:
            functions += 1
            total += int(fn.cyclomatic_complexity)
            worst = max(worst, int(fn.cyclomatic_complexity))
    return {
        "sloc": sloc,
        "functions": functions,
        "cyclomatic_total": total,
        "cyclomatic_max": worst,
        "files": len(files),
    }


def feature_flags(transport: Transport) -> dict[str, int]:
    f = transport.features
    return {
        "resume": int(f.resume),
        "heartbeat": int(f.heartbeat),
        "browser_native": int(f.browser_native),
        "bidirectional": int(f.bidirectional),
        "push": int(f.push),
    }


class Complexity:
    """How much code and wire each transport takes.

    ``sloc`` (lizard's non-comment lines), ``cyclomatic_total`` (summed McCabe complexity of
    every function) of the transport's own modules (``Transport.modules``; the shared hub,
    client and CLI are not counted), ``dependencies`` (third-party distributions), the
    feature flags as 0/1, and ``wire_bytes_per_sample``: one client reads at a moderate fixed
    rate and the TCP payload both ways on the server's sockets over the window (kernel
    counters via ``ss``, :mod:`experiments.worker.probe`) is divided by the samples received, so
    framing, HTTP headers and heartbeats all count. The ledger checks that delivery first.
    """

    name = "complexity"
    kind: Kind = "steady"
    concurrent = False
    #: Code size and wire bytes at a fixed rate are counts: one repeat says it all.
    max_repeats: int | None = 1
    knobs: Mapping[str, ComplexityKnobs] = {
        "quick": ComplexityKnobs(wire_rate_hz=200.0, wire_duration_s=0.4),
        "default": ComplexityKnobs(wire_rate_hz=200.0, wire_duration_s=0.5),
        "full": ComplexityKnobs(wire_rate_hz=200.0, wire_duration_s=3.0),
    }
    columns = (
        Column("sloc", "lines of code"),
        Column("cyclomatic_total", "cyclomatic complexity"),
        Column("functions", "functions"),
        Column("dependencies", "dependencies"),
        Column("wire_bytes_per_sample", "wire B/sample", ratio=True),
    )
    headline = (
        Column("sloc", "sloc"),
        Column("cyclomatic_total", "ccn"),
        Column("wire_bytes_per_sample", "B/sample"),
    )

    def variant(self, params: Mapping[str, Scalar]) -> str:
        return ""

    async def run(self, ctx: RunContext) -> list[Record]:
        k = self.knobs[ctx.profile.name]
        transport = ctx.transport
        metrics: dict[str, Scalar] = {**code_size(module_files(transport.modules))}
        metrics["dependencies"] = len(transport.dependencies)
        metrics.update(feature_flags(transport))
        ctx.note(f"wire bytes at {k.wire_rate_hz:g}/s")
        async with ctx.server(k.wire_rate_hz) as server:
            result = await ctx.run_worker(
                server, (ClientGroup(1),), warmup_s=0.2, duration_s=k.wire_duration_s
            )
        delivery = judge(result.clients)
        metrics.update({f"wire_{key}": v for key, v in delivery.items()})
        metrics["delivery_ok"] = delivery["delivery_ok"]
        metrics["delivery_problems"] = delivery["delivery_problems"]
        got = sum(c.received_in_window for c in result.clients)
        wire = result.server.wire_bytes if result.server is not None else None
        if wire is not None and got:
            metrics["wire_bytes_per_sample"] = wire / got
        params: dict[str, Scalar] = {
            "modules": ", ".join(transport.modules),
            "wire_rate_hz": k.wire_rate_hz,
            "wire_duration_s": k.wire_duration_s,
        }
        return [ctx.record(params, metrics)]

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        return []


COMPLEXITY = Complexity()
