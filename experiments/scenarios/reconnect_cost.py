"""The ``reconnect-cost`` scenario: bytes on the wire and time per reconnect, plain, TLS with a
full handshake, TLS resumed."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from experiments.faults.proxy import FaultProxy
from experiments.faults.rounds import Proxies, keepalive_params, now_ns, proxied_groups
from experiments.faults.tls_hello import client_hello, resumed, server_hello
from experiments.faults.wire_log import WireLog
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.scenarios.delivery import Expect, judge
from experiments.scenarios.scenario import Column, Kind
from experiments.worker.schema import ClientOutcome, Connected
from transports.settings import Settings

__all__ = [
    "RECONNECT_COST",
    "ReconnectCost",
    "ReconnectCostKnobs",
    "ReconnectCostScenario",
    "costs_of",
    "reconnect_metrics",
    "reconnect_settings",
]

#: The clients' reconnect delay here: fixed, no jitter, the shortest the settings allow.
BACKOFF_S = 0.001


@dataclass(frozen=True, slots=True)
class ReconnectCostKnobs:
    #: Resets, each followed by one measured reconnect.
    reconnects: int
    #: Publish rate: a new sample every millisecond, so the wait for the first live sample of
    #: a new connection adds at most 1 ms to its reconnect time.
    rate_hz: float
    #: Once samples flow on a new connection (:data:`FLOWING_CHUNKS`), they flow this long
    #: before the next reset (plus 6 RTTs of an emulated path), so the client surely took
    #: the first one.
    settle_s: float
    #: Most seconds to wait for server data on a new connection before going on without it.
    recover_timeout_s: float


class ReconnectCost(msgspec.Struct, frozen=True):
    """One reconnect, from the reset to the first sample on the new connection."""

    reset_ns: int
    ms: float
    #: TCP payload client -> server and server -> client in that time (every connection).
    bytes_up: int
    bytes_down: int
    #: TLS handshakes seen (ServerHello), of which resumed, and ClientHellos offering one.
    handshakes: int
    resumed: int
    offered: int
    tls_version: str | None = None


def reconnect_settings(base: Settings, *, resume_sessions: bool) -> Settings:
    """The clients' settings: reconnect after 1 ms (no jitter), no resume token (live samples
    only, so the first sample of a connection is one published after it was made and no
    replayed backlog is counted as reconnect bytes), and, under TLS, session resumption on
    or off."""
    out = base.with_changes(
        backoff_base_s=BACKOFF_S, backoff_cap_s=BACKOFF_S, backoff_jitter=False, resume=False
    )
    if out.tls is not None:
        out = out.with_changes(
            tls=msgspec.structs.replace(out.tls, resume_sessions=resume_sessions)
        )
    return out


def _first_sample_after(
    client: ClientOutcome, after_ns: int, before_ns: int
) -> tuple[int, int] | None:
    """(received, due) of the first sample of a connection made after ``after_ns`` (None:
    none arrived before ``before_ns``). Without a resume token a new connection carries only
    samples published after it was made, so a sample due before ``after_ns`` that a busy
    client took late from its old connection is not it."""
    connected = next(
        (e.at_ns for e in client.events if isinstance(e, Connected) and e.at_ns > after_ns), None
    )
    if connected is None or connected >= before_ns:
        return None
    return next(
        (
            (at, sent)
            for at, _, _, sent in client.samples
            if connected <= at < before_ns and sent > after_ns
        ),
        None,
    )


def _cutoff(log: WireLog, after_ns: int, received_ns: int, due_ns: int, period_ns: int) -> int:
    """Until when a reconnect's bytes count: until its first sample arrived, but not past
    the moment the next sample fell due (a busy client may take the first sample after the
    relay forwarded more), unless the server wrote the first sample later than that: then
    until the first server chunk written once it was due."""
    cutoff = min(received_ns, due_ns + period_ns)
    written = next(
        (c.at_ns for c in log.between(after_ns, received_ns) if c.downstream and c.at_ns >= due_ns),
        None,
    )
    return cutoff if written is None else max(cutoff, written)


def costs_of(
    resets: Sequence[int], end_ns: int, client: ClientOutcome, log: WireLog, rate_hz: float
) -> tuple[list[ReconnectCost], int]:
    """Each reset's reconnect (those whose new connection delivered a sample before the next
    reset, or ``end_ns``), and how many resets had none."""
    out: list[ReconnectCost] = []
    missed = 0
    period_ns = round(1e9 / rate_hz)
    for i, reset_ns in enumerate(resets):
        before = resets[i + 1] if i + 1 < len(resets) else end_ns
        first = _first_sample_after(client, reset_ns, before)
        if first is None:
            missed += 1
            continue
        received, due = first
        chunks = log.between(reset_ns, _cutoff(log, reset_ns, received, due, period_ns))
        handshakes = resumed_ = offered = 0
        version = None
        for connection in dict.fromkeys(c.connection for c in chunks):
            hello = client_hello(log.head(connection, False))
            answer = server_hello(log.head(connection, True))
            offered += hello is not None and hello.offers_session
            if answer is not None:
                handshakes += 1
                resumed_ += resumed(hello, answer)
                version = answer.version
        out.append(
            ReconnectCost(
                reset_ns=reset_ns,
                ms=(received - reset_ns) / 1e6,
                bytes_up=sum(c.size for c in chunks if not c.downstream),
                bytes_down=sum(c.size for c in chunks if c.downstream),
                handshakes=handshakes,
                resumed=resumed_,
                offered=offered,
                tls_version=version,
            )
        )
    return out, missed


def reconnect_metrics(costs: Sequence[ReconnectCost]) -> dict[str, Scalar]:
    """The record's figures: medians of bytes, p50 and max of time, the handshake counts."""
    if not costs:
        return {"reconnects": 0}
    handshakes = sum(c.handshakes for c in costs)
    resumed_ = sum(c.resumed for c in costs)
    versions = sorted({c.tls_version for c in costs if c.tls_version})
    ms = [c.ms for c in costs]
    return {
        "reconnects": len(costs),
        "reconnect_bytes_up": statistics.median(c.bytes_up for c in costs),
        "reconnect_bytes_down": statistics.median(c.bytes_down for c in costs),
        "reconnect_bytes": statistics.median(c.bytes_up + c.bytes_down for c in costs),
        "reconnect_bytes_max": max(c.bytes_up + c.bytes_down for c in costs),
        "reconnect_ms_p50": round(statistics.median(ms), 3),
        "reconnect_ms_max": round(max(ms), 3),
        "handshakes": handshakes,
        "resumed": resumed_,
        "offered": sum(c.offered for c in costs),
        "resumed_fraction": round(resumed_ / handshakes, 3) if handshakes else None,
        "tls_version": ",".join(versions) or None,
    }


