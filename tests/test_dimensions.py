"""The ``--security``, ``--loop`` and ``--clients`` dimensions: names, rules, real TLS, a run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from experiments.histogram import encode_latencies
from experiments.report.dimensions import split, telling_apart
from experiments.report.side_by_side import (
    CLIENT_KINDS,
    LOOPS,
    TLS,
    pair_rows,
    side_by_side_section,
)
from experiments.results import Record, Results, load_results
from experiments.run.cli import main as experiments_main
from experiments.run.context import RunContext
from experiments.run.processes import settle_teardowns
from experiments.run.profiles import EXPERIMENT_SETTINGS, PROFILES
from experiments.run.security import (
    UnknownSecurity,
    parse_securities,
    run_certificate,
    security_in_force,
    security_not_applicable,
)
from experiments.scenarios.fanout import FANOUT, split_clients
from experiments.via import FrontedServer, Tls
from experiments.worker.process import ClientProcess
from experiments.worker.schema import ClientGroup, ConnectFailed
from tests.support import ENVIRONMENT
from transports.loops import UnknownLoop, parse_loops, run, running_loop_name
from transports.registry import get
from transports.tls import TlsSettings, client_context

ROOT = Path(__file__).resolve().parent.parent
TCP, WEBTRANSPORT = get("tcp"), get("webtransport")


def test_loop_names_and_the_loop_that_really_runs() -> None:
    assert parse_loops(" uvloop, asyncio,uvloop ") == ("uvloop", "asyncio")
    for bad in ("trio", "", "asyncio,,Uvloop"):
        with pytest.raises(UnknownLoop):
            parse_loops(bad)

    async def which() -> str:
        return running_loop_name()

    assert run(which(), "uvloop") == "uvloop"
    assert run(which(), "asyncio") == "asyncio"


def test_security_names_and_what_each_step_runs_under() -> None:
    assert parse_securities("tls,plain,tls") == ("tls", "plain")
    with pytest.raises(UnknownSecurity):
        parse_securities("ssl")
    # QUIC has no plaintext: webtransport is tls in force, and its plain step only repeats
    # its tls step when the run has one.
    assert security_in_force("plain", WEBTRANSPORT) == "tls"
    assert security_in_force("plain", TCP) == "plain"

    def why(security: str, transport: str = "tcp", **kw: object) -> str | None:
        step: dict[str, object] = {
            "scenario": "latency",
            "client_kind": "python",
            "securities": ("plain", "tls"),
        }
        step.update(kw)
        return security_not_applicable(security, get(transport), **step)  # type: ignore[arg-type]

    assert why("plain") is None and why("tls") is None
    assert "QUIC is always TLS 1.3" in (why("plain", "webtransport") or "")
    assert why("plain", "webtransport", securities=("plain",)) is None
    assert why("tls", "webtransport") is None
    assert "browser" in (why("tls", client_kind="browser") or "")
    assert why("tls", scenario="bad-input") is not None
    assert why("plain", scenario="bad-input") is None
    ctx = RunContext(
        transport=WEBTRANSPORT,
        scenario="latency",
        profile=PROFILES["quick"],
        settings=EXPERIMENT_SETTINGS,
        repeat=0,
        seed=1,
        out_dir=ROOT,
        loop="uvloop",
    )
    assert ctx.dimensions["security"] == "tls" and ctx.dimensions["loop"] == "uvloop"
    assert ctx.place.loop == "uvloop" and ctx.job(1, (ClientGroup(1),)).loop == "uvloop"


def test_tls_through_nginx_ends_at_nginx_and_the_server_behind_it_is_plain() -> None:
    with run_certificate() as cert:
        for via in ("nginx", "nginx-defaults"):
            ctx = RunContext(
                transport=get("sse"),
                scenario="latency",
                profile=PROFILES["quick"],
                settings=EXPERIMENT_SETTINGS,
                repeat=0,
                seed=1,
                out_dir=ROOT,
                via=via,
                security="tls",
                certificate=cert,
            )
            server = ctx.server(100.0)
            assert isinstance(server, FrontedServer), server
            assert server.upstream.tls is None
            assert server.terminates_tls == Tls(str(cert.certfile), str(cert.keyfile))
            assert ctx.client_settings.tls == cert.client_tls
            assert ctx.dimensions["security"] == "tls"
        plain = RunContext(
            transport=get("sse"),
            scenario="latency",
            profile=PROFILES["quick"],
            settings=EXPERIMENT_SETTINGS,
            repeat=0,
            seed=1,
            out_dir=ROOT,
            via="nginx",
            certificate=cert,
        )
        server = plain.server(100.0)
        assert isinstance(server, FrontedServer) and server.terminates_tls is None


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--loop", "bogus"], "unknown event loop 'bogus'"),
        (["--loop", "asyncio,trio"], "unknown event loop 'trio'"),
        (["--gc", "default,off"], "unknown --gc 'off'; known: default, freeze"),
        (["--security", "bogus"], "unknown --security 'bogus'"),
        (["--security", ""], "unknown --security"),
        (["--clients", "0"], "--clients"),
        (["--clients", "x"], "--clients"),
        (["--clients", "10,-5"], "'-5'"),
        (["--scenarios", "latency", "--clients", "10"], "fan-out"),
    ],
)
def test_bad_dimensions_are_one_line_and_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert experiments_main(argv) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert named in line and out == ""


def test_the_full_profile_fans_out_to_ten_thousand() -> None:
    k = FANOUT.knobs["full"]
    assert 10_000 in k.clients
    assert split_clients(10_000, k) == [5_000, 5_000]


async def _first_line(port: int, **tls: object) -> bytes:
    """Connect (over TLS when given ``ssl``/``server_hostname``), say the tcp hello, read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **tls)  # type: ignore[arg-type]
    try:
        writer.write(b"{}\n")
        await writer.drain()
        async with asyncio.timeout(10):
            while True:
                line = await reader.readline()
                if not line.startswith(b'{"heartbeat"'):
                    return line
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


