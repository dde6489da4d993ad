"""The ``quiet-stream`` scenario: does the stream work through the path, and does the path cut
a stream that goes quiet."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from experiments.faults.rounds import keepalive_params
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.scenarios.delivery import judge
from experiments.scenarios.scenario import Column, Kind, latency_column, latency_metrics
from experiments.worker.schema import (
    ClientGroup,
    ClientOutcome,
    Connected,
    ConnectFailed,
    Disconnected,
    WorkerResult,
)

__all__ = ["QUIET_STREAM", "QuietStream", "QuietStreamKnobs", "cuts", "first_sample"]

#: "Heartbeats off": one far longer than any quiet part watches (0 would mean no heartbeat on
#: the push transports, but a long poll's hold is capped at the heartbeat, so 0 would turn it
#: into a busy poll instead of a quiet one).
QUIET_HEARTBEAT_S = 60.0


@dataclass(frozen=True, slots=True)
class QuietStreamKnobs:
    #: The live part: a fresh client at this rate for a warm-up and a window (at 100/s a
    #: window of 10 s holds the 1,000 samples a p99 needs).
    rate_hz: float
    warmup_s: float
    live_s: float
    #: The quiet part: samples this rarely (a silence longer than the read timeout) ...
    quiet_rate_hz: float
    #: ... watched this long ...
    quiet_s: float
    #: ... through an nginx whose ``proxy_read_timeout`` is shortened to this.
    read_timeout_s: float
    #: A client not connected by then is counted as not working (the run goes on).
    connect_timeout_s: float


@dataclass(frozen=True, slots=True)
class FirstSample:
    """How soon a fresh client got its first sample."""

    #: Its latency: received minus the time it was due.
    latency_ms: float
    #: From the connection being up to the sample.
    after_connect_ms: float | None


def first_sample(client: ClientOutcome) -> FirstSample | None:
    """The first sample ``client`` received (None: it received none; needs kept samples)."""
    if not client.samples:
        return None
    received_ns, _, _, sent_ns = client.samples[0]
    connects = [e.at_ns for e in client.events if isinstance(e, Connected)]
    after = (received_ns - connects[0]) / 1e6 if connects else None
    return FirstSample((received_ns - sent_ns) / 1e6, after)


@dataclass(frozen=True, slots=True)
class Cut:
    """A connection that ended under a client that asked for nothing else."""

    #: Seconds from the last thing the client saw (the connection coming up, a sample) to
    #: the end of the connection.
    silent_s: float
    reason: str


def cuts(client: ClientOutcome) -> list[Cut]:
    """Every connection of ``client`` that ended, with the silence before it ended."""
    received = sorted(s[0] for s in client.samples)
    out: list[Cut] = []
    up_ns: int | None = None
    for event in sorted(client.events, key=lambda e: e.at_ns):
        if isinstance(event, Connected):
            up_ns = event.at_ns
        elif isinstance(event, Disconnected):
            seen = [t for t in received if t <= event.at_ns]
            last = max([*seen[-1:], *([up_ns] if up_ns is not None else [])], default=None)
            silent = 0.0 if last is None else (event.at_ns - last) / 1e9
            out.append(Cut(round(silent, 3), event.reason))
            up_ns = None
    return out


def _failure(client: ClientOutcome) -> str | None:
    """Why ``client`` got nothing: its first failed attempt, or its client error."""
    for event in client.events:
        if isinstance(event, ConnectFailed | Disconnected):
            return event.reason
    return client.error


class QuietStream:
    """Does a fresh stream work through the path, and does the path cut a quiet one.

    Run on every ``--via`` path (direct is the baseline). Three parts, each with its own
    server and one client. *Live*: a fresh client at 100/s with the run's heartbeats: does it
    get samples at all (if not, why: the first failure it saw), the first sample's latency
    (received minus the time it was due) and the time from the connection being up to it,
    and the pooled p99 over the window; delivery is judged by the ledger. *Quiet*, two at
    once: samples every 20 s, watched for a few read timeouts through an nginx whose
    ``proxy_read_timeout`` is shortened (3 s), once with heartbeats off (a 60 s heartbeat,
    which never comes while it is watched, and a long poll held its full ``wait``; the client
    has no read timeout, so only the path can end the stream) and once with the run's
    heartbeats: how many times the connection was cut,
    how long it had been silent when it was, and why the client says it ended. A direct
    path should cut nothing; nginx cuts the silent stream after its read timeout unless
    something (a heartbeat, a long poll's hold shorter than the timeout) keeps bytes moving.
    """

    name = "quiet-stream"
    kind: Kind = "fault"
    # One transport at a time: the live part measures latency, and each transport starts
    # three servers (and three nginx) of its own.
    concurrent = False
    max_repeats: int | None = None
    knobs: Mapping[str, QuietStreamKnobs] = {
        "quick": QuietStreamKnobs(100.0, 0.5, 10.5, 0.05, 7.0, 3.0, connect_timeout_s=5.0),
        "default": QuietStreamKnobs(100.0, 1.0, 11.0, 0.05, 7.0, 3.0, connect_timeout_s=5.0),
        "full": QuietStreamKnobs(100.0, 2.0, 20.0, 0.05, 13.0, 3.0, connect_timeout_s=10.0),
    }
    columns: tuple[Column, ...] = (
        Column("received_in_window", "received"),
        Column("first_sample_ms", "first sample ms"),
        Column("connect_to_first_sample_ms", "connect→first sample ms"),
        latency_column("p50"),
        latency_column("p99"),
        Column("quiet_cuts", "cuts, heartbeats off"),
        Column("quiet_cut_after_s", "silent s before cut"),
        Column("heartbeat_cuts", "cuts, heartbeats on"),
    )
    headline = (
        Column("first_sample_ms", "first sample ms"),
        latency_column("p99"),
        Column("quiet_cuts", "quiet cuts"),
        Column("heartbeat_cuts", "heartbeat cuts"),
    )

    def variant(self, params: Mapping[str, Scalar]) -> str:
        via = params.get("via", "direct")
        return "" if via == "direct" else f"via {via}"

    async def run(self, ctx: RunContext) -> list[Record]:
        k = self.knobs[ctx.profile.knob_set]
        ctx.note(f"live {k.rate_hz:g}/s for {k.live_s:g} s")
        async with ctx.server(k.rate_hz, keep=False) as server:
            live = await ctx.run_worker(
                server,
                (ClientGroup(1),),
                warmup_s=k.warmup_s,
                duration_s=k.live_s,
                keep_samples=True,
                connect_timeout_s=k.connect_timeout_s,
            )
        ctx.note(f"quiet for {k.quiet_s:g} s, heartbeats off and on")
        silent, beating = await asyncio.gather(
            self._quiet(ctx, k, heartbeats=False), self._quiet(ctx, k, heartbeats=True)
        )
        metrics = self._live_metrics(live)
        metrics.update(self._cut_metrics("quiet", silent))
        metrics.update(self._cut_metrics("heartbeat", beating))
        params: dict[str, Scalar] = {
            "rate_hz": k.rate_hz,
            "live_s": k.live_s,
            "quiet_rate_hz": k.quiet_rate_hz,
            "quiet_s": k.quiet_s,
            "proxy_read_timeout_s": None if ctx.via == "direct" else k.read_timeout_s,
            "quiet_heartbeat_s": QUIET_HEARTBEAT_S,
            **keepalive_params(ctx),
        }
        return [ctx.record(params, metrics, latency=live.latency)]

    async def _quiet(
        self, ctx: RunContext, k: QuietStreamKnobs, *, heartbeats: bool
    ) -> WorkerResult:
        """One client on a quiet stream; heartbeats off also turns the client's read timeout
        off, so nothing but the path can end the connection."""
        settings = ctx.settings
        if not heartbeats:
            settings = settings.with_changes(heartbeat_s=QUIET_HEARTBEAT_S, dead_after_s=None)
        quiet = dataclasses.replace(ctx, settings=settings, servers=None)
        async with quiet.server(
            k.quiet_rate_hz, keep=False, proxy_read_timeout_s=k.read_timeout_s
        ) as server:
            return await quiet.run_worker(
                server,
                (ClientGroup(1),),
                warmup_s=0.0,
                duration_s=k.quiet_s,
                keep_samples=True,
                keep_latencies=False,
                connect_timeout_s=k.connect_timeout_s,
            )

    @staticmethod
    def _live_metrics(live: WorkerResult) -> dict[str, Scalar]:
        metrics: dict[str, Scalar] = judge(live.clients)
        metrics.update(latency_metrics(live.latency.get("normal", "")))
        client = live.clients[0]
        first = first_sample(client)
        metrics["works"] = client.received_in_window > 0
        metrics["first_sample_ms"] = None if first is None else round(first.latency_ms, 3)
        metrics["connect_to_first_sample_ms"] = (
            None if first is None or first.after_connect_ms is None
            else round(first.after_connect_ms, 3)
        )  # fmt: skip
        if client.received_in_window == 0:
            metrics["failure"] = _failure(client) or "no sample and no error"
        return metrics

    @staticmethod
    def _cut_metrics(prefix: str, result: WorkerResult) -> dict[str, Scalar]:
        client = result.clients[0]
        found = cuts(client)
        out: dict[str, Scalar] = {
            f"{prefix}_connected": client.connected_once(),
            f"{prefix}_cuts": len(found),
            f"{prefix}_cut_after_s": (
                statistics.median(c.silent_s for c in found) if found else None
            ),
            f"{prefix}_received": client.received,
        }
        if found:
            out[f"{prefix}_cut_reason"] = found[0].reason
        elif not client.connected_once():
            out[f"{prefix}_cut_reason"] = _failure(client) or "never connected"
        return out

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        return []


QUIET_STREAM = QuietStream()
