"""The experiments package: pure pieces directly, plus one real quick run end to end."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from experiments import aggregate
from experiments.harness import parse_serving_line, settings_args
from experiments.jobs import ClientGroup, ClientJob
from experiments.profiles import EXPERIMENT_SETTINGS, PROFILES
from experiments.pushers import ASYNCIO_TCP, BY_LIBRARY, pusher_for
from experiments.report import format_cell, render
from experiments.results import SCHEMA, load_results, new_results, write_results
from experiments.scenarios import SCENARIOS
from experiments.scenarios.fanout import split_clients
from experiments.sockstats import parse_ss
from experiments.stats import cdf_points, delivery_totals, latency_summary, spread
from transports.registry import TRANSPORTS

ROOT = Path(__file__).resolve().parent.parent


def test_latency_summary_uses_numpy_percentiles_in_ms() -> None:
    ns = [i * 1_000_000 for i in range(1, 101)]  # 1 .. 100 ms
    s = latency_summary(ns)
    assert s["latency_ms_p50"] == pytest.approx(50.5)
    assert s["latency_ms_p90"] == pytest.approx(90.1)
    assert s["latency_ms_p99"] == pytest.approx(99.01)
    assert s["latency_ms_p999"] == pytest.approx(99.901)
    assert s["latency_ms_max"] == 100.0
    assert latency_summary([])["latency_ms_p99"] is None


def test_cdf_points_are_monotone_and_end_at_max() -> None:
    points = cdf_points([5_000_000, 1_000_000, 3_000_000])
    assert [p for p, _ in points] == sorted(p for p, _ in points)
    assert points[-1] == [100.0, 5.0]
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(points))
    assert cdf_points([]) == []


def test_spread_is_median_and_range_ignoring_missing() -> None:
    s = spread([3.0, None, 1.0, 2.0, float("nan")])
    assert s is not None
    assert (s.median, s.low, s.high, s.n) == (2.0, 1.0, 3.0, 3)
    assert spread([None, True]) is None  # booleans are flags, not figures


def test_delivery_totals_sum_clients_and_count_lossy_ones() -> None:
    counts = {"delivered": 10, "lost": 0, "duplicated": 1, "reordered": 0, "corrupted": 0}
    lossy = {**counts, "lost": 2}
    totals = delivery_totals([{"counts": counts}, {"counts": lossy}])
    assert totals["delivered"] == 20 and totals["lost"] == 2 and totals["duplicated"] == 2
    assert totals["clients_with_loss"] == 1


def _record(transport: str, repeat: int, p99: float, **metrics: Any) -> dict[str, Any]:
    return {
        "transport": transport,
        "scenario": "latency",
        "repeat": repeat,
        "params": {"rate_hz": 1000.0, "clients": 1},
        "metrics": {"latency_ms_p99": p99, "delivery_ok": True, **metrics},
    }


def test_rows_aggregate_repeats_and_ratio_to_reference() -> None:
    records = [
        _record("tornado-ws", 0, 2.0),
        _record("tornado-ws", 1, 4.0),
        _record("tornado-ws", 2, 3.0),
        _record("tcp", 0, 1.5),
        _record("tcp", 1, 1.0, delivery_ok=False, delivery_problems="3 lost"),
    ]
    rows = aggregate.rows(records, "latency")
    by = {r.transport: r for r in rows}
    ref = by["tornado-ws"].spreads["latency_ms_p99"]
    assert ref is not None and (ref.median, ref.low, ref.high) == (3.0, 2.0, 4.0)
    assert aggregate.ratio(by["tcp"], "latency_ms_p99", rows) == pytest.approx(1.25 / 3.0)
    assert by["tcp"].problems == ("repeat 1: 3 lost",)
    assert format_cell(ref, 1.0) == "3 [2–4] ×1"


def test_report_renders_tables_conditions_and_flags_from_results_json(tmp_path: Path) -> None:
    env = {
        "cpu_model": "Test CPU",
        "cores": 2,
        "os": "Linux",
        "python": "3.11.7",
        "packages": {"tornado": "6.5.2"},
        "git_commit": "0123456789abcdef",
        "git_dirty": False,
        "repeats": 2,
        "argv": ["python", "-m", "experiments"],
        "effective_settings": {"tornado-ws": EXPERIMENT_SETTINGS.as_dict()},
    }
    results = new_results("quick", EXPERIMENT_SETTINGS.as_dict(), env)
    results["records"] = [
        _record("tornado-ws", 0, 2.0),
        _record("tornado-ws", 1, 4.0),
        _record("sse", 0, 6.0, delivery_ok=False, delivery_problems="7 lost"),
        {**_record("tcp", 0, 0.0), "metrics": {}, "error": "HarnessError: no server"},
    ]
    write_results(tmp_path, results)
    text = render(load_results(tmp_path), tmp_path)
    assert "## latency" in text
    assert "3 [2–4] ×1" in text  # tornado-ws p99: median [min–max], ratio to itself
    assert "6 ×2" in text  # sse's p99 against tornado-ws's median of 3
    assert "sse ⚠" in text and "7 lost" in text
    assert "error: HarnessError: no server" in text
    assert "Test CPU" in text and "0123456789abcdef" in text and "heartbeat_s" in text
    assert "## How to cite" in text


def test_results_reject_other_schemas(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"schema": 99}))
    with pytest.raises(ValueError, match="schema"):
        load_results(tmp_path)


def test_serving_line_and_settings_args() -> None:
    line = "serving tcp on 127.0.0.1:40123 url=tcp://127.0.0.1:40123 epoch=9f2c rate=10/s p=0.72"
    parsed = parse_serving_line(line)
    assert parsed is not None and (parsed.name, parsed.port, parsed.epoch) == ("tcp", 40123, "9f2c")
    assert parse_serving_line("no server here") is None
    args = settings_args(EXPERIMENT_SETTINGS.with_changes(dead_after_s=None, resume=False))
    pairs = dict(a.split("=", 1) for a in args[1::2])
    assert pairs["dead_after_s"] == "none" and pairs["resume"] == "false"
    assert pairs["heartbeat_s"] == str(EXPERIMENT_SETTINGS.heartbeat_s)


def test_client_job_round_trips_through_json() -> None:
    job = ClientJob(
        "tornado-ws",
        "127.0.0.1",
        1234,
        (ClientGroup(3), ClientGroup(1, "slow", 5.0), ClientGroup(1, "stopped")),
        settings=EXPERIMENT_SETTINGS,
        duration_s=1.5,
    )
    assert ClientJob.from_json(job.to_json()) == job
    assert job.clients == 5


def test_parse_ss_sums_acked_and_received_bytes() -> None:
    text = (
        "0 0 127.0.0.1:9 127.0.0.1:5\n\t cubic bytes_sent:120 bytes_acked:100 bytes_received:7\n"
        "0 0 127.0.0.1:9 127.0.0.1:6\n\t cubic bytes_acked:50 bytes_received:3 segs_in:2\n"
    )
    got = parse_ss(text)
    assert (got.sent, got.received, got.connections) == (150, 10, 2)


def test_every_transport_maps_to_a_pusher_by_library() -> None:
    for transport in TRANSPORTS.values():
        pusher = pusher_for(transport)
        assert pusher.library in transport.dependencies or pusher is ASYNCIO_TCP
    assert BY_LIBRARY["tornado"].name == "tornado-ws"


def test_fanout_split_and_profiles() -> None:
    fp = PROFILES["default"].fanout
    assert split_clients(10, fp) == [10]
    assert split_clients(1001, fp) == [501, 500]
    assert PROFILES["quick"].repeats == 1 and PROFILES["default"].repeats == 3
    assert PROFILES["full"].repeats == 5
    assert {"latency", "throughput", "fanout", "complexity"} <= set(SCENARIOS)
    for scenario in SCENARIOS.values():
        assert type(scenario).__doc__, f"{scenario.name} says what it measures"


def test_cli_rejects_bad_arguments_with_exit_2() -> None:
    for argv in (["--transports", "nope"], ["--scenarios", "nope"], ["--repeat", "0"], ["-x"]):
        done = subprocess.run(
            [sys.executable, "-m", "experiments", *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
        assert done.returncode == 2, argv
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stdout == ""


@pytest.mark.timeout(120)
def test_quick_run_end_to_end_writes_results_and_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "--profile",
            "quick",
            "--transports",
            "tornado-ws",
            "--scenarios",
            "latency,complexity",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == SCHEMA and data["profile"] == "quick"
    assert data["settings"]["heartbeat_s"] == EXPERIMENT_SETTINGS.heartbeat_s
    env = data["environment"]
    assert env["cores"] and env["python"] and env["packages"]["tornado"]
    assert env["repeats"] == 1 and "git_commit" in env
    by = {r["scenario"]: r for r in data["records"]}
    assert set(by) == {"latency", "complexity"}
    lat = by["latency"]
    assert lat["transport"] == "tornado-ws" and lat["repeat"] == 0
    assert lat["params"]["rate_hz"] == PROFILES["quick"].latency.rates_hz[0]
    m = lat["metrics"]
    assert m["delivered"] > 0 and m["lost"] == 0 and m["delivery_ok"] is True
    assert 0 < m["latency_ms_p50"] <= m["latency_ms_p99"] <= m["latency_ms_max"]
    c = by["complexity"]["metrics"]
    assert c["sloc"] > 0 and c["cyclomatic_total"] > 0 and c["dependencies"] == 1
    assert c["wire_bytes_per_sample"] > 60  # the JSON sample alone is over 60 bytes
    report = (out / "report.md").read_text()
    assert "## latency" in report and "## complexity" in report and "tornado-ws" in report
    assert (out / "latency_cdf.png").stat().st_size > 1000
