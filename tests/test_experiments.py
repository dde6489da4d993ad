"""The experiments' own pieces: typed seams, registries, delivery judgement, CLI, a quick run."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from experiments.baselines import PUSHERS, baseline_of
from experiments.results import SCHEMA, load_results
from experiments.run.processes import settings_document
from experiments.run.profiles import EXPERIMENT_SETTINGS, PROFILE_NAMES, PROFILES
from experiments.scenarios.delivery import Expect, judge
from experiments.scenarios.fanout import FANOUT, split_clients
from experiments.scenarios.latency import LATENCY
from experiments.scenarios.registry import SCENARIOS
from experiments.worker.probe import parse_ss
from experiments.worker.schema import (
    ClientGroup,
    ClientJob,
    ClientOutcome,
    Connected,
    ConnectFailed,
    Disconnected,
    Window,
    WorkerReady,
    WorkerResult,
    decode_job,
    decode_line,
    encode,
)
from model.ledger import DeliveryCounts, PosteriorError
from transports.registry import TRANSPORTS
from transports.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def outcome(
    *,
    lost: int = 0,
    duplicated: int = 0,
    drops: int = 0,
    connected: bool = True,
    error: str | None = None,
    role: str = "normal",
) -> ClientOutcome:
    events: list[Connected | Disconnected | ConnectFailed] = []
    if connected:
        events.append(Connected(1, 1, None))
    events += [Disconnected(2 + i, 1, "reset") for i in range(drops)]
    return ClientOutcome(
        index=0,
        role=role,  # type: ignore[arg-type]
        received=10,
        received_in_window=5,
        counts=DeliveryCounts(delivered=10, lost=lost, duplicated=duplicated),
        posterior_error=PosteriorError(0.0, -float(lost), 0.0),
        epochs=["ab"],
        events=events,
        error=error,
    )


def test_client_job_round_trips_and_rejects_what_it_does_not_know() -> None:
    job = ClientJob(
        transport="tornado-ws",
        host="127.0.0.1",
        port=1234,
        groups=(ClientGroup(3), ClientGroup(1, "slow", 5.0), ClientGroup(1, "stopped")),
        settings=EXPERIMENT_SETTINGS,
        duration_s=1.5,
    )
    back = decode_job(encode(job))
    assert back.groups == job.groups and back.settings == EXPERIMENT_SETTINGS
    assert back.duration_s == 1.5 and back.clients == 5
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode_job(encode(job)[:-1] + b',"surprise":1}')
    with pytest.raises(msgspec.ValidationError):
        decode_job(encode(job).replace(b'"port":1234', b'"port":"1234"'))
    with pytest.raises(msgspec.ValidationError):
        decode_job(encode(job).replace(b'"slow"', b'"sluggish"'))


def test_worker_lines_are_a_tagged_union() -> None:
    ready = decode_line(encode(WorkerReady(5, 2, 3)))
    assert ready == WorkerReady(5, 2, 3)
    result = WorkerResult(
        transport="tcp",
        clients_requested=1,
        ready_ns=1,
        window=Window(10, 2_000_000_010),
        cpu_window_s=0.5,
        cpu_total_s=0.6,
        server=None,
        settings=Settings(),
        latency={"normal": ""},
        clients=[outcome(drops=1)],
    )
    back = decode_line(encode(result))
    assert isinstance(back, WorkerResult) and back.window.seconds == pytest.approx(2.0)
    assert isinstance(back.clients[0].events[1], Disconnected)
    assert back.clients[0].disconnects() == 1


def test_settings_travel_as_one_json_document_and_come_back_equal() -> None:
    changed = dataclasses.replace(EXPERIMENT_SETTINGS, dead_after_s=None, resume=False)
    doc = msgspec.json.decode(settings_document(changed))
    assert msgspec.convert(doc["settings"], Settings) == changed
    for transport in TRANSPORTS.values():
        doc = msgspec.json.decode(settings_document(changed, transport.options))
        assert msgspec.convert(doc["options"], type(transport.options)) == transport.options


def test_one_delivery_judgement() -> None:
    ok = judge([outcome()])
    assert ok["delivery_ok"] is True and ok["delivered"] == 10
    lossy = judge([outcome(lost=3)])
    assert lossy["delivery_ok"] is False and "3 lost" in str(lossy["delivery_problems"])
    # A fault scenario expects disconnects; loss is a problem only for a resuming transport.
    faulted = [outcome(drops=2, lost=4)]
    assert judge(faulted, Expect(faults=True, resumes=False))["delivery_ok"] is True
    assert judge(faulted, Expect(faults=True, resumes=True))["delivery_ok"] is False
    assert "2 disconnects" in str(judge([outcome(drops=2)])["delivery_problems"])
    never = judge([outcome(connected=False)])
    assert "never connected" in str(never["delivery_problems"])
    died = judge([outcome(error="OSError: x")])
    assert "client errors" in str(died["delivery_problems"])
    twice = outcome()
    twice = msgspec.structs.replace(twice, posterior_error=PosteriorError(0.0, 2.0, 1.0))
    assert judge([twice])["posterior_counted_twice"] == 3


def test_parse_ss_sums_acked_and_received_bytes() -> None:
    text = (
        "0 0 127.0.0.1:9 127.0.0.1:5\n\t cubic bytes_sent:120 bytes_acked:100 bytes_received:7\n"
        "0 0 127.0.0.1:9 127.0.0.1:6\n\t cubic bytes_acked:50 bytes_received:3 segs_in:2\n"
    )
    got = parse_ss(text)
    assert (got.sent, got.received, got.connections) == (150, 10, 2)


def test_every_transport_names_a_baseline_on_its_own_library() -> None:
    for transport in TRANSPORTS.values():
        pusher = baseline_of(transport)
        assert pusher.name in PUSHERS
        own = pusher.library in transport.dependencies
        stdlib_only = pusher.library == "stdlib" and not transport.dependencies
        assert own or stdlib_only, f"{transport.name}: baseline {pusher.name} is on another library"


def test_every_scenario_owns_its_knobs_columns_and_doc() -> None:
    for scenario in SCENARIOS.values():
        assert type(scenario).__doc__, f"{scenario.name} says what it measures"
        assert set(scenario.knobs) == set(PROFILE_NAMES), scenario.name
        assert scenario.columns and scenario.headline, scenario.name
        for column in (*scenario.columns, *scenario.headline):
            # Headers are for people: words and units, never a raw snake_case metric key.
            assert column.header and "_" not in column.header, (scenario.name, column)
        msgspec.json.encode(scenario.knobs["default"])  # recorded in results.json


def test_default_profile_gives_every_p99_it_prints_enough_samples() -> None:
    # The report prints a p99 only from >= 1,000 pooled samples; the default profile must
    # collect that many at every latency rate and from 100 fan-out clients up.
    k = LATENCY.knobs["default"]
    repeats = PROFILES["default"].repeats
    assert all(r * k.duration_at(r) * repeats >= 1000 for r in k.rates_hz)
    f = FANOUT.knobs["default"]
    assert all(n * f.rate_hz * f.duration_s * repeats >= 1000 for n in f.clients if n >= 100)


def test_fanout_split() -> None:
    k = FANOUT.knobs["default"]
    assert split_clients(10, k) == [10]
    assert split_clients(1001, k) == [501, 500]


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
    # Not a terminal: one plain line per finished scenario, then the summary.
    assert "latency done:" in done.stderr and "complexity done:" in done.stderr
    results = load_results(out)
    assert results.schema == SCHEMA and results.profile == "quick"
    assert results.settings == EXPERIMENT_SETTINGS
    env = results.environment
    assert env.cores and env.python and env.packages["tornado"]
    assert env.repeats == 1 and env.git_commit is not None
    assert env.effective_settings["tornado-ws"] == TRANSPORTS["tornado-ws"].settings(
        EXPERIMENT_SETTINGS
    )
    by = {r.scenario: r for r in results.records}
    assert set(by) == {"latency", "complexity"}
    lat = by["latency"]
    assert lat.transport == "tornado-ws" and lat.repeat == 0
    assert lat.params["rate_hz"] == LATENCY.knobs["quick"].rates_hz[0]
    m = lat.metrics
    assert m["lost"] == 0 and m["delivery_ok"] is True
    assert isinstance(m["delivered"], int) and m["delivered"] > 0
    p50, p99, top = (lat.metric(f"latency_ms_{k}") for k in ("p50", "p99", "max"))
    assert p50 is not None and p99 is not None and top is not None
    assert 0 < p50 <= p99 <= top
    assert lat.latency["normal"]  # the histogram the report pools
    c = by["complexity"]
    sloc, wire = c.metric("sloc"), c.metric("wire_bytes_per_sample")
    assert sloc and sloc > 0 and c.metrics["dependencies"] == 1
    assert wire is not None and wire > 60  # the JSON sample alone is over 60 bytes
    report = (out / "report.md").read_text()
    assert "## latency" in report and "## complexity" in report and "tornado-ws" in report
    assert "p99 ms" in report and "latency_ms_p99 |" not in report  # headers carry units
    assert (out / "latency_cdf.png").stat().st_size > 1000
