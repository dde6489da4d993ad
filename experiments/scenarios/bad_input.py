"""The ``bad-input`` scenario: hostile peers on raw sockets while a normal client reads."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import msgspec
import psutil

from experiments.faults.hostile import (
    Target,
    answer,
    cases_for,
    endless_head,
    idle_burst,
    is_refusal,
    non_readers,
    open_idle,
    request_head,
    server_alive,
    slowloris,
    subscribers,
    target_of,
)
from experiments.faults.rounds import PACE, FaultPace
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.run.processes import ServerProcess, settings_document
from experiments.scenarios import bad_input_quic as quic
from experiments.scenarios.delivery import Expect, judge
from experiments.scenarios.scenario import Column, Kind
from experiments.worker.schema import ClientGroup, ClientOutcome, Disconnected
from model.errors import StreamError
from transports.contract import BadInputFamily, Transport
from transports.limits import raise_fd_limit
from transports.settings import Settings

__all__ = ["BAD_INPUT", "Answer", "BadInput", "BadInputKnobs"]

#: Samples must reach the normal client within this long after a case for it to count as
#: unaffected (at the fault rate several arrive in that time).
UNAFFECTED_SLACK_S = 0.5
#: The header timeout of the servers the limit and fd cases run on: long enough that the
#: idle sockets stay for the whole case (the experiments' 2 s would clear them midway).
OWN_HEADER_TIMEOUT_S = 30.0
#: Idle QUIC peers are this many times fewer than idle TCP sockets: each is a handshake.
QUIC_FEWER = 10
#: The per-case figures of the cases on their own servers (None: the case did not get there).
OWN_FIGURES = (
    "limit_idle_newcomer_refused",
    "limit_newcomer_refused",
    "fd_exhaustion_server_cpu_percent",
    "fd_exhaustion_stderr_bytes",
    "fd_exhaustion_log_lines",
    "fd_exhaustion_server_fds",
    "fd_exhaustion_served_again_s",
)

#: A case on a server of its own: what the peer got, its figures, and whether the server
#: served as it should afterwards (on top of being alive).
OwnCase = Callable[[ServerProcess, Target], Awaitable[tuple[str, dict[str, Scalar], bool]]]


@dataclass(frozen=True, slots=True)
class OwnServerCase:
    """A case run on a server of its own, started with ``settings`` (and ``nofile``)."""

    name: str
    run: OwnCase
    settings: Settings
    #: The server's soft and hard ``RLIMIT_NOFILE`` (None: as this process's).
    nofile: int | None = None


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
    #: The connection limit of the server the "idle sockets at the limit" case runs on.
    limit_connections: int = 64
    #: The soft and hard ``RLIMIT_NOFILE`` of the server the "fd exhaustion" case runs on...
    fd_limit: int = 128
    #: ... the idle sockets opened against it (more than the limit allows)...
    fd_idle: int = 300
    #: ... how long its CPU is measured while it is out of descriptors...
    fd_watch_s: float = 2.0
    #: ... and how soon a new client must get a sample once the idle sockets are gone.
    served_again_within_s: float = 5.0


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
    ``non_reader_rss_bytes_per_peer``). After each case: did the server survive (process
    alive, accepts a connect), and was the normal client unaffected (a sample within the
    case's window plus 0.5 s, no disconnect then, nothing lost over the run). Each bad peer's
    answer is recorded: status line, WebSocket close code, error line, reset, or left open.

    Two more cases each run on a second server of the transport, started for it with a
    normal client of its own (the main server's client and figures stay undisturbed), and
    a header timeout of 30 s so idle sockets stay for the whole case:

    - "idle sockets at the limit": ``max_connections`` = ``limit_connections``; with the
      normal client connected, idle sockets fill the rest of the limit and a newcomer asks
      (a transport that counts only streams serves it, one that counts sockets refuses it);
      then the idle sockets go, subscribers fill the limit and a newcomer past it must be
      refused clearly (503, close 1013, an error line). Figures ``limit_idle_newcomer_refused``
      and ``limit_newcomer_refused``.
    - "fd exhaustion": ``RLIMIT_NOFILE`` = ``fd_limit`` (soft and hard, so ``serve`` cannot
      raise it); with the normal client connected, ``fd_idle`` idle sockets; over
      ``fd_watch_s`` the server's CPU % and what it wrote to stderr (the whole episode), then
      the idle sockets close and a new client must get a sample within
      ``served_again_within_s`` (else the server did not survive). Figures
      ``fd_exhaustion_server_cpu_percent``, ``fd_exhaustion_stderr_bytes``,
      ``fd_exhaustion_log_lines``, ``fd_exhaustion_server_fds`` and
      ``fd_exhaustion_served_again_s``.
    """

    name = "bad-input"
    kind: Kind = "fault"
    #: Timer-bound figures (seconds): every transport runs it at once, on its own processes.
    concurrent = True
    max_repeats: int | None = None
    knobs: Mapping[str, BadInputKnobs] = {
        # 2 s even in quick: every transport runs this at once, and on 2 cores a busy server
        # (grpc's handler behind 63 subscribers) may take over a second to refuse a newcomer.
        "quick": BadInputKnobs(PACE["quick"], idle_burst=200, answer_timeout_s=2.0, non_readers=50),
        "default": BadInputKnobs(PACE["default"], idle_burst=300, answer_timeout_s=2.0),
        "full": BadInputKnobs(PACE["full"], idle_burst=500, answer_timeout_s=5.0, non_readers=300),
    }
    columns = (
        Column("cases", "cases"),
        Column("server_survived", "server survived"),
        Column("others_unaffected", "others unaffected"),
        Column("lost", "lost"),
        Column("fd_exhaustion_server_cpu_percent", "CPU % out of fds"),
        Column("fd_exhaustion_log_lines", "log lines out of fds"),
        Column("fd_exhaustion_served_again_s", "served again s"),
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
        # Every transport's peers are in this process at once: take what the hard limit allows.
        raise_fd_limit()
        timeout = k.answer_timeout_s
        family = ctx.transport.bad_input_family
        udp = ctx.transport.features.transport_protocol == "udp"
        header_timeout_s = ctx.effective_settings.header_timeout_s
        windows: list[tuple[str, str, bool, int, int]] = []
        rss_per_non_reader: list[float] = []
        async with ctx.server(k.pace.rate_hz) as server:
            target = target_of(ctx.transport, server.host, server.port, ctx.place.connect)
            job = ctx.job(server.port, (ClientGroup(1),), keep_samples=True, keep_latencies=False)
            async with ctx.clients(job) as worker:
                await worker.wait_ready()

                async def stuck(t: Target) -> str:
                    got, per_peer = await _non_readers(server, t, family, k)
                    rss_per_non_reader.append(per_peer)
                    return got

                cases: list[tuple[str, Callable[[Target], Awaitable[str]]]] = [
                    *(
                        (c.name, partial(_peer_answer, c.peer, timeout))
                        if c.peer is not None
                        else (c.name, partial(_answer_to, c.build, timeout))
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
                if udp:  # their QUIC counterparts, in the same places (bad_input_quic)
                    cases[-4:] = self._quic_cases(ctx, server, k, rss_per_non_reader)
                for name, case in cases:
                    ctx.note(name)
                    start = time.monotonic_ns()
                    try:
                        got = await case(target)
                    except (OSError, TimeoutError) as exc:
                        got = f"could not connect: {exc!r}"
                    end = time.monotonic_ns()
                    alive = server.running and await server_alive(target, timeout)
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
        own_settings = ctx.effective_settings.with_changes(header_timeout_s=OWN_HEADER_TIMEOUT_S)
        own_cases = (
            OwnServerCase(
                f"idle sockets at the limit ({k.limit_connections} connections)",
                partial(_at_the_limit, family, k.limit_connections, timeout),
                own_settings.with_changes(max_connections=k.limit_connections),
            ),
            OwnServerCase(
                f"fd exhaustion (RLIMIT_NOFILE {k.fd_limit}, {k.fd_idle} idle sockets)",
                partial(
                    _out_of_descriptors,
                    ctx.transport,
                    ctx.effective_settings,
                    k,
                    ctx.place.client_prefix,
                ),
                own_settings,
                nofile=k.fd_limit,
            ),
        )
        if udp:
            own_cases = self._quic_own_cases(ctx, k, own_settings)
        own_answers, figures, own_problems = await _on_own_servers(ctx, k, own_cases)
        answers += own_answers
        problems = [
            f"{a.case}: " + ("server died" if not a.server_survived else "others affected")
            for a in answers
            if not (a.server_survived and a.others_unaffected)
        ]
        if not delivery["delivery_ok"]:
            problems.append(f"normal client: {delivery['delivery_problems']}")
        problems += own_problems
        metrics: dict[str, Scalar] = {
            **delivery,
            "non_reader_rss_bytes_per_peer": rss_per_non_reader[0] if rss_per_non_reader else None,
            **figures,
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
            "limit_connections": k.limit_connections,
            "fd_limit": k.fd_limit,
            "fd_idle": k.fd_idle,
        }
        return [ctx.record(params, metrics, detail=answers)]

    @staticmethod
    def _quic_cases(
        ctx: RunContext, server: ServerProcess, k: BadInputKnobs, rss: list[float]
    ) -> list[tuple[str, Callable[[Target], Awaitable[str]]]]:
        """Idle burst, newcomer, slow head and non-readers for a transport over UDP."""
        timeout, settings = k.answer_timeout_s, ctx.effective_settings
        # A QUIC handshake costs both sides far more CPU than a TCP connect: fewer of them.
        idle = max(1, k.idle_burst // QUIC_FEWER)

        async def stuck(t: Target) -> str:
            got, per_peer = await quic.non_readers(
                server, t, ctx.transport, settings, k.non_readers, k.non_reader_watch_s
            )
            rss.append(per_peer)
            return got

        return [
            ("idle burst", lambda t: quic.idle_burst(t, idle, timeout / 2)),
            ("idle burst, then a newcomer", lambda t: quic.newcomer_among_idle(t, idle, timeout)),
            (
                f"no CONNECT after the handshake (header timeout {settings.header_timeout_s:g} s)",
                lambda t: quic.unanswered_connection(t, settings.header_timeout_s),
            ),
            (f"{k.non_readers} subscribers that never read", stuck),
        ]

    @staticmethod
    def _quic_own_cases(
        ctx: RunContext, k: BadInputKnobs, own_settings: Settings
    ) -> tuple[OwnServerCase, OwnServerCase]:
        """The limit and fd-exhaustion cases with QUIC peers (bad_input_quic). The limit is a
        quarter of the TCP transports': every session is a stream of packets the server builds
        and encrypts in Python, and 63 of them at once saturate it before any newcomer asks."""
        limit = max(2, k.limit_connections // 4)
        limited = own_settings.with_changes(max_connections=limit)
        return (
            OwnServerCase(
                f"idle sockets at the limit ({limit} connections)",
                partial(quic.at_the_limit, ctx.transport, limited, limit, k.answer_timeout_s),
                limited,
            ),
            OwnServerCase(
                f"fd exhaustion (RLIMIT_NOFILE {k.fd_limit}, {k.fd_idle // QUIC_FEWER} idle "
                "QUIC connections)",
                partial(quic.out_of_descriptors, ctx.transport, ctx.effective_settings,
                        k.fd_idle // QUIC_FEWER, k.fd_watch_s, k.served_again_within_s,
                        k.answer_timeout_s),
                own_settings,
                nofile=k.fd_limit,
            ),
        )  # fmt: skip

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


async def _peer_answer(
    peer: Callable[[Target, float], Awaitable[str]], timeout_s: float, t: Target
) -> str:
    return await peer(t, timeout_s)


async def _answer_to(build: Callable[[Target], bytes], timeout_s: float, t: Target) -> str:
    return await answer(t, build(t), timeout_s)


async def _newcomer_among_idle(
    t: Target, family: BadInputFamily, idle: int, timeout_s: float
) -> str:
    """Idle sockets must not lock out a newcomer: what a normal opening gets among them."""
    opened: list[asyncio.StreamWriter] = []
    try:
        for _ in range(idle):
            opened.append((await t.open())[1])
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


async def _on_own_servers(
    ctx: RunContext, k: BadInputKnobs, cases: Sequence[OwnServerCase]
) -> tuple[list[Answer], dict[str, Scalar], list[str]]:
    """Each case on a server of its own, one after the other, each server with a normal
    client of its own reading alongside (one worker holds them all): the answers, the
    cases' figures (every key of :data:`OWN_FIGURES`) and the normal clients' problems."""
    place = ctx.place
    servers = [
        ServerProcess(
            ctx.transport.name,
            rate_hz=k.pace.rate_hz,
            settings=case.settings,
            options=ctx.transport.options,
            seed=ctx.seed,
            p=ctx.p,
            host=place.host,
            exec_prefix=place.server_prefix,
            connect=place.connect,
            loop=place.loop,
            gc=place.gc,
            ready_timeout_s=ctx.profile.ready_timeout_s,
            nofile=case.nofile,
        )
        for case in cases
    ]
    figures: dict[str, Scalar] = dict.fromkeys(OWN_FIGURES)
    windows: list[tuple[str, bool, int, int]] = []
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            stack.push_async_exit(server)  # stopped on errors, else torn down in the background
            await server.start()
        groups = tuple(ClientGroup(1, host=s.host, port=s.port) for s in servers)
        job = ctx.job(servers[0].port, groups, keep_samples=True, keep_latencies=False)
        worker = await stack.enter_async_context(ctx.clients(job))
        await worker.wait_ready()
        for case, server in zip(cases, servers, strict=True):
            ctx.note(case.name)
            target = target_of(ctx.transport, server.host, server.port, ctx.place.connect)
            start = time.monotonic_ns()
            served = False
            try:
                got, got_figures, served = await case.run(server, target)
                figures.update(got_figures)
            except (OSError, TimeoutError, psutil.Error) as exc:
                got = f"could not connect: {exc!r}"
            end = time.monotonic_ns()
            alive = server.running and await server_alive(target, k.answer_timeout_s)
            windows.append((got, alive and served, start, end))
        await asyncio.sleep(UNAFFECTED_SLACK_S)
        result = await worker.stop()
    answers: list[Answer] = []
    problems: list[str] = []
    for case, client, (got, survived, start, end) in zip(
        cases, result.clients, windows, strict=True
    ):
        unaffected = (
            client.counts.lost == 0
            and client.disconnects() == 0
            and _unaffected(client, start, end)
        )
        answers.append(
            Answer(
                case=case.name, answer=got, server_survived=survived, others_unaffected=unaffected
            )
        )
        delivery = judge([client], Expect(window=False))
        if not delivery["delivery_ok"]:
            problems.append(f"{case.name}: normal client: {delivery['delivery_problems']}")
    return answers, figures, problems


async def _close(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _at_the_limit(
    family: BadInputFamily, limit: int, timeout_s: float, server: ServerProcess, t: Target
) -> tuple[str, dict[str, Scalar], bool]:
    """The normal client and idle sockets at the connection limit, then a newcomer; then
    subscribers at the limit, then a newcomer past it (which must be refused clearly)."""
    head = request_head(family, t)
    # The normal client holds one connection: idle sockets take the rest.
    idle, failed = await open_idle(t, limit - 1, timeout_s)
    try:
        among_idle = await answer(t, head, timeout_s)
    finally:
        await _close(idle)
    await asyncio.sleep(0.3)  # the server notices they went (EOF) before subscribers come
    peers = await subscribers(t, head, limit - 1, timeout_s)
    try:
        past = await answer(t, head, timeout_s)
    finally:
        await _close(peers)
    idle_refused, refused = is_refusal(among_idle), is_refusal(past)
    text = (
        f"{len(idle)} idle sockets{f' ({failed} failed)' if failed else ''} + the normal "
        f"client: newcomer {'refused' if idle_refused else 'not refused'} ({among_idle}); "
        f"{len(peers)} subscribers + the normal client: newcomer past the limit "
        f"{'refused' if refused else 'NOT refused'} ({past})"
    )
    figures: dict[str, Scalar] = {
        "limit_idle_newcomer_refused": idle_refused,
        "limit_newcomer_refused": refused,
    }
    return text, figures, True


async def _out_of_descriptors(
    transport: Transport,
    settings: Settings,
    k: BadInputKnobs,
    client_prefix: tuple[str, ...],
    server: ServerProcess,
    t: Target,
) -> tuple[str, dict[str, Scalar], bool]:
    """More idle sockets than the server has descriptors: its CPU and log meanwhile, and how
    soon a new client gets a sample once they are gone."""
    proc = psutil.Process(server.pid)
    log_from = server.stderr_bytes()
    idle, failed = await open_idle(t, k.fd_idle, k.answer_timeout_s)
    try:
        # Until the server holds about all it may (tcp refuses past its limit itself).
        loop = asyncio.get_running_loop()
        until = loop.time() + 1.0
        fds = proc.num_fds()
        while fds < k.fd_limit - 8 and loop.time() < until:
            await asyncio.sleep(0.05)
            fds = proc.num_fds()
        cpu_from, watch_from = server.cpu_s(), loop.time()
        await asyncio.sleep(k.fd_watch_s)
        cpu = 100 * (server.cpu_s() - cpu_from) / (loop.time() - watch_from)
        fds = max(fds, proc.num_fds())
    finally:
        await _close(idle)
    served_s = await _served_again(
        transport, t, settings, k.served_again_within_s, client_prefix
    )
    log = server.stderr_since(log_from)
    lines = log.count(b"\n")
    served = (
        f"served again after {served_s:.1f} s"
        if served_s is not None
        else f"NOT served again within {k.served_again_within_s:g} s"
    )
    text = (
        f"{len(idle)} idle sockets{f' ({failed} failed)' if failed else ''}, server at "
        f"{fds} fds: cpu {cpu:.0f}% over {k.fd_watch_s:g} s, {lines} log "
        f"line{'' if lines == 1 else 's'} "
        f"({len(log)} bytes), {served}"
    )
    figures: dict[str, Scalar] = {
        "fd_exhaustion_server_cpu_percent": round(cpu, 1),
        "fd_exhaustion_stderr_bytes": len(log),
        "fd_exhaustion_log_lines": lines,
        "fd_exhaustion_server_fds": fds,
        "fd_exhaustion_served_again_s": None if served_s is None else round(served_s, 3),
    }
    return text, figures, served_s is not None


async def _served_again(
    transport: Transport,
    t: Target,
    settings: Settings,
    within_s: float,
    client_prefix: tuple[str, ...] = (),
) -> float | None:
    """Seconds until a new client connects and gets a sample (None: not within ``within_s``).

    On an emulated path (``client_prefix``: ``ip netns exec CLIENT_NS``) the client is
    ``python -m transports listen --count 1`` in the client's namespace, the real CLI."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    if client_prefix:
        proc = await asyncio.create_subprocess_exec(
            *client_prefix, sys.executable, "-m", "transports", "listen", transport.name,
            "--host", t.host, "--port", str(t.port), "--count", "1", "--wait", f"{within_s:g}",
            "--settings-json", settings_document(settings, transport.options),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with asyncio.timeout(within_s + 5):
                code = await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        return loop.time() - started if code == 0 else None
    deadline = started + within_s
    while loop.time() < deadline:
        try:
            async with (
                asyncio.timeout(deadline - loop.time()),
                transport.connect(t.host, t.port, None, settings, transport.options) as samples,
            ):
                await anext(aiter(samples))
            return loop.time() - started
        except TimeoutError:
            return None
        except (StreamError, OSError):
            await asyncio.sleep(0.05)
    return None


def _answers(record: Record) -> list[Answer]:
    """The record's answers (a schema-1 record keeps them under ``answers``)."""
    try:
        return msgspec.json.decode(record.detail, type=list[Answer])
    except msgspec.ValidationError:
        return msgspec.json.decode(record.detail, type=_V1).answers


class _V1(msgspec.Struct):
    answers: list[Answer] = []


BAD_INPUT = BadInput()
