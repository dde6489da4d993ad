"""The fault scenarios' part of report.md: reconnection summary, timelines, bad-peer answers.

Reads only results.json records. :data:`SECTIONS` is merged into
:data:`experiments.report.SECTIONS`:

- after ``blackhole``: a reconnection table over restart, reset and black hole (detection,
  server drop, reconnection, lost/duplicated, the figures to reach), and the heartbeat
  settings in force;
- after each of restart, reset and blackhole: one timeline plot per transport (samples
  received per 100 ms, each fault window shaded) from the first repeat;
- after ``slow-consumer``: server RSS over time and what became of the slow clients;
- after ``bad-input``: what each bad peer got.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from experiments.stats import spread

__all__ = ["SECTIONS", "reconnection_section", "timeline_plot"]

FAULTS = ("restart", "reset", "blackhole")


def _records(results: Mapping[str, Any], scenario: str) -> list[Mapping[str, Any]]:
    return [r for r in results["records"] if r["scenario"] == scenario and not r.get("error")]


def _by_transport(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(r["transport"], []).append(r)
    return out


def _fmt(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:.2f}{unit}" if isinstance(x, float) else f"{x}{unit}"


def _pooled(records: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """Every per-fault value of ``key`` over the repeats (None = missed, left out)."""
    values: list[float] = []
    for r in records:
        if key == "server_drop_s":
            values += [v for v in r.get("server_drops_s", []) if v is not None]
        else:
            values += [o[key] for o in r.get("observations", []) if o[key] is not None]
    return values


def _median_max(values: Sequence[float]) -> str:
    s = spread(values)
    return "—" if s is None else f"{s.median:.3f} / {s.high:.3f}"


def reconnection_section(results: Mapping[str, Any], out_dir: Path) -> str:
    """The reconnection table over every fault scenario run, and the targets."""
    lines = [
        "### Reconnection",
        "",
        "Per fault scenario and transport, pooled over every fault of every repeat: seconds as "
        "median / max; `missed` = faults where it did not happen in its window. Lost and "
        "duplicated are summed over the repeats. Target for the black hole: noticed on both "
        "sides within heartbeat + dead-after + 1 s (transports with heartbeats).",
        "",
        "| scenario | transport | faults | detect s | server drop s | reconnect s | missed "
        "(detect/drop/reconnect) | lost | dup | new epoch | target s | within target "
        "(client/server) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    any_rows = False
    for scenario in FAULTS:
        for transport, rs in _by_transport(_records(results, scenario)).items():
            any_rows = True
            m = [r["metrics"] for r in rs]

            def total(key: str, m: list[Mapping[str, Any]] = m) -> int:
                return sum(int(x.get(key) or 0) for x in m)

            faults = total("faults")
            missed = "/".join(
                str(total(f"{k}_missed")) if any(f"{k}_missed" in x for x in m) else "—"
                for k in ("detect_s", "server_drop_s", "reconnect_s")
            )
            target = rs[0]["params"].get("target_s")
            within = "—"
            if scenario == "blackhole" and target is not None:
                within = (
                    f"{total('detect_within_target')}/{faults} · "
                    f"{total('server_drop_within_target')}/{faults}"
                )
            epoch = str(total("moved_to_new_epoch")) if scenario == "restart" else "—"
            lines.append(
                f"| {scenario} | {transport} | {faults} | {_median_max(_pooled(rs, 'detect_s'))} "
                f"| {_median_max(_pooled(rs, 'server_drop_s')) if scenario == 'blackhole' else '—'}"
                f" | {_median_max(_pooled(rs, 'reconnect_s'))} | {missed} | {total('lost')} | "
                f"{total('duplicated')} | {epoch} | {_fmt(target)} | {within} |"
            )
    if not any_rows:
        return ""
    lines += ["", "Heartbeat settings in force (black hole):", ""]
    for transport, rs in _by_transport(_records(results, "blackhole")).items():
        p = rs[0]["params"]
        extra = ""
        if "ws_ping_timeout_s" in p:
            extra = (
                f", tornado ping interval {_fmt(p['ws_ping_interval_s'], ' s')}, effective ping "
                f"timeout {_fmt(p['ws_ping_timeout_s'], ' s')}, close wait "
                f"{_fmt(p['tornado_close_wait_s'], ' s')} (hard-coded)"
            )
        lines.append(
            f"- {transport}: heartbeat {_fmt(p['heartbeat_s'], ' s')}, dead after "
            f"{_fmt(p['dead_after_s'], ' s')}, backoff {p['backoff_base_s']}–"
            f"{p['backoff_cap_s']} s (jitter {p['backoff_jitter']}), resume {p['resume']}"
            f"{extra}; hole held at most {_fmt(p['hold_max_s'], ' s')}"
        )
    return "\n".join(lines)


def timeline_plot(scenario: str) -> Callable[[Mapping[str, Any], Path], str]:
    """A section drawing each transport's first-repeat timeline of ``scenario``."""

    def section(results: Mapping[str, Any], out_dir: Path) -> str:
        firsts = {t: rs[0] for t, rs in _by_transport(_records(results, scenario)).items()}
        firsts = {t: r for t, r in firsts.items() if "timeline" in r}
        if not firsts:
            return ""
        fig, axes = plt.subplots(len(firsts), 1, figsize=(9, 1.6 * len(firsts)), squeeze=False)
        for ax, (transport, record) in zip(axes[:, 0], firsts.items(), strict=True):
            tl = record["timeline"]
            bin_s = tl["bin_s"]
            for index, counts in enumerate(tl["counts"]):
                xs = [i * bin_s for i in range(len(counts))]
                ax.plot(xs, [c / bin_s for c in counts], lw=0.8, label=f"client {index}")
                for start, end in tl["faults"][index]:
                    ax.axvspan(start, max(end, start + bin_s), color="red", alpha=0.15)
            ax.set_ylabel("samples/s", fontsize=7)
            ax.set_title(transport, fontsize=8, loc="left")
            ax.tick_params(labelsize=7)
        axes[-1, 0].set_xlabel("seconds since the clients started (fault windows shaded)")
        fig.tight_layout()
        name = f"timeline_{scenario}.png"
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        return f"![{scenario} timelines]({name})"

    return section


