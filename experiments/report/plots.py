"""PNG plots for the report (matplotlib, Agg backend), from results data alone.

Each function writes one PNG at ``path`` and returns the markdown image link to it (relative:
the report sits beside its plots), or ``""`` when there is nothing to draw.

- :func:`latency_cdf_plot`: latency against percentile, from the records' HDR histograms
  pooled over every repeat. The percentile axis is logarithmic in ``1 / (1 - p)``, so 90 %,
  99 %, 99.9 % are equally spaced and the tail, where transports differ, gets the room;
  each curve stops where its samples stop resolving percentiles (then its maximum).
- :func:`timeline_plot`: clients through a fault, one panel per transport on ONE time axis
  whose 0 is the fault's start. The line is the backlog: samples the server had sent that the
  client had not yet received (a client that resumes works it off; one that cannot stays
  behind for good, which a rate plot would hide). Shading: the fault itself (0 to its end);
  markers: when the client noticed, when the server dropped the connection, when samples
  flowed again on a new connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from experiments.histogram import cdf_points, merge
from experiments.report.pyplot import pyplot
from experiments.results import FaultTrace, Record

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["latency_cdf_plot", "timeline_plot"]

#: Percentile ticks of the tail axis: x = 1 / (1 - p).
_TAIL_TICKS = ((2.0, "50%"), (10.0, "90%"), (100.0, "99%"), (1e3, "99.9%"), (1e4, "99.99%"),
               (1e5, "99.999%"))  # fmt: skip

#: Marker styles of the fault events, in legend order.
_EVENTS = (
    ("detected_s", "client noticed", "v", "tab:orange"),
    ("server_dropped_s", "server dropped it", "X", "tab:red"),
    ("recovered_s", "samples again (new connection)", "o", "tab:green"),
)


def latency_cdf_plot(
    records: Sequence[Record],
    path: Path,
    label_of: Callable[[Record], str],
    *,
    role: str = "normal",
    title: str = "Latency by percentile (pooled over repeats)",
) -> str:
    """One curve per label: the ``role`` histograms of every record with that label merged.

    ``label_of`` names a record's curve (records with the same label pool: usually the
    transport, or transport and rate).
    """
    groups: dict[str, list[str]] = {}
    for r in records:
        if r.error is None and r.latency.get(role):
            groups.setdefault(label_of(r), []).append(r.latency[role])
    curves = []
    for label, encoded in groups.items():
        h = merge(encoded)
        if h is not None:
            curves.append((label, int(h.get_total_count()), cdf_points(h)))
    if not curves:
        return ""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    reach = 1.0
    for label, count, points in curves:
        # The maximum is the sample of rank n: plot it where 1 / (1 - p) = n.
        xs = [count if p == 100.0 else 1.0 / (1.0 - p / 100.0) for p, _ in points]
        ax.plot(xs, [ms for _, ms in points], label=f"{label} (n={count:,})", lw=1.2)
        reach = max(reach, float(count))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [(x, text) for x, text in _TAIL_TICKS if x <= reach * 1.01]
    ax.set_xticks([x for x, _ in ticks], [text for _, text in ticks])
    ax.minorticks_off()
    ax.set_xlabel("percentile (log scale of the tail)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"![{title}]({path.name})"


def _draw_trace(ax: Axes, trace: FaultTrace) -> None:
    xs = trace.start_s + trace.bin_s * np.arange(len(trace.backlog))
    ys = np.asarray(trace.backlog, dtype=np.float64)
    ax.plot(xs, ys, lw=0.7, alpha=0.7, color="tab:blue")
    for attr, _, marker, color in _EVENTS:
        at = getattr(trace, attr)
        if at is not None and len(xs):
            y = float(np.interp(at, xs, ys))
            ax.plot([at], [y], marker=marker, color=color, ms=5, ls="none", zorder=3)


def timeline_plot(
    traces_by_transport: Mapping[str, Sequence[FaultTrace]], path: Path, title: str
) -> str:
    """One panel per transport, the backlog of every (client, fault) on a shared time axis."""
    panels = {t: list(ts) for t, ts in traces_by_transport.items() if ts}
    if not panels:
        return ""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 0.6 + 1.7 * len(panels)), sharex=True, squeeze=False
    )
    for ax, (transport, traces) in zip(axes[:, 0], panels.items(), strict=True):
        ends = sorted(t.end_s for t in traces)
        # Faults of one scenario last about as long; where they differ, the lighter band
        # shows how far the longest went.
        ax.axvspan(0.0, ends[0], color="red", alpha=0.15, lw=0)
        if ends[-1] > ends[0]:
            ax.axvspan(ends[0], ends[-1], color="red", alpha=0.07, lw=0)
        ax.axvline(0.0, color="red", lw=0.6)
        for trace in traces:
            _draw_trace(ax, trace)
        ax.set_title(f"{transport} ({len(traces)} client-faults)", fontsize=8, loc="left")
        ax.set_ylabel("backlog\n(samples)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    handles = [
        Line2D([], [], color="tab:blue", lw=0.7, label="backlog, one line per client and fault"),
        Patch(color="red", alpha=0.15, label="fault (lighter: the longest faults)"),
        *(
            Line2D([], [], marker=marker, color=color, ls="none", label=label)
            for _, label, marker, color in _EVENTS
        ),
    ]
    axes[-1, 0].set_xlabel("seconds since the fault started")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    # Beside the panels, not on them: the first panel's data stays readable.
    fig.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"![{title}]({path.name})"
