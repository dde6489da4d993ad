"""Browser clients as a client kind: ``--client-kinds browser`` in a real headless Chromium.

A quick latency run with the browser kind writes records judged by the same ledger as the
Python worker's (0 lost, 0 duplicated) with a latency histogram against the server's clock;
the clock mapping and the page's events are checked on their own (pure); a missing Chromium is
one line and exit 2. Chromium is Debian's (``CHROMIUM`` may point elsewhere): without it the
run test fails, saying so, as tests/test_browser.py does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.report.faults import client_row
from experiments.results import load_results
from experiments.worker.kinds import kind_not_applicable, parse_client_kinds
from experiments.worker.page_outcome import (
    ClockMap,
    PageEvent,
    PageState,
    bracket_error_ns,
    page_outcome,
)
from experiments.worker.schema import Connected, ConnectFailed, Disconnected
from model.source import BernoulliSource

#: Heavy on CPU or timing-sensitive: under ``pytest -n 2`` these run one after another on one
#: worker (``--dist loadgroup``), never two at once.
pytestmark = pytest.mark.xdist_group("cpu-heavy")

ROOT = Path(__file__).resolve().parent.parent


def _experiments(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "experiments", "--profile", "quick", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=100,
        env=env,
    )


@pytest.mark.browser
@pytest.mark.timeout(110)
def test_a_quick_browser_latency_run_is_judged_by_the_ledger(tmp_path: Path) -> None:
    from experiments.worker.browser import chromium_path

    if chromium_path() is None:
        pytest.fail("Chromium not found: apt-get install chromium, or set CHROMIUM", False)
    out = tmp_path / "run"
    done = _experiments(
        "--transports", "sse,grpc", "--scenarios", "latency,throughput",
        "--client-kinds", "browser", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    records = load_results(out).records
    # The browser kind runs only its scenarios; a transport the page cannot read says so.
    assert {r.scenario for r in records} == {"latency"}
    by = {r.transport: r for r in records}
    assert "not_applicable" in by["grpc"].metrics
    lat = by["sse"]
    assert lat.error is None and lat.params["client_kind"] == "browser"
    m = lat.metrics
    assert m["lost"] == 0 and m["duplicated"] == 0 and m["delivery_ok"] is True
    samples = m["latency_samples"]
    assert isinstance(samples, int) and samples > 100
    p50 = lat.metric("latency_ms_p50")
    assert p50 is not None and 0 <= p50 < 1000
    assert client_row(lat) == "sse · EventSource (native reconnect)"


def test_a_missing_chromium_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "CHROMIUM": str(tmp_path / "no-chromium")}
    done = _experiments("--transports", "sse", "--client-kinds", "python,browser", env=env)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "chromium" in done.stderr
    bad = _experiments("--client-kinds", "python,firefox")
    assert bad.returncode == 2 and "firefox" in bad.stderr


def test_client_kinds_parse_and_apply() -> None:
    assert parse_client_kinds("python, browser,python") == ("python", "browser")
    assert kind_not_applicable("browser", "grpc") is not None
    assert kind_not_applicable("browser", "long-poll") is None
    assert kind_not_applicable("python", "grpc") is None


def test_the_browser_clock_maps_onto_the_monotonic_clock() -> None:
    clock = ClockMap.now()
    assert clock.read_gap_ns < 1_000_000
    before = time.monotonic_ns()
    browser_ms = time.time_ns() / 1e6  # what a page on this machine reads
    after = time.monotonic_ns()
    # The harness's own wall clock, mapped, lies within a few µs of the reads around it.
    assert bracket_error_ns(clock, before, browser_ms, after) < 100_000
    assert abs(clock.monotonic_ns(browser_ms) - (before + after) // 2) < 1_000_000


def test_a_page_run_becomes_the_workers_outcome() -> None:
    source = BernoulliSource(0.72, 1)
    clock = ClockMap(offset_ns=1_000_000_000_000, read_gap_ns=0)
    ms = 1_000_000.0  # browser ms whose monotonic time is 0
    records = [("ab", seq, source.value(seq), 0, ms + 1 + seq, 1) for seq in range(5)]
    records += [("cd", seq, source.value(seq), 0, ms + 20 + seq, 2) for seq in range(3)]
    events = [
        PageEvent("connecting", ms, "http://h/events"),
        PageEvent("connected", ms + 0.5, "1"),
        PageEvent("disconnected", ms + 10, "native reconnect"),
        PageEvent("connect-failed", ms + 12, "native reconnect"),
        PageEvent("connected", ms + 19, "2"),
    ]
    state = PageState(received=8, connection=2, malformed=0, events=events, records=records)
    latencies: list[int] = []
    window = (3_000_000, 30_000_000)  # 3 ms .. 30 ms
    out = page_outcome(0, "normal", state, clock, source, window,
                       keep_samples=True, latencies=latencies)  # fmt: skip
    assert out.counts.delivered == 8 and (out.counts.lost, out.counts.duplicated) == (0, 0)
    assert out.epochs == ["ab", "cd"] and out.received_in_window == 6
    assert sorted(latencies) == sorted(r[4] * 1_000_000 - ms * 1_000_000 for r in records[2:])
    kinds = [type(e) for e in out.events]
    assert kinds == [Connected, Disconnected, ConnectFailed, Connected]
    dropped = out.events[1]
    assert isinstance(dropped, Disconnected) and dropped.at_ns == 10_000_000
    assert dropped.samples == 5
    failed = out.events[2]
    assert isinstance(failed, ConnectFailed) and failed.retry_in_s == pytest.approx(0.007)
    assert out.samples[0] == (1_000_000, "ab", 0, 0)