def slow_consumer_section(results: Mapping[str, Any], out_dir: Path) -> str:
    records = _records(results, "slow-consumer")
    if not records:
        return ""
    lines = ["What became of the slow consumers (first repeat):", ""]
    fig, ax = plt.subplots(figsize=(8, 3))
    for transport, rs in _by_transport(records).items():
        lines.append(f"- {transport}: {rs[0]['metrics'].get('slow_client_outcome')}")
        series = rs[0].get("rss_series", [])
        if series:
            ax.plot([s[0] for s in series], [s[1] / 2**20 for s in series], label=transport)
    ax.set_xlabel("seconds (steady phase, then slow + stopped clients)")
    ax.set_ylabel("server RSS, MiB")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "slow_consumer_rss.png", dpi=90)
    plt.close(fig)
    return "\n".join([*lines, "", "![server RSS](slow_consumer_rss.png)"])


def bad_input_section(results: Mapping[str, Any], out_dir: Path) -> str:
    records = _records(results, "bad-input")
    if not records:
        return ""
    lines = [
        "What each bad peer got (first repeat):",
        "",
        "| transport | case | answer | server survived | others unaffected |",
        "|---|---|---|---|---|",
    ]
    for transport, rs in _by_transport(records).items():
        for a in rs[0].get("answers", []):
            answer = a["answer"].replace("|", "\\|")
            lines.append(
                f"| {transport} | {a['case']} | {answer} | {a['server_survived']} | "
                f"{a['others_unaffected']} |"
            )
    return "\n".join(lines)


SECTIONS: dict[str, tuple[Callable[[Mapping[str, Any], Path], str], ...]] = {
    "restart": (timeline_plot("restart"),),
    "reset": (timeline_plot("reset"),),
    "blackhole": (timeline_plot("blackhole"), reconnection_section),
    "slow-consumer": (slow_consumer_section,),
    "bad-input": (bad_input_section,),
}
