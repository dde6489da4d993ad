"""The ``bad-input`` scenario: hostile peers on raw sockets while a normal client reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import msgspec

from experiments.faults.hostile import (
    Target,
    answer,
    cases_for,
    endless_head,
    idle_burst,
    non_readers,
    request_head,
    server_alive,
    slowloris,
    target_of,
)
from experiments.faults.rounds import PACE, FaultPace
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.run.processes import ServerProcess
from experiments.scenarios.delivery import Expect, judge
from experiments.scenarios.scenario import Column, Kind
from experiments.worker.schema import ClientGroup, ClientOutcome, Disconnected
from transports.contract import BadInputFamily

__all__ = ["BAD_INPUT", "Answer", "BadInput", "BadInputKnobs"]

#: Samples must reach the normal client within this long after a case for it to count as
#: unaffected (at the fault rate several arrive in that time).
UNAFFECTED_SLACK_S = 0.5


@dataclass(frozen=True, slots=True)
class BadInputKnobs:
    pace: FaultPace
    #: Idle connections opened at once by the idle burst.
    idle_burst: int
    #: How long a bad peer waits for the server's answer.
    answer_timeout_s: float
    #: Peers that subscribe and then never read a byte.
    non_readers: int = 100
    #: How long their pile-up is watched (server RSS sampled for its peak).
    non_reader_watch_s: float = 3.0


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """What one bad peer got, and what became of everyone else."""

    case: str
    answer: str
    server_survived: bool
    others_unaffected: bool


def _unaffected(client: ClientOutcome, start_ns: int, end_ns: int) -> bool:
    until = end_ns + int(UNAFFECTED_SLACK_S * 1e9)
    dropped = any(
        isinstance(e, Disconnected) and start_ns <= e.at_ns <= until for e in client.events
    )
    received = any(start_ns <= s[0] <= until for s in client.samples)
    return received and not dropped


class BadInput:
    """Hostile peers on raw sockets while a normal client reads.

    The cases come from one table keyed by the protocol family the transport declares on its
    registry record: garbage bytes for everyone, then per family malformed requests, queries,
    frames or hellos and a 2 MiB message (the limit is 1 MiB; for WebSocket also the RFC 6455
    violations: invalid UTF-8, RSV bits, a reserved opcode, invalid close codes), a burst of
    idle connections, a newcomer among them (idle sockets must not lock it out), a request
    head dripped a byte at a time (slowloris: cut at the header timeout) and a batch of
    subscribers that never read (the server's RSS growth per peer, also reported as
    ``non_reader_rss_bytes_per_peer``). Running out of file descriptors is left to the
    tests: it needs a server started with a lowered ``RLIMIT_NOFILE``. After each case: did
    the server survive (process alive, accepts a connect), and was the normal client
    unaffected (a sample within the case's window plus 0.5 s, no disconnect then, nothing
    lost over the run). Each bad peer's answer is recorded: status
    line, WebSocket close code, error line, reset, or left open.
    """

    name = "bad-input"
    kind: Kind = "fault"
    #: Timer-bound figures (seconds): every transport runs it at once, on its own processes.
    concurrent = True
    max_repeats: int | None = None
    knobs: Mapping[str, BadInputKnobs] = {
        "quick": BadInputKnobs(PACE["quick"], idle_burst=200, answer_timeout_s=1.0, non_readers=50),
        "default": BadInputKnobs(PACE["default"], idle_burst=300, answer_timeout_s=2.0),
        "full": BadInputKnobs(PACE["full"], idle_burst=500, answer_timeout_s=5.0, non_readers=300),
    }
    columns = (
        Column("cases", "cases"),
        Column("server_survived", "server survived"),
        Column("others_unaffected", "others unaffected"),
        Column("lost", "lost"),
    )
    headline = (
        Column("cases", "cases"),
        Column("server_survived", "survived"),
        Column("others_unaffected", "unaffected"),
    )

    def variant(self, params: Mapping[str, Scalar]) -> str:
        return ""

    async def run(self, ctx: RunContext) -> list[Record]:
        k = self.knobs[ctx.profile.name]
        timeout = k.answer_timeout_s
        family = ctx.transport.bad_input_family
        header_timeout_s = ctx.effective_settings.header_timeout_s
        windows: list[tuple[str, str, bool, int, int]] = []
        rss_per_non_reader: list[float] = []
        async with ctx.server(k.pace.rate_hz) as server:
            target = target_of(ctx.transport, server.host, server.port)
            job = ctx.job(server.port, (ClientGroup(1),), keep_samples=True, keep_latencies=False)
            async with ctx.clients(job) as worker:
                await worker.wait_ready()

                async def stuck(t: Target) -> str:
                    got, per_peer = await _non_readers(server, t, family, k)
                    rss_per_non_reader.append(per_peer)
                    return got

                cases: list[tuple[str, Callable[[Target], Awaitable[str]]]] = [
                    *(
                        (c.name, partial(_answer_to, c.build, timeout))
                        for c in cases_for(ctx.transport)
                    ),
                    ("idle burst", lambda t: idle_burst(t, k.idle_burst, timeout / 2)),
                    (
                        "idle burst, then a newcomer",
                        lambda t: _newcomer_among_idle(t, family, k.idle_burst, timeout),
                    ),
                    (
                        f"slowloris (head dripped, header timeout {header_timeout_s:g} s)",
                        lambda t: slowloris(
                            t, endless_head(family, t), 0.25, header_timeout_s + 3.0
                        ),
                    ),
                    (f"{k.non_readers} subscribers that never read", stuck),
                ]
                for name, case in cases:
                    ctx.note(name)
                    start = time.monotonic_ns()
                    try:
                        got = await case(target)
                    except (OSError, TimeoutError) as exc:
                        got = f"could not connect: {exc!r}"
                    end = time.monotonic_ns()
                    alive = server.running and await server_alive(server.host, server.port, timeout)
                    windows.append((name, got, alive, start, end))
                # Let the last window's slack pass with the client still reading.
                await asyncio.sleep(UNAFFECTED_SLACK_S)
                result = await worker.stop()
        client = result.clients[0]
        delivery = judge(result.clients, Expect(window=False))
        answers = [
            Answer(
                case=name,
                answer=got,
                server_survived=alive,
                others_unaffected=client.counts.lost == 0 and _unaffected(client, start, end),
            )
            for name, got, alive, start, end in windows
        ]
        problems = [
            f"{a.case}: " + ("server died" if not a.server_survived else "others affected")
            for a in answers
            if not (a.server_survived and a.others_unaffected)
        ]
        if not delivery["delivery_ok"]:
            problems.append(f"normal client: {delivery['delivery_problems']}")
        metrics: dict[str, Scalar] = {
            **delivery,
            "non_reader_rss_bytes_per_peer": rss_per_non_reader[0] if rss_per_non_reader else None,
            "cases": len(answers),
            "server_survived": sum(a.server_survived for a in answers),
            "others_unaffected": sum(a.others_unaffected for a in answers),
            "delivery_ok": not problems,
            "delivery_problems": "; ".join(problems),
        }
        params = {
            "family": ctx.transport.bad_input_family,
            "rate_hz": k.pace.rate_hz,
            "idle_burst": k.idle_burst,
            "answer_timeout_s": timeout,
            "non_readers": k.non_readers,
            "header_timeout_s": header_timeout_s,
        }
        return [ctx.record(params, metrics, detail=answers)]

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        """What each bad peer got (first repeat of each transport)."""
        lines = [
            "What each bad peer got (first repeat):",
            "",
            "| transport | case | answer | server survived | others unaffected |",
            "|---|---|---|---|---|",
        ]
        seen: set[str] = set()
        for r in results.records:
            if r.scenario != self.name or r.error or r.transport in seen:
                continue
            seen.add(r.transport)
            for a in _answers(r):
                text = a.answer.replace("|", "\\|")
                lines.append(
                    f"| {r.transport} | {a.case} | {text} | {a.server_survived} | "
                    f"{a.others_unaffected} |"
                )
        return ["\n".join(lines)] if seen else []


async def _answer_to(build: Callable[[Target], bytes], timeout_s: float, t: Target) -> str:
    return await answer(t, build(t), timeout_s)


async def _newcomer_among_idle(
    t: Target, family: BadInputFamily, idle: int, timeout_s: float
) -> str:
    """Idle sockets must not lock out a newcomer: what a normal opening gets among them."""
    opened: list[asyncio.StreamWriter] = []
    try:
        for _ in range(idle):
            opened.append((await asyncio.open_connection(t.host, t.port))[1])
        got = await answer(t, request_head(family, t), timeout_s)
    finally:
        for writer in opened:
            writer.close()
    return f"newcomer among {idle} idle sockets: {got}"


async def _non_readers(
    server: ServerProcess, t: Target, family: BadInputFamily, k: BadInputKnobs
) -> tuple[str, float]:
    """Subscribers that never read: the server's RSS growth at its peak, per peer."""
    before = peak = server.rss()
    peers = await non_readers(t, request_head(family, t), k.non_readers)
    try:
        loop = asyncio.get_running_loop()
        until = loop.time() + k.non_reader_watch_s
        while loop.time() < until:
            peak = max(peak, server.rss())
            await asyncio.sleep(0.05)
    finally:
        for sock in peers:
            sock.close()
    per_peer = (peak - before) / k.non_readers
    text = (
        f"server RSS {before / 1e6:.0f} -> peak {peak / 1e6:.0f} MB "
        f"({per_peer / 1e3:.0f} kB per peer)"
    )
    return text, per_peer


def _answers(record: Record) -> list[Answer]:
    """The record's answers (a schema-1 record keeps them under ``answers``)."""
    try:
        return msgspec.json.decode(record.detail, type=list[Answer])
    except msgspec.ValidationError:
        return msgspec.json.decode(record.detail, type=_V1).answers


class _V1(msgspec.Struct):
    answers: list[Answer] = []


BAD_INPUT = BadInput()
