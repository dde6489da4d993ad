"""``## What a reconnect costs``: the ``reconnect-cost`` scenario's three ways side by side
(pure markdown from results.json).

Per transport (and per combination of the other dimensions that vary in the run: network,
via, loop, ...): the bytes on the wire per reconnect and the reconnect time's p50, plain, over
TLS with a full handshake (``tls_resumption`` off) and over TLS resumed (on), each the median
over repeats of the figure the scenario's table shows; and which clients resumed (resumed
handshakes out of the TLS handshakes of the ``on`` run, read off the wire). A way that did
not run shows ``·``, one that was not applicable says so under the table.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.report.dimensions import DIMENSIONS, dimension, label, varying
from experiments.report.figures import format_number
from experiments.results import Record, Results

__all__ = ["SCENARIO", "WAYS", "Way", "reconnect_cost_section"]

SCENARIO = "reconnect-cost"
NOT_RUN = "·"


@dataclass(frozen=True, slots=True)
class Way:
    """One of the three ways a reconnect is made: its header and how its records say so."""

    header: str
    security: str
    resumption: str | None


WAYS: tuple[Way, ...] = (
    Way("plain", "plain", None),
    Way("TLS full", "tls", "off"),
    Way("TLS resumed", "tls", "on"),
)


def _mine(records: Sequence[Record], way: Way) -> list[Record]:
    return [
        r
        for r in records
        if dimension(r.params, "security") == way.security
        and r.params.get("tls_resumption") == way.resumption
    ]


def _median(records: Sequence[Record], metric: str) -> str:
    if not records:
        return NOT_RUN
    if all(isinstance(r.metrics.get("not_applicable"), str) for r in records):
        return "n/a"
    values = [v for r in records if r.error is None and (v := r.metric(metric)) is not None]
    return format_number(statistics.median(values)) if values else "failed"


def _resumes(records: Sequence[Record]) -> str:
    """``yes (9/10)``, ``no (0/10)``, ``n/a`` or ``·`` for the ``on`` records."""
    if not records:
        return NOT_RUN
    if all(isinstance(r.metrics.get("not_applicable"), str) for r in records):
        return "no (cannot offer a session)"
    resumed = sum(int(r.metric("resumed") or 0) for r in records)
    handshakes = sum(int(r.metric("handshakes") or 0) for r in records)
    if not handshakes:
        return "failed"
    return f"{'yes' if resumed else 'no'} ({resumed}/{handshakes})"


def reconnect_cost_section(results: Results) -> str:
    """The section, or "" when the run has no ``reconnect-cost`` records."""
    records = [r for r in results.records if r.scenario == SCENARIO]
    if not records:
        return ""
    others = varying(records, [k for k in DIMENSIONS if k != "security"])
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.transport, label(r.params, others)), []).append(r)
    head = ["transport", *(["conditions"] if others else [])]
    head += [f"bytes {w.header}" for w in WAYS]
    head += [f"ms p50 {w.header}" for w in WAYS]
    head += ["client resumes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    reasons: dict[str, str] = {}
    for (transport, conditions), group in groups.items():
        ways = [_mine(group, w) for w in WAYS]
        cells = [transport, *([conditions] if others else [])]
        cells += [_median(mine, "reconnect_bytes") for mine in ways]
        cells += [_median(mine, "reconnect_ms_p50") for mine in ways]
        cells.append(_resumes(ways[2]))
        lines.append("| " + " | ".join(cells) + " |")
        for r in group:
            why = r.metrics.get("not_applicable")
            if isinstance(why, str):
                reasons.setdefault(transport, why)
    parts = [
        "## What a reconnect costs",
        "",
        "Per reconnect after a reset (RST both ways, from the fault proxy): TCP payload both "
        "ways from the reset until the first sample of the new connection (bytes, median over "
        "the reconnects), and the time from the reset to that sample (ms p50; the client "
        "reconnects after a fixed 1 ms, at 1,000 samples/s). *TLS full*: every reconnect a "
        "full handshake, certificate and all, which is what every client library here does "
        "by itself; *TLS resumed*: the client offers its previous session (the suite's "
        "`ResumingContext` for the Python `ssl` clients, grpcio's session cache for gRPC). "
        "*client resumes*: resumed handshakes out of the TLS handshakes of the resumed run, "
        "read off the wire (the ServerHello's `pre_shared_key`).",
        "",
        *lines,
    ]
    if reasons:
        parts.append("")
        parts += [f"- {t}: {why}" for t, why in reasons.items()]
    return "\n".join(parts)
