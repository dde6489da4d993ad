"""The ``soak`` scenario: a seeded nemesis breaks every resuming transport for half an hour."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from experiments.faults.kernel import kernel_path, path_of
from experiments.faults.nemesis import (
    KINDS,
    FaultKind,
    NemesisKnobs,
    PlannedFault,
    Span,
    backlog_series,
    schedule,
)
from experiments.faults.proxy import FaultProxy
from experiments.faults.rounds import (
    FaultPace,
    FaultScenario,
    Proxies,
    keepalive_params,
    now_ns,
    proxied_groups,
    wait_flowing,
)
from experiments.faults.windows import FaultWindow, observe, summarize, trace
from experiments.network import NetworkPath
from experiments.report.pyplot import pyplot
from experiments.results import FaultTrace, Observation, Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.run.processes import HarnessError, ServerProcess
from experiments.scenarios.delivery import Expect, judge
from experiments.scenarios.scenario import Column
from experiments.worker.schema import ClientOutcome, Connected, Disconnected, WorkerResult

__all__ = [
    "NEMESIS",
    "SOAK",
    "Soak",
    "SoakDetail",
    "SoakFault",
    "SoakKnobs",
    "client_dropped",
    "fault_observations",
    "rode_out",
    "timeline",
]


@dataclass(frozen=True, slots=True)
class SoakKnobs:
    pace: FaultPace
    #: How long the soak runs, unless ``--duration`` says.
    minutes: float
    nemesis: NemesisKnobs
    #: Resolution of the whole-soak backlog timeline (seconds per point).
    bin_s: float
    #: A proxy black hole is held past its drawn hold until the client dropped the
    #: connections it swallowed bytes of, at most this long in all (see :func:`_inject`).
    proxy_hole_max_s: float = 15.0


#: What the nemesis draws from, every profile alike (only the length differs).
NEMESIS = NemesisKnobs(
    hold_s={
        # Downtime before the restart begins (the server's own start-up comes on top).
        "restart": Span(0.2, 1.5),
        "proxy-reset": Span(0.0, 0.0),
        # Holes and outages straddle dead-after (6 s): the short ones may be ridden out on
        # retransmissions, the long ones end the connection on each side's timers.
        "proxy-blackhole": Span(1.0, 8.0),
        "kernel-blackhole": Span(1.0, 8.0),
        "link-down": Span(1.0, 8.0),
        "loss-burst": Span(2.0, 6.0),
        # Long enough for the server's queue and send buffer to fill behind a slow reader.
        "slow-reader": Span(3.0, 8.0),
    },
    # Longer than a reconnect (backoff cap 2 s, connect timeout 5 s) most of the time; short
    # enough that 30 minutes hold at least 100 faults whatever the seed (fewest_faults).
    gap_s=Span(5.0, 9.5),
    lead_s=3.0,
    tail_s=8.0,
    loss_per_mille=(50, 300),
    # At 50 samples/s a transport sends a few kB/s: these take a tenth to a third of it.
    slow_bytes_per_s=(300, 1500),
)

#: How long after a proxy hole healed on the client's close its ``disconnected`` may come.
DETECT_GRACE_NS = 1_000_000_000

#: 50 samples/s: what is judged is delivery across faults, over half an hour on two cores
#: beside four other transports; 20 ms between samples still resolves a reconnect.
SOAK_PACE = FaultPace(rate_hz=50.0, settle_s=1.0, recover_timeout_s=20.0)


class SoakFault(msgspec.Struct, frozen=True, kw_only=True):
    """One fault of the soak: as scheduled (seconds since the transport's soak began) and as
    injected (the same clock)."""

    transport: str
    kind: FaultKind
    start_s: float
    end_s: float
    #: loss-burst: per mille dropped each way; slow-reader: bytes per second; else 0.
    level: int = 0
    #: When it really began and ended (a fault waits, bounded, for the stream to flow again
    #: after the previous one; a restart ends once the new server serves).
    began_s: float
    ended_s: float
    #: Server data flowed through the proxy again after it, before the next fault.
    recovered: bool
    #: The client kept its connection through it (no disconnect, no new connection before
    #: the next fault): TCP bridged it, or a slow reader was only slow.
    rode_out: bool | None = None


class SoakDetail(msgspec.Struct, frozen=True, kw_only=True):
    """The record's ``detail``: the schedule as run, and the backlog over the whole soak."""

    seed: int
    duration_s: float
    faults: list[SoakFault]
    #: The backlog (samples sent, not yet received) every ``bin_s`` from the soak's start.
    bin_s: float
    backlog: list[int]


@dataclass(frozen=True, slots=True)
class _Played:
    windows: list[FaultWindow]
    faults: list[SoakFault]
    start_ns: int
    end_ns: int


def client_dropped(proxy: FaultProxy, connections: frozenset[int]) -> bool:
    """Whether the client closed every one of ``connections`` (as the proxy saw it)."""
    closed = {c.connection for c in proxy.peer_closes if c.side == "downstream"}
    return connections <= closed


async def _inject(
    fault: PlannedFault,
    server: ServerProcess,
    proxy: FaultProxy,
    path: NetworkPath,
    proxy_hole_max_s: float,
) -> FaultWindow:
    """Break one thing for the fault's hold, heal it; the window as injected."""
    hold, kind = fault.hold_s, fault.kind
    start = now_ns()
    if kind == "restart":
        await server.kill()
        await asyncio.sleep(hold)
        await server.start()
        return FaultWindow(start, now_ns(), new_epoch=server.epoch)
    if kind == "proxy-reset":
        proxy.reset_peer()
        return FaultWindow(start, start)
    if kind == "loss-burst":
        await path.loss_burst(0, fault.level, hold)
    elif kind == "proxy-blackhole":
        swallowed = proxy.connection_ids
        proxy.blackhole()
        dropped = False
        try:
            await asyncio.sleep(hold)
            # The proxy read (so the server's kernel saw acknowledged) what it threw away: a
            # connection that outlived the hole would go on past a gap that no real network
            # makes (TCP retransmits what a real hole drops; the kernel hole is the one a
            # connection may ride out). So the hole lasts until the client gave up the
            # connections it swallowed bytes of, and a transport that never notices shows
            # as lost samples once the bound runs out.
            with contextlib.suppress(TimeoutError):
                await proxy.wait_until(
                    lambda: client_dropped(proxy, swallowed), max(0.0, proxy_hole_max_s - hold)
                )
            dropped = client_dropped(proxy, swallowed)
        finally:
            proxy.heal()
        end = now_ns()
        # Healed because the client dropped: its ``disconnected`` event, stamped by the
        # worker as it closes, may come a moment after the proxy saw the close.
        grace = DETECT_GRACE_NS if dropped and swallowed else 0
        return FaultWindow(start, end, detect_until_ns=end + grace)
    elif kind == "slow-reader":
        proxy.bandwidth(fault.level)
        try:
            await asyncio.sleep(hold)
        finally:
            proxy.heal()
    elif kind == "kernel-blackhole":
        await path.blackhole(0)
        try:
            await asyncio.sleep(hold)
        finally:
            # Shielded: a cancelled soak must not leave the client cut off.
            await asyncio.shield(path.heal(0))
    else:
        await path.link_down(0)
        try:
            await asyncio.sleep(hold)
        finally:
            await asyncio.shield(path.link_up(0))
    end = now_ns()
    # A disconnect after the heal is the stream recovering, not the client noticing.
    return FaultWindow(start, end, detect_until_ns=end)


async def _play(
    ctx: RunContext,
    plan: Sequence[PlannedFault],
    duration_s: float,
    server: ServerProcess,
    proxy: FaultProxy,
    path: NetworkPath,
    k: SoakKnobs,
) -> _Played:
    """Inject the schedule, each fault at its planned start (or once the stream flows again
    after the previous one, if that took longer), then let the stream run to the end."""
    t0 = now_ns()
    windows: list[FaultWindow] = []
    faults: list[SoakFault] = []

    async def until(offset_s: float) -> None:
        await asyncio.sleep(max(0.0, (t0 - now_ns()) / 1e9 + offset_s))

    for index, planned in enumerate(plan):
        ctx.note(f"soak: fault {index + 1}/{len(plan)}, {planned.kind}")
        await until(planned.start_s)
        window = await _inject(planned, server, proxy, path, k.proxy_hole_max_s)
        mark = proxy.forwarded_bytes
        # Bounded: a fault whose stream never came back is reported, and the soak goes on.
        flowing = await wait_flowing(proxy, mark, k.pace.recover_timeout_s)
        windows.append(window)
        faults.append(
            SoakFault(
                transport=planned.transport, kind=planned.kind, start_s=planned.start_s,
                end_s=planned.end_s, level=planned.level,
                began_s=round((window.start_ns - t0) / 1e9, 3),
                ended_s=round((window.end_ns - t0) / 1e9, 3), recovered=flowing,
            )
        )  # fmt: skip
    await until(duration_s)
    return _Played(windows, faults, t0, now_ns())


def _until_next(windows: Sequence[FaultWindow]) -> list[int | None]:
    """Each window's horizon: the next fault's start (None: the last fault)."""
    return [w.start_ns for w in windows[1:]] + [None] if windows else []


def rode_out(client: ClientOutcome, windows: Sequence[FaultWindow]) -> list[bool]:
    """Per fault: no disconnect and no new connection from its start to the next fault's."""
    out = []
    for window, horizon in zip(windows, _until_next(windows), strict=True):
        out.append(
            not any(
                isinstance(e, Connected | Disconnected)
                and e.at_ns >= window.start_ns
                and (horizon is None or e.at_ns < horizon)
                for e in client.events
            )
        )
    return out


def fault_observations(
    client: ClientOutcome, windows: Sequence[FaultWindow], rate_hz: float
) -> tuple[list[Observation], list[FaultTrace]]:
    """:func:`observe` and :func:`trace` of one client for every window, each on the samples
    from its window on (first receipts only: a sample's first receipt before the window and
    its replay inside would otherwise look like a first receipt). Samples received before a
    window's trace begins were sent before it too: they weigh nothing on its backlog.

    Each window sees the connection events before the next fault only: a connection that
    rode a fault out reconnects at some later fault, which is not this one's recovery."""
    seen: set[tuple[str, int]] = set()
    firsts: list[tuple[int, str, int, int]] = []
    for sample in client.samples:
        key = (sample[1], sample[2])
        if key not in seen:
            seen.add(key)
            firsts.append(sample)
    received = [s[0] for s in firsts]
    observations: list[Observation] = []
    traces: list[FaultTrace] = []
    for window, horizon in zip(windows, _until_next(windows), strict=True):
        # The trace starts half a second before the fault: a second of margin.
        lo = bisect.bisect_left(received, window.start_ns - 1_000_000_000)
        events = [e for e in client.events if horizon is None or e.at_ns < horizon]
        near = msgspec.structs.replace(client, samples=firsts[lo:], events=events)
        observations.append(observe(client.index, near, window))
        traces.append(trace(client.index, near, window, rate_hz))
    return observations, traces


def _metrics(
    result: WorkerResult, played: _Played, observations: Sequence[Observation]
) -> dict[str, Scalar]:
    metrics: dict[str, Scalar] = {"faults": len(played.faults)}
    for kind in KINDS:
        metrics[f"faults_{kind.replace('-', '_')}"] = sum(f.kind == kind for f in played.faults)
    metrics["recovered"] = sum(f.recovered for f in played.faults)
    metrics["rode_out"] = sum(bool(f.rode_out) for f in played.faults)
    metrics.update(summarize("detect_s", [o.detect_s for o in observations]))
    metrics.update(summarize("reconnect_s", [o.reconnect_s for o in observations]))
    # Only resuming transports soak: every lost or duplicated sample is a problem.
    metrics.update(judge(result.clients, Expect(faults=True)))
    # The posterior equals the ground truth when alpha and beta both do, exactly.
    metrics["posterior_off"] = round(
        sum(abs(c.posterior_error.alpha_error) + abs(c.posterior_error.beta_error)
            for c in result.clients), 6
    )  # fmt: skip
    metrics["soak_s"] = round((played.end_ns - played.start_ns) / 1e9, 1)
    return metrics


class Soak(FaultScenario):
    """A nemesis (in Jepsen's sense) breaks every resuming transport at once, on a seeded
    random schedule, for ``--duration`` minutes (30 by default; ``--profile soak``).

    Each transport gets an emulated path of its own (``lan`` on a loopback run: a server
    namespace and one client namespace), its server, a fault proxy in the client's namespace
    and one client worker reading through the proxy, so proxy and kernel faults both reach
    it. The schedule is drawn per transport from the run's seed
    (``experiments/faults/nemesis.py``): kinds from shuffled bags of all seven, so every kind
    recurs; a quiet gap of 5-9.5 s between two faults, each healed before the next; at
    least 100 faults per transport in 30 minutes whatever the seed. The kinds: SIGKILL the
    server and start it again (a new epoch); RST both sides at the proxy; a proxy black hole
    (nothing forwarded, nothing closed; held until the client gave up the connections it
    swallowed bytes of, as no connection outlives a real hole with a gap in its stream); a
    kernel black hole (the router drops the client's packets both ways, which a connection
    may ride out on retransmissions); the client's link down (no carrier); a loss burst
    (the router drops 5-30 % of the client's packets each way); a slow reader (the proxy
    takes a few hundred bytes per second, so the server's queue and send buffer fill). A
    fault starts at its planned time, or once server data flows again after the previous
    one (bounded) if that took longer. Per fault: when the client noticed, when samples came
    again, and its backlog. At the end the ledger over the whole soak must show nothing
    lost, nothing duplicated, and a posterior whose alpha and beta equal the ground truth's
    (posterior α+β off = 0). The schedule as run is in the record's ``detail``; below, each
    transport's backlog over the whole soak with its faults marked.
    """

    name = "soak"
    max_repeats: int | None = 1
    knobs: Mapping[str, SoakKnobs] = {
        "quick": SoakKnobs(SOAK_PACE, minutes=0.5, nemesis=NEMESIS, bin_s=0.1),
        "default": SoakKnobs(SOAK_PACE, minutes=5.0, nemesis=NEMESIS, bin_s=0.25),
        "full": SoakKnobs(SOAK_PACE, minutes=30.0, nemesis=NEMESIS, bin_s=0.5),
    }
    columns = (
        Column("faults", "faults"),
        Column("recovered", "recovered"),
        Column("rode_out", "rode out"),
        Column("detect_s_median", "detect s (median)"),
        Column("reconnect_s_median", "reconnect s (median)"),
        Column("reconnect_s_max", "reconnect s (max)"),
        Column("reconnect_s_missed", "not recovered"),
        Column("lost", "lost"),
        Column("duplicated", "duplicated"),
        Column("posterior_mean_error", "posterior |Δmean|"),
        Column("posterior_off", "posterior α+β off"),
        Column("soak_s", "soak s"),
    )
    headline = (
        Column("faults", "faults"),
        Column("reconnect_s_median", "reconnect s"),
        Column("lost", "lost"),
        Column("duplicated", "dup"),
        Column("posterior_off", "posterior off"),
    )

    async def run(self, ctx: RunContext) -> list[Record]:
        if not ctx.transport.features.resume:
            # An error record that says why: the soak judges resumption, 0 lost and 0 dup.
            raise HarnessError(f"skipped: {ctx.transport.name} does not resume")
        k = self.knobs[ctx.profile.knob_set]
        minutes = ctx.profile.duration_min or k.minutes
        duration_s = minutes * 60.0
        plan = schedule(ctx.seed, ctx.transport.name, duration_s, k.nemesis)
        async with kernel_path(ctx, 1) as kctx:
            path = path_of(kctx)
            async with (
                kctx.server(k.pace.rate_hz, keep=False) as server,
                Proxies(kctx, server, 1) as proxies,
            ):
                proxy = proxies.items[0]
                job = kctx.job(
                    server.port, proxied_groups(proxies), keep_samples=True, keep_latencies=False
                )
                async with kctx.clients(job) as worker:
                    await worker.wait_ready()
                    played = await _play(kctx, plan, duration_s, server, proxy, path, k)
                    result = await worker.stop(timeout_s=120.0)
            client = result.clients[0]
            # Seconds of pure Python over every sample: off the event loop, where the other
            # transports' proxies may still be forwarding.
            observations, traces = await asyncio.to_thread(
                fault_observations, client, played.windows, k.pace.rate_hz
            )
            kept = rode_out(client, played.windows)
            faults = [
                msgspec.structs.replace(f, rode_out=r)
                for f, r in zip(played.faults, kept, strict=True)
            ]
            played = _Played(played.windows, faults, played.start_ns, played.end_ns)
            backlog = await asyncio.to_thread(
                backlog_series, client.samples, played.start_ns, played.end_ns, k.bin_s
            )
            detail = SoakDetail(
                seed=ctx.seed, duration_s=duration_s, faults=played.faults, bin_s=k.bin_s,
                backlog=backlog,
            )  # fmt: skip
            params: dict[str, Scalar] = {
                "rate_hz": k.pace.rate_hz,
                "duration_min": minutes,
                "seed": ctx.seed,
                **keepalive_params(kctx),
            }
            metrics = _metrics(result, played, observations)
            return [
                kctx.record(
                    params, metrics, observations=observations, traces=traces, detail=detail
                )
            ]

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        soaks: dict[str, tuple[Record, SoakDetail]] = {}
        for r in results.records:
            if r.scenario == self.name and r.error is None and r.transport not in soaks:
                detail = msgspec.json.decode(r.detail, type=SoakDetail | None)
                if detail is not None:
                    soaks[r.transport] = (r, detail)
        if not soaks:
            return []
        out = [_kinds_table(soaks)]
        for transport, (_, detail) in soaks.items():
            out.append(timeline(transport, detail, out_dir / f"soak_{transport}.png"))
        return [s for s in out if s]


def _median_max(values: Sequence[float | None]) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return "—"
    return f"{statistics.median(seen):.2f} / {max(seen):.2f}"


def _kinds_table(soaks: Mapping[str, tuple[Record, SoakDetail]]) -> str:
    """Per kind (rows) and transport (columns): faults, and reconnect s median / max."""
    transports = list(soaks)
    lines = [
        "#### Faults by kind",
        "",
        "Per cell: faults of that kind, then reconnect s (fault end -> the first sample after "
        "it) as median / max; how many the connection rode out (no disconnect, no new "
        "connection); ✗N: N after which the stream had not flowed again within the recovery "
        "bound. Seed: "
        + ", ".join(f"{t} {d.seed}" for t, (_, d) in soaks.items())
        + " (the same seed draws the same schedule).",
        "",
        "| kind | " + " | ".join(transports) + " |",
        "|---" * (len(transports) + 1) + "|",
    ]
    for kind in KINDS:
        cells = []
        for record, detail in soaks.values():
            pairs = [
                (f, o)
                for f, o in zip(detail.faults, record.observations, strict=False)
                if f.kind == kind
            ]
            missed = sum(not f.recovered for f, _ in pairs)
            kept = sum(bool(f.rode_out) for f, _ in pairs)
            cell = f"{len(pairs)}: {_median_max([o.reconnect_s for _, o in pairs])}"
            cell += f", {kept} rode out" if kept else ""
            cells.append(cell + (f" ✗{missed}" if missed else ""))
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: One colour per fault kind on the timelines.
_COLOURS: dict[FaultKind, str] = dict(
    zip(
        KINDS,
        ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:gray", "tab:olive", "tab:cyan"),
        strict=True,
    )
)


def timeline(transport: str, detail: SoakDetail, path: Path) -> str:
    """One transport's backlog over the whole soak, each fault a band in its kind's colour
    (a reset, an instant, a line); the markdown link to the PNG."""
    if not detail.backlog:
        return ""
    plt = pyplot()
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(12, 3.2))
    xs = detail.bin_s * np.arange(len(detail.backlog)) / 60.0
    ax.plot(xs, detail.backlog, lw=0.6, color="tab:blue", zorder=3)
    for f in detail.faults:
        colour = _COLOURS[f.kind]
        if f.ended_s - f.began_s < 0.05:
            ax.axvline(f.began_s / 60.0, color=colour, lw=0.8, alpha=0.7)
        else:
            ax.axvspan(f.began_s / 60.0, f.ended_s / 60.0, color=colour, alpha=0.3, lw=0)
        if not f.recovered:
            ax.plot([f.ended_s / 60.0], [0], marker="x", color="black", ms=6, zorder=4)
    counts = {kind: sum(f.kind == kind for f in detail.faults) for kind in KINDS}
    handles = [
        Patch(color=_COLOURS[kind], alpha=0.5, label=f"{kind} ({counts[kind]})") for kind in KINDS
    ]
    ax.set_xlabel("minutes since the soak began")
    ax.set_ylabel("backlog (samples)")
    title = f"soak: {transport}, {len(detail.faults)} faults (seed {detail.seed})"
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"![{title}]({path.name})"


SOAK = Soak()
