"""The soak: its nemesis schedule (pure), its command line, its figures, and one short real soak.

The schedule is data drawn from a seed, so it is tested without a socket: deterministic,
every kind mixed in, no two faults overlapping on a transport, and at least 100 faults per
transport in 30 minutes for every seed (a bound, checked against many seeds too). The real
soak is marked ``network``: it builds namespaces, veths and nftables tables (root).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from experiments.faults.nemesis import (
    KINDS,
    NemesisKnobs,
    PlannedFault,
    Span,
    backlog_series,
    fewest_faults,
    schedule,
)
from experiments.faults.windows import FaultWindow, observe, trace
from experiments.network import missing_requirements
from experiments.results import Environment, Record, Results, load_results
from experiments.run import cli
from experiments.run.profiles import OPT_IN, PROFILE_NAMES, PROFILES
from experiments.scenarios.registry import SCENARIOS
from experiments.scenarios.soak import (
    NEMESIS,
    SOAK,
    SoakDetail,
    SoakFault,
    fault_observations,
    rode_out,
)
from experiments.worker.schema import ClientEvent, ClientOutcome, Connected, Disconnected
from model.ledger import DeliveryCounts, PosteriorError
from transports.registry import TRANSPORTS
from transports.settings import Settings

REPO = Path(__file__).resolve().parents[1]
NEEDS_KERNEL = pytest.mark.skipif(
    bool(missing_requirements()),
    reason="the soak's kernel faults need " + "; ".join(missing_requirements()),
)

#: Heavy on CPU or timing-sensitive: under ``pytest -n 2`` these run one after another on one
#: worker (``--dist loadgroup``), never two at once.
pytestmark = pytest.mark.xdist_group("cpu-heavy")
RESUMING = [t.name for t in TRANSPORTS.values() if t.features.resume]
HALF_HOUR_S = 30 * 60.0


# -- the schedule (pure) -----------------------------------------------------------------


def test_schedule_is_deterministic_for_a_seed() -> None:
    for transport in RESUMING:
        first = schedule(7, transport, HALF_HOUR_S, NEMESIS)
        assert first == schedule(7, transport, HALF_HOUR_S, NEMESIS)
        assert first != schedule(8, transport, HALF_HOUR_S, NEMESIS)
    # Each transport draws its own: a schedule does not depend on who else runs.
    assert schedule(7, "tcp", HALF_HOUR_S, NEMESIS) != schedule(7, "sse", HALF_HOUR_S, NEMESIS)


def test_schedule_mixes_every_kind() -> None:
    for seed in range(5):
        for transport in RESUMING:
            faults = schedule(seed, transport, HALF_HOUR_S, NEMESIS)
            assert {f.kind for f in faults} == set(KINDS)
            # Drawn from bags of every kind: each run of len(KINDS) from a bag's start holds
            # each kind once, so even a short soak mixes them.
            for start in range(0, len(faults) - len(KINDS) + 1, len(KINDS)):
                assert len({f.kind for f in faults[start : start + len(KINDS)]}) == len(KINDS)
            counts = [sum(f.kind == k for f in faults) for k in KINDS]
            assert max(counts) - min(counts) <= 1


def test_no_two_faults_overlap_on_one_transport() -> None:
    for seed in range(20):
        for transport in RESUMING:
            faults = schedule(seed, transport, HALF_HOUR_S, NEMESIS)
            assert faults[0].start_s >= NEMESIS.lead_s
            assert faults[-1].end_s <= HALF_HOUR_S - NEMESIS.tail_s
            for f in faults:
                assert f.transport == transport
                span = NEMESIS.hold_s[f.kind]
                assert span.low - 1e-3 <= f.hold_s <= span.high + 1e-3
            for before, after in itertools.pairwise(faults):
                # Healed, then a quiet gap, then the next.
                assert after.start_s - before.end_s >= NEMESIS.gap_s.low - 1e-3


def test_at_least_100_faults_per_transport_in_30_minutes() -> None:
    bound = fewest_faults(HALF_HOUR_S, NEMESIS)
    assert bound >= 100
    for seed in range(20):
        for transport in RESUMING:
            assert len(schedule(seed, transport, HALF_HOUR_S, NEMESIS)) >= bound


def test_fewest_faults_is_met_by_the_longest_holds_and_gaps() -> None:
    worst = NemesisKnobs(
        hold_s={k: Span(NEMESIS.longest_hold_s, NEMESIS.longest_hold_s) for k in KINDS},
        gap_s=Span(NEMESIS.gap_s.high, NEMESIS.gap_s.high),
        lead_s=NEMESIS.lead_s,
        tail_s=NEMESIS.tail_s,
        loss_per_mille=NEMESIS.loss_per_mille,
        slow_bytes_per_s=NEMESIS.slow_bytes_per_s,
    )
    for duration_s in (60.0, 600.0, HALF_HOUR_S):
        assert len(schedule(1, "tcp", duration_s, worst)) == fewest_faults(duration_s, worst)
    assert fewest_faults(5.0, worst) == 0


def test_levels_stay_in_their_ranges() -> None:
    faults = [f for t in RESUMING for f in schedule(3, t, HALF_HOUR_S, NEMESIS)]
    loss = [f.level for f in faults if f.kind == "loss-burst"]
    slow = [f.level for f in faults if f.kind == "slow-reader"]
    assert loss and all(NEMESIS.loss_per_mille[0] <= v <= NEMESIS.loss_per_mille[1] for v in loss)
    assert slow and all(
        NEMESIS.slow_bytes_per_s[0] <= v <= NEMESIS.slow_bytes_per_s[1] for v in slow
    )
    assert all(f.level == 0 for f in faults if f.kind not in ("loss-burst", "slow-reader"))


def test_knobs_reject_a_schedule_without_gaps_or_kinds() -> None:
    with pytest.raises(ValueError, match="quiet time"):
        NemesisKnobs(
            hold_s=NEMESIS.hold_s, gap_s=Span(0.0, 1.0), lead_s=1.0, tail_s=1.0,
            loss_per_mille=(1, 2), slow_bytes_per_s=(1, 2),
        )  # fmt: skip
    with pytest.raises(ValueError, match="no hold for"):
        NemesisKnobs(
            hold_s={"restart": Span(0.1, 0.2)}, gap_s=Span(1.0, 2.0), lead_s=1.0, tail_s=1.0,
            loss_per_mille=(1, 2), slow_bytes_per_s=(1, 2),
        )  # fmt: skip
    with pytest.raises(ValueError):
        Span(2.0, 1.0)


# -- figures (pure) ----------------------------------------------------------------------

S = 1_000_000_000


def _client(samples: list[tuple[int, str, int, int]], events: list[ClientEvent]) -> ClientOutcome:
    return ClientOutcome(
        index=0,
        role="normal",
        received=len(samples),
        received_in_window=len(samples),
        counts=DeliveryCounts(delivered=len(samples)),
        posterior_error=PosteriorError(0.0, 0.0, 0.0),
        epochs=["a"],
        events=events,
        samples=samples,
    )


def _stream() -> tuple[ClientOutcome, list[FaultWindow]]:
    """10 samples/s (sent at 0.05 s, 0.15 s, ...) for 60 s, each received 10 ms later except
    around two outages: the samples of 20-24 s arrive at 24 s (seq 235 replayed once), those
    of 40-42 s at 42 s."""
    samples: list[tuple[int, str, int, int]] = []
    for seq in range(600):
        sent = seq * S // 10 + S // 20
        if 20 * S <= sent < 24 * S:
            recv = 24 * S + seq
        elif 40 * S <= sent < 42 * S:
            recv = 42 * S + seq
        else:
            recv = sent + S // 100
        samples.append((recv, "a", seq, sent))
    samples.append((24 * S + 1000, "a", 235, 235 * S // 10 + S // 20))  # a replay
    samples.sort()
    events: list[ClientEvent] = [
        Connected(at_ns=0, connection=1),
        Disconnected(at_ns=21 * S, connection=1, reason="timeout"),
        Connected(at_ns=23 * S + S // 2, connection=2),
        Disconnected(at_ns=41 * S, connection=2, reason="reset"),
        Connected(at_ns=41 * S + S // 2, connection=3),
    ]
    windows = [FaultWindow(20 * S, 23 * S, detect_until_ns=23 * S), FaultWindow(40 * S, 41 * S)]
    return _client(samples, events), windows


def test_fault_observations_match_observe_and_trace_on_every_sample() -> None:
    client, windows = _stream()
    observations, traces = fault_observations(client, windows, 10.0)
    assert [o.detect_s for o in observations] == [1.0, 1.0]
    # The first sample after the fault's end and after the new connection.
    assert observations[0].reconnect_s == pytest.approx(1.0 + 200 / S)
    firsts = sorted({(s[1], s[2]): s for s in reversed(client.samples)}.values())
    whole = msgspec.structs.replace(client, samples=firsts)
    for window, o, t in zip(windows, observations, traces, strict=True):
        assert o == observe(0, whole, window)
        assert t == trace(0, whole, window, 10.0)
    assert max(traces[0].backlog) >= 30  # 3 s of 10/s held back, then worked off
    assert traces[0].backlog[-1] == 0  # caught up


def test_a_fault_ridden_out_recovers_at_its_end_not_at_a_later_reconnect() -> None:
    client, windows = _stream()
    # 10-12 s: nothing happens to the connection (a short outage TCP bridged).
    windows = [FaultWindow(10 * S, 12 * S, detect_until_ns=12 * S), *windows]
    observations, _ = fault_observations(client, windows, 10.0)
    assert observations[0].detect_s is None
    # The first sample after the fault's end, on the connection it rode out: not the
    # reconnect at 23.5 s, which belongs to the next fault.
    assert observations[0].reconnect_s == pytest.approx(0.06)
    assert rode_out(client, windows) == [True, False, False]


def test_backlog_series_counts_first_receipts_over_the_whole_soak() -> None:
    client, _ = _stream()
    series = backlog_series(client.samples, 0, 60 * S, 1.0)
    assert len(series) == 61
    assert series[10] == 0 and series[30] == 0  # flowing: nothing outstanding
    assert series[23] == 30  # sent from 20 s to 23 s, held back
    assert series[41] == 10
    assert max(series) == 40  # at 24 s: everything of 20-24 s sent, none received yet


def _results() -> Results:
    env = Environment(
        cpu_model="", cores=2, machine="", os="", python="", python_implementation="",
        packages={}, git_commit=None, git_dirty=None, argv=[],
    )  # fmt: skip
    return Results(schema=2, created="", profile="soak", environment=env, settings=Settings())


def test_sections_draw_a_timeline_per_transport_and_a_table_by_kind(tmp_path: Path) -> None:
    client, windows = _stream()
    observations, traces = fault_observations(client, windows, 10.0)
    faults = [
        SoakFault(transport="tcp", kind="kernel-blackhole", start_s=20.0, end_s=23.0,
                  began_s=20.0, ended_s=23.0, recovered=True),
        SoakFault(transport="tcp", kind="proxy-reset", start_s=40.0, end_s=40.0,
                  began_s=40.0, ended_s=40.0, recovered=False),
    ]  # fmt: skip
    detail = SoakDetail(
        seed=1, duration_s=60.0, faults=faults, bin_s=1.0,
        backlog=backlog_series(client.samples, 0, 60 * S, 1.0),
    )  # fmt: skip
    record = Record(
        transport="tcp", scenario="soak", repeat=0, metrics={"faults": 2},
        observations=observations, traces=traces,
        detail=msgspec.Raw(msgspec.json.encode(detail)),
    )  # fmt: skip
    results = _results()
    results.records = [record]
    # Through results.json and back, as the report reads it.
    again = msgspec.json.decode(msgspec.json.encode(results), type=Results)
    sections = SOAK.sections(again, tmp_path)
    assert (tmp_path / "soak_tcp.png").stat().st_size > 1000
    assert any("soak_tcp.png" in s for s in sections)
    table = next(s for s in sections if "Faults by kind" in s)
    assert "| kernel-blackhole | 1: " in table
    assert "| proxy-reset | 1: " in table and "✗1" in table


# -- the command line --------------------------------------------------------------------


def test_the_soak_is_opt_in() -> None:
    assert "soak" in OPT_IN and "soak" in SCENARIOS
    assert PROFILES["soak"].scenarios == ("soak",)
    for profile in PROFILE_NAMES:
        names = cli._scenario_names(cli._parser().parse_args(["--profile", profile]))
        assert "soak" not in names and names
    assert cli._scenario_names(cli._parser().parse_args(["--profile", "soak"])) == ["soak"]
    # ... over the transports that resume (the soak judges resumption), unless asked.
    assert cli._transport_names(PROFILES["soak"]) == RESUMING
    assert cli._transport_names(PROFILES["default"]) == list(TRANSPORTS)
    # The soak profile borrows full's knobs; --duration sets the length.
    assert PROFILES["soak"].knob_set == "full"
    assert SOAK.knobs["full"].minutes == 30.0
    soak = cli._profile(cli._parser().parse_args(["--profile", "soak", "--duration", "3"]))
    assert soak.duration_min == 3.0 and soak.name == "soak"


@pytest.mark.parametrize(
    "argv",
    [
        ["--profile", "soak", "--scenarios", "latency"],
        ["--profile", "soak", "--duration", "0"],
        ["--profile", "soak", "--duration", "nan"],
        ["--profile", "soak", "--duration", "x"],
        ["--duration", "3"],
    ],
)
def test_soak_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err


# -- a real soak -------------------------------------------------------------------------


@pytest.mark.network
@NEEDS_KERNEL
@pytest.mark.timeout(150)
def test_a_short_soak_over_two_transports_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "experiments", "--profile", "soak", "--duration", "0.5",
         "--transports", "tcp,sse", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=140,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    results = load_results(out)
    assert results.profile == "soak"
    records = {r.transport: r for r in results.records}
    assert set(records) == {"tcp", "sse"}
    for transport, r in records.items():
        assert r.scenario == "soak" and r.error is None, r.error
        m = r.metrics
        assert m["lost"] == 0 and m["duplicated"] == 0, m
        assert m["posterior_off"] == 0 and m["posterior_mean_error"] == 0, m
        assert m["delivery_ok"] is True, m["delivery_problems"]
        detail = msgspec.json.decode(r.detail, type=SoakDetail)
        planned = schedule(detail.seed, transport, detail.duration_s, NEMESIS)
        assert [(f.kind, f.start_s, f.end_s) for f in detail.faults] == [
            (p.kind, p.start_s, p.end_s) for p in planned
        ]
        assert m["faults"] == len(detail.faults) == len(r.observations) >= 1
        assert all(f.recovered for f in detail.faults), detail.faults
        assert (out / f"soak_{transport}.png").is_file()
    assert "## soak" in (out / "report.md").read_text()
    assert elapsed < 90, f"a 30 s soak took {elapsed:.0f} s"


def test_planned_fault_round_trips_through_json() -> None:
    fault = PlannedFault(transport="tcp", kind="loss-burst", start_s=1.0, end_s=3.5, level=120)
    assert msgspec.json.decode(msgspec.json.encode(fault), type=PlannedFault) == fault
    assert fault.hold_s == 2.5