#: Server chunks after a reset that tell samples flow on the new connection (a handshake and
#: the response head take a few; at 1,000 samples/s this is some 10 ms of samples).
FLOWING_CHUNKS = 16


async def _flowing(proxy: FaultProxy, log: WireLog, after_ns: int, timeout_s: float) -> bool:
    """Wait (bounded) until samples flow: server data forwarded after ``after_ns``."""
    try:
        await proxy.wait_until(lambda: log.downstream_after(after_ns, FLOWING_CHUNKS), timeout_s)
    except TimeoutError:
        return False
    return True


class ReconnectCostScenario:
    """What one reconnect costs: bytes on the wire and time, after a reset.

    One client, the transport's own, reads through the fault proxy, which counts every byte
    it forwards (TCP payload, both ways, per connection). Each round, once samples flow on the
    connection, the proxy resets both sides (RST), and the client's reconnect is measured:
    the bytes each way from the reset until the first sample of the new connection arrived
    (handshakes, request and response heads, the first sample; on every connection the client
    made in that time), and the time from the reset to that sample. The client runs with a
    fixed 1 ms reconnect delay (no backoff, no jitter: the time is the protocol's, not the
    backoff's) and without a resume token (live samples only, so no replayed backlog counts
    as reconnect bytes); at 1,000 samples/s the wait for the first live sample adds at most
    1 ms. Figures are medians over the reconnects (time: p50 and max).

    Under ``--security tls`` it runs twice: ``tls_resumption`` ``off`` (every reconnect a full
    handshake, as every client library here does by itself) and ``on`` (the client offers the
    session of its previous connection: :class:`~transports.tls_sessions.ResumingContext`
    for the Python ``ssl`` clients, grpcio's own session cache for gRPC). ``handshakes``,
    ``offered`` and ``resumed`` are read off the wire by the proxy: the cleartext ClientHello
    and ServerHello of each new connection (:mod:`experiments.faults.tls_hello`), so they
    say what the server did, whatever the library. A client that offered no session on any
    reconnect gets a "not applicable" record for ``on``. Delivery: the ledger over the run,
    losses expected (no resume token).
    """

    name = "reconnect-cost"
    kind: Kind = "fault"
    #: Millisecond figures: one transport at a time, on an otherwise quiet machine.
    concurrent = False
    max_repeats: int | None = None
    knobs: Mapping[str, ReconnectCostKnobs] = {
        "quick": ReconnectCostKnobs(10, 1000.0, settle_s=0.3, recover_timeout_s=10.0),
        "default": ReconnectCostKnobs(30, 1000.0, settle_s=0.3, recover_timeout_s=15.0),
        "full": ReconnectCostKnobs(50, 1000.0, settle_s=0.3, recover_timeout_s=20.0),
    }
    columns: tuple[Column, ...] = (
        Column("reconnects", "reconnects"),
        Column("reconnect_bytes_up", "bytes up"),
        Column("reconnect_bytes_down", "bytes down"),
        Column("reconnect_bytes", "bytes", ratio=True),
        Column("reconnect_ms_p50", "reconnect ms p50", ratio=True),
        Column("reconnect_ms_max", "reconnect ms max"),
        Column("handshakes", "TLS handshakes"),
        Column("resumed", "resumed"),
        Column("lost", "lost"),
    )
    headline: tuple[Column, ...] = (
        Column("reconnect_bytes", "bytes"),
        Column("reconnect_ms_p50", "ms p50"),
        Column("resumed", "resumed"),
    )

    def variant(self, params: Mapping[str, Scalar]) -> str:
        mode = params.get("tls_resumption")
        return "" if mode is None else f"resumption {mode}"

    async def run(self, ctx: RunContext) -> list[Record]:
        if ctx.transport.features.transport_protocol != "tcp":
            why = (
                "not applicable: QUIC runs over UDP, which has no reset for the relay to "
                "inject (the UDP relay forwards datagrams and has no RST to send)"
            )
            return [ctx.record({}, {"not_applicable": why})]
        if ctx.security_in_force != "tls":
            return [await self._run(ctx, None)]
        return [await self._run(ctx, False), await self._run(ctx, True)]

    async def _run(self, ctx: RunContext, resumption: bool | None) -> Record:
        k = self.knobs[ctx.profile.name]
        path = ctx.network
        rtt_s = (path.profile.rtt_ms or 0.0) / 1000 if path is not None else 0.0
        settle_s = k.settle_s + 6 * rtt_s
        settings = reconnect_settings(ctx.client_settings, resume_sessions=bool(resumption))
        mode = {None: "", False: " (resumption off)", True: " (resumption on)"}[resumption]
        resets: list[int] = []
        log = WireLog()
        async with ctx.server(k.rate_hz) as server, Proxies(ctx, server, 1) as proxies:
            proxy = proxies.items[0]
            proxy.tap = log
            job = ctx.job(server.port, proxied_groups(proxies), keep_samples=True)
            job = msgspec.structs.replace(job, settings=settings, keep_latencies=False)
            async with ctx.clients(job) as worker:
                await worker.wait_ready()
                since = 0
                for round_ in range(k.reconnects):
                    ctx.note(f"{self.name}{mode} {round_ + 1}/{k.reconnects}")
                    await _flowing(proxy, log, since, k.recover_timeout_s)
                    await asyncio.sleep(settle_s)
                    since = now_ns()
                    proxy.reset_peer()
                    resets.append(since)
                await _flowing(proxy, log, since, k.recover_timeout_s)
                await asyncio.sleep(settle_s)
                end_ns = now_ns()
                result = await worker.stop()
        costs, missed = costs_of(resets, end_ns, result.clients[0], log, k.rate_hz)
        metrics = reconnect_metrics(costs)
        metrics["missed"] = missed
        metrics.update(judge(result.clients, Expect(faults=True, resumes=False, window=False)))
        params: dict[str, Scalar] = {
            "rate_hz": k.rate_hz,
            "rounds": k.reconnects,
            "settle_s": round(settle_s, 3),
            **keepalive_params(ctx),
            "backoff_base_s": BACKOFF_S,
            "backoff_cap_s": BACKOFF_S,
            "backoff_jitter": False,
            "resume": False,
        }
        if resumption is not None:
            params["tls_resumption"] = "on" if resumption else "off"
            if resumption and costs and not metrics.get("offered"):
                why = (
                    f"not applicable: {ctx.transport.name}'s client library cannot offer a "
                    f"session here (it offered none on {len(costs)} reconnects)"
                )
                return ctx.record(params, {"not_applicable": why})
        return ctx.record(params, metrics, detail=costs)

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        """None of its own: ``## What a reconnect costs`` (:mod:`experiments.report.
        reconnect_cost`) compares plain, full and resumed TLS over every network."""
        return []


RECONNECT_COST = ReconnectCostScenario()
