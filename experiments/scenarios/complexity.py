"""The ``complexity`` scenario."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import lizard

from experiments.context import RunContext
from experiments.jobs import ClientGroup
from experiments.scenarios.common import delivery_metrics, run_worker, wire_bytes
from transports.contract import Transport

__all__ = ["COMPLEXITY", "Complexity", "code_size", "module_files"]


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
    counters via ``ss``, :mod:`experiments.sockstats`) is divided by the samples received, so
    framing, HTTP headers and heartbeats all count. The ledger checks that delivery first.
    """

    name = "complexity"
    kind = "steady"

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        cp = ctx.profile.complexity
        transport = ctx.transport
        metrics: dict[str, Any] = code_size(module_files(transport.modules))
        metrics["dependencies"] = len(transport.dependencies)
        metrics.update(feature_flags(transport))
        ctx.note(f"wire bytes at {cp.wire_rate_hz:g}/s")
        async with ctx.server(cp.wire_rate_hz) as server:
            result = await run_worker(
                ctx, server, (ClientGroup(1),), warmup_s=0.2, duration_s=cp.wire_duration_s
            )
        delivery = delivery_metrics(result)
        metrics.update({f"wire_{k}": v for k, v in delivery.items()})
        metrics["delivery_ok"] = delivery["delivery_ok"]
        metrics["delivery_problems"] = delivery["delivery_problems"]
        probe, got = result["server"], delivery["received_in_window"]
        wire = wire_bytes(probe)
        if wire is not None and got:
            metrics["wire_bytes_per_sample"] = wire / got
        params = {
            "modules": list(transport.modules),
            "wire_rate_hz": cp.wire_rate_hz,
            "wire_duration_s": cp.wire_duration_s,
        }
        return [ctx.record(params, metrics)]


COMPLEXITY = Complexity()