@pytest.mark.timeout(60)
async def test_a_tls_step_really_runs_over_tls(tmp_path: Path) -> None:
    with run_certificate() as cert:
        ctx = RunContext(
            transport=TCP,
            scenario="latency",
            profile=PROFILES["quick"],
            settings=EXPERIMENT_SETTINGS,
            repeat=0,
            seed=1,
            out_dir=tmp_path,
            security="tls",
            certificate=cert,
            loop="uvloop",
        )
        assert ctx.dimensions["security"] == "tls"
        async with ctx.server(200.0, keep=False) as server:
            # A plaintext client gets no sample: the server speaks TLS first.
            assert not (await _first_line(server.port)).startswith(b"{")
            # One that trusts the run's CA gets samples over TLS.
            secure = client_context(cert.client_tls)
            line = await _first_line(server.port, ssl=secure, server_hostname="127.0.0.1")
            assert json.loads(line)["epoch"] == server.epoch
            # So does the harness's worker (on uvloop, with the CA in its job's settings)...
            async with ctx.clients(ctx.job(server.port, (ClientGroup(1),), count=5)) as reader:
                result = await reader.result(timeout_s=30.0)
            assert result.loop == "uvloop" and result.clients[0].received == 5
            assert result.settings.tls == cert.client_tls
            # ... and one given no CA of the run refuses the certificate, once and for all.
            job = ctx.job(server.port, (ClientGroup(1),), count=1, connect_timeout_s=10.0)
            job = msgspec.structs.replace(
                job, settings=EXPERIMENT_SETTINGS.with_changes(tls=TlsSettings())
            )
            async with ClientProcess(job) as worker:
                refused = await worker.result(timeout_s=30.0)
        client = refused.clients[0]
        assert client.received == 0
        kinds = {e.kind for e in client.events if isinstance(e, ConnectFailed)}
        assert kinds == {"certificate"}, client.events
    await settle_teardowns()


def _record(transport: str, security: str, loop: str, scenario: str, **metrics: float) -> Record:
    return Record(
        transport=transport,
        scenario=scenario,
        repeat=0,
        params={"security": security, "loop": loop, "network": "loopback"},
        metrics={"delivery_ok": True, **metrics},
    )


