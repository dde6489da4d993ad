"""PNG plots of the steady-state scenarios (matplotlib, Agg), from results.json alone.

Each function takes the results dict and the output directory, writes one PNG and returns
the markdown that shows it ("" when there is nothing to plot). :data:`SECTIONS` maps each
scenario to its plots; :mod:`experiments.report` renders them after the scenario's table.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["SECTIONS", "fanout_plot", "latency_cdf_plot", "throughput_plot"]


def _records(results: Mapping[str, Any], scenario: str) -> list[Mapping[str, Any]]:
    return [r for r in results["records"] if r["scenario"] == scenario and not r.get("error")]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def latency_cdf_plot(results: Mapping[str, Any], out_dir: Path) -> str:
    """Latency CDF per transport, one panel per rate (repeat 0 of each)."""
    records = [r for r in _records(results, "latency") if r.get("series", {}).get("latency_cdf_ms")]
    if not records:
        return ""
    rates = sorted({r["params"]["rate_hz"] for r in records})
    fig, axes = plt.subplots(1, len(rates), figsize=(5.5 * len(rates), 4.2), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        seen: set[str] = set()
        for r in records:
            if r["params"]["rate_hz"] != rate or r["transport"] in seen:
                continue
            seen.add(r["transport"])
            points = r["series"]["latency_cdf_ms"]
            ax.plot([p[1] for p in points], [p[0] / 100 for p in points], label=r["transport"])
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of samples")
        ax.set_title(f"{rate:g} samples/s, one client")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "latency_cdf.png", dpi=100)
    plt.close(fig)
    return "![latency CDF](latency_cdf.png)"


def fanout_plot(results: Mapping[str, Any], out_dir: Path) -> str:
    """p99 latency, server CPU and RSS per connection against the number of clients."""
    records = _records(results, "fanout")
    if not records:
        return ""
    panels = (
        ("latency_ms_p99", "p99 latency (ms)"),
        ("server_cpu_percent", "server CPU (%)"),
        ("server_rss_bytes_per_connection", "server RSS per connection (bytes)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.2))
    transports = list(dict.fromkeys(r["transport"] for r in records))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for t in transports:
            by_n: dict[int, list[float]] = {}
            for r in records:
                v = r["metrics"].get(metric)
                if r["transport"] == t and isinstance(v, int | float):
                    by_n.setdefault(r["params"]["clients"], []).append(float(v))
            ns = sorted(by_n)
            ax.plot(ns, [_median(by_n[n]) for n in ns], marker="o", label=t)
        ax.set_xscale("log")
        ax.set_xlabel("clients (log)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Fan-out: clients at the same rate each (medians over repeats)")
    fig.tight_layout()
    fig.savefig(out_dir / "fanout.png", dpi=100)
    plt.close(fig)
    return "![fan-out scaling](fanout.png)"


def throughput_plot(results: Mapping[str, Any], out_dir: Path) -> str:
    """Saturation samples/s beside the minimal pusher, and CPU seconds per 1,000 samples."""
    records = _records(results, "throughput")
    if not records:
        return ""
    transports = list(dict.fromkeys(r["transport"] for r in records))

    def med(t: str, metric: str) -> float:
        vals = [
            float(v)
            for r in records
            if r["transport"] == t and isinstance(v := r["metrics"].get(metric), int | float)
        ]
        return _median(vals) or 0.0

    x = range(len(transports))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    left.bar(
        [i - 0.2 for i in x], [med(t, "samples_per_s") for t in transports], 0.4, label="transport"
    )
    left.bar(
        [i + 0.2 for i in x],
        [med(t, "pusher_samples_per_s") for t in transports],
        0.4,
        label="minimal pusher, same library",
    )
    left.set_ylabel("samples/s at saturation")
    left.legend(fontsize=8)
    right.bar(
        [i - 0.2 for i in x],
        [med(t, "server_cpu_s_per_1k") for t in transports],
        0.4,
        label="server",
    )
    right.bar(
        [i + 0.2 for i in x],
        [med(t, "client_cpu_s_per_1k") for t in transports],
        0.4,
        label="client",
    )
    right.set_ylabel("CPU seconds per 1,000 samples")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xticks(list(x), transports, rotation=20, ha="right")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Throughput at saturation, one client (medians over repeats)")
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=100)
    plt.close(fig)
    return "![throughput and CPU per sample](throughput.png)"


SECTIONS: dict[str, tuple[Callable[[Mapping[str, Any], Path], str], ...]] = {
    "latency": (latency_cdf_plot,),
    "throughput": (throughput_plot,),
    "fanout": (fanout_plot,),
}