def test_side_by_side_rows_pair_like_with_like() -> None:
    records = [
        _record("tcp", sec, loop, "throughput", samples_per_s=rate, server_cpu_s_per_1k=cpu)
        for sec, loop, rate, cpu in (
            ("plain", "asyncio", 10_000.0, 0.010),
            ("tls", "asyncio", 8_000.0, 0.015),
            ("plain", "uvloop", 20_000.0, 0.005),
            ("tls", "uvloop", 16_000.0, 0.006),
        )
    ]
    records.append(
        Record(
            transport="webtransport",
            scenario="throughput",
            repeat=0,
            params={"security": "plain", "loop": "asyncio"},
            metrics={"not_applicable": "not applicable: QUIC is always TLS 1.3"},
        )
    )
    records.append(_record("webtransport", "tls", "asyncio", "throughput", samples_per_s=5.0))
    tls = {(r.transport, r.conditions): r for r in pair_rows(records, TLS)}
    assert set(tls) == {("tcp", "asyncio"), ("tcp", "uvloop"), ("webtransport", "asyncio")}
    ratios = {m.measure.metric: m.ratio for m in tls[("tcp", "uvloop")].comparisons}
    assert ratios["samples_per_s"] == pytest.approx(0.8)
    assert ratios["server_cpu_s_per_1k"] == pytest.approx(1.2)
    assert ratios["latency:normal:p99"] is None  # no latency scenario ran
    assert tls[("webtransport", "asyncio")].not_applicable[0][0] == "plain"
    loops = {(r.transport, r.conditions): r for r in pair_rows(records, LOOPS)}
    assert set(loops) == {("tcp", "plain"), ("tcp", "tls")}  # webtransport: one loop only
    results = Results(
        schema=2, created="", profile="quick", environment=ENVIRONMENT, settings=EXPERIMENT_SETTINGS
    )
    results.records = records
    assert "## TLS overhead" in side_by_side_section(results, TLS)
    assert "×0.80" in side_by_side_section(results, TLS)
    # Records of one value only: no section.
    results.records = [r for r in records if r.params.get("security") == "plain"]
    assert side_by_side_section(results, TLS) == ""
    assert telling_apart(records) == ["security", "loop"]
    assert [g.label for g in split(records, ["security", "loop"])] == [
        "plain · asyncio",
        "tls · asyncio",
        "plain · uvloop",
        "tls · uvloop",
    ]


def _latency(transport: str, kind: str, rate_hz: float, latency_ms: float) -> Record:
    """A latency record at ``rate_hz``: 1,200 samples of ``latency_ms`` each."""
    return Record(
        transport=transport,
        scenario="latency",
        repeat=0,
        params={"rate_hz": rate_hz, "client_kind": kind, "network": "loopback"},
        metrics={"delivery_ok": True},
        latency={"normal": encode_latencies([int(latency_ms * 1e6)] * 1200)},
    )


def test_browser_and_python_clients_are_compared_at_100_per_second() -> None:
    records = [
        _latency("sse", kind, rate, ms)
        for kind, rate, ms in (
            ("python", 100.0, 2.0),
            ("browser", 100.0, 6.0),
            ("python", 1000.0, 1.0),
            ("browser", 1000.0, 50.0),  # not the compared rate
        )
    ]
    (row,) = pair_rows(records, CLIENT_KINDS)
    p99 = next(c for c in row.comparisons if c.measure.metric == "latency:normal:p99")
    assert p99.ratio == pytest.approx(3.0, rel=0.01)  # 6 ms / 2 ms, at 100/s
    results = Results(
        schema=2, created="", profile="quick", environment=ENVIRONMENT, settings=EXPERIMENT_SETTINGS
    )
    results.records = records
    section = side_by_side_section(results, CLIENT_KINDS)
    assert section.startswith("## Browser and Python clients side by side")
    assert "100 samples/s" in section and "(n=1,200)" in section
    results.records = [r for r in records if r.params["client_kind"] == "python"]
    assert side_by_side_section(results, CLIENT_KINDS) == ""


@pytest.mark.timeout(150)
def test_a_quick_run_over_both_securities_and_both_loops(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "--profile",
            "quick",
            "--scenarios",
            "latency",
            # One transport keeps it short (four steps); the CLI tests cover every transport.
            "--transports",
            "tcp",
            "--security",
            "plain,tls",
            "--loop",
            "asyncio,uvloop",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=140,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = load_results(out)
    combos = {(r.transport, r.params["security"], r.params["loop"]) for r in results.records}
    assert combos == {("tcp", s, loop) for s in ("plain", "tls") for loop in ("asyncio", "uvloop")}
    for r in results.records:
        assert r.error is None and r.metrics["delivery_ok"] is True, r
        assert isinstance(r.metrics["delivered"], int) and r.metrics["delivered"] > 0
    assert results.environment.conditions["security"] == "plain,tls"
    report = (out / "report.md").read_text()
    assert "## TLS overhead" in report and "## Event loops side by side" in report
    assert "| tcp | plain | uvloop |" in report  # the latency table names both dimensions
    assert not list(out.rglob("*.key")) and not list(out.rglob("*.pem"))  # no key left behind
