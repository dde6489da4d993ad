"""The report from hand-made results: histograms, pooling, tables, conditions, plots, summary.

Pure: no servers, no registry (small fake scenarios stand in for it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from rich.console import Console

from experiments.histogram import (
    SUPPORT,
    encode_latencies,
    merge,
    merge_encoded,
    new_histogram,
    summarize,
    supported,
)
from experiments.report.conditions import conditions_section
from experiments.report.faults import reconnection_section, traces_by_transport
from experiments.report.markdown import main, render, write_report
from experiments.report.networks import cross_network_section
from experiments.report.plots import latency_cdf_plot, timeline_plot
from experiments.report.rows import figure, rows
from experiments.report.summary import scenario_line, summary_table
from experiments.report.tables import header_for, scenario_table
from experiments.results import (
    Environment,
    FaultTrace,
    NetworkConditions,
    Observation,
    Record,
    Results,
    Scalar,
)
from experiments.scenarios.scenario import LATENCY_COLUMNS, Column, Kind, latency_column
from transports.settings import Settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class FakeScenario:
    """A scenario made for the tests (what it measures: whatever the test says)."""

    name: str
    columns: tuple[Column, ...]
    headline: tuple[Column, ...] = ()
    kind: Kind = "steady"
    concurrent: bool = False
    max_repeats: int | None = None
    knobs: Mapping[str, object] = field(default_factory=dict)

    def variant(self, params: Mapping[str, Scalar]) -> str:
        rate = params.get("rate_hz")
        return f"{rate:g}/s" if isinstance(rate, int | float) else ""

    async def run(self, ctx: object) -> list[Record]:
        return []

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        return []


def env(**changes: object) -> Environment:
    base = Environment(
        cpu_model="Test CPU",
        cores=2,
        machine="x86_64",
        os="Linux",
        python="3.11.9",
        python_implementation="CPython",
        packages={"tornado": "6.5"},
        git_commit="0123456789abcdef",
        git_dirty=False,
        argv=["python", "-m", "experiments"],
        profile="quick",
        repeats=2,
    )
    return msgspec.structs.replace(base, **changes)


def results_of(records: list[Record], **env_changes: object) -> Results:
    return Results(
        schema=2,
        created="2025-01-02T03:04:05+00:00",
        profile="quick",
        environment=env(**env_changes),
        settings=Settings(),
        records=records,
    )


def constant_ns(ms: float, n: int) -> npt.NDArray[np.int64]:
    return np.full(n, int(ms * 1e6), dtype=np.int64)


def record(
    transport: str,
    repeat: int = 0,
    *,
    latencies_ns: npt.NDArray[np.int64] | None = None,
    scenario: str = "latency",
    params: dict[str, Scalar] | None = None,
    metrics: dict[str, Scalar] | None = None,
    error: str | None = None,
) -> Record:
    latency = {} if latencies_ns is None else {"normal": encode_latencies(latencies_ns)}
    return Record(
        transport=transport,
        scenario=scenario,
        repeat=repeat,
        params={"rate_hz": 100} if params is None else params,
        metrics={"delivery_ok": True} if metrics is None else metrics,
        latency=latency,
        error=error,
    )


LATENCY = FakeScenario(
    "latency", LATENCY_COLUMNS, headline=(latency_column("p99", header="p99 ms"),)
)


# --- histograms ---------------------------------------------------------------------------


def test_hdr_summary_matches_numpy_within_hdr_precision() -> None:
    rng = np.random.default_rng(7)
    ns = rng.lognormal(np.log(2e6), 0.9, 50_000).astype(np.int64)
    h = merge([encode_latencies(ns)])
    assert h is not None
    s = summarize(h)
    ms = ns / 1e6
    assert s.count == ns.size
    # HDR keeps 3 significant digits (a bucket is < 0.1 % wide), values are rounded to µs;
    # "inverted_cdf" is the rank convention HDR uses.
    for pct, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        expected = float(np.percentile(ms, q, method="inverted_cdf"))
        assert s.value(pct) == pytest.approx(expected, rel=2e-3, abs=1e-3), pct
    assert s.max_ms == pytest.approx(float(ms.max()), rel=2e-3)
    assert s.mean_ms == pytest.approx(float(ms.mean()), rel=2e-3)


def test_vectorised_bucketing_equals_recording_every_sample() -> None:
    rng = np.random.default_rng(3)
    ns = rng.integers(0, 5_000_000_000, 5_000)  # 0 to 5 s: many bucket sizes
    one_by_one = new_histogram()
    for us in ((ns + 500) // 1000).tolist():
        one_by_one.record_value(us)
    h = merge([encode_latencies(ns)])
    assert h is not None
    assert summarize(h) == summarize(one_by_one)


def test_no_samples_encode_empty_and_merge_to_none() -> None:
    assert encode_latencies([]) == ""
    assert merge(["", ""]) is None
    assert merge_encoded([""]) == ""


def test_merge_adds_counts() -> None:
    a, b = encode_latencies(constant_ns(1.0, 300)), encode_latencies(constant_ns(2.0, 700))
    h = merge([a, b])
    assert h is not None
    assert summarize(h).count == 1_000
    pooled = merge([merge_encoded([a, b])])
    assert pooled is not None and summarize(pooled) == summarize(h)


def test_support_thresholds() -> None:
    assert SUPPORT == {"p50": 20, "p90": 100, "p99": 1_000, "p999": 10_000, "max": 1, "mean": 1}
    assert not supported("p99", 999)
    assert supported("p99", 1_000)
    assert supported("max", 1)


# --- rows and tables ------------------------------------------------------------------------


def test_pooling_two_repeats_gives_the_percentile_of_the_union() -> None:
    fast = constant_ns(1.0, 1_000)
    # 15 slow samples in 1,000: this repeat's own p99 is 50 ms, but in the union of both
    # repeats they are 0.75 % of the samples, so the pooled p99 is 1 ms.
    mixed = np.concatenate([constant_ns(1.0, 985), constant_ns(50.0, 15)])
    recs = [record("sse", 0, latencies_ns=fast), record("sse", 1, latencies_ns=mixed)]
    (row,) = rows(recs, "latency")
    fig = figure(row, "latency:normal:p99")
    assert fig is not None and fig.samples == 2_000 and fig.supported
    union = np.concatenate([fast, mixed]) / 1e6
    assert fig.value == pytest.approx(float(np.percentile(union, 99, method="inverted_cdf")))
    per_repeat = [float(np.percentile(x / 1e6, 99, method="inverted_cdf")) for x in (fast, mixed)]
    assert fig.value == pytest.approx(1.0, rel=2e-3)
    assert fig.value != pytest.approx(float(np.median(per_repeat)), rel=0.1)


def test_unsupported_percentile_is_a_dash_with_its_footnote() -> None:
    recs = [record("sse", latencies_ns=constant_ns(1.5, 43))]
    table = scenario_table(recs, "latency", LATENCY_COLUMNS)
    header, _, line = table.splitlines()[:3]
    cells = [c.strip() for c in line.strip("|").split("|")]
    heads = [h.strip() for h in header.strip("|").split("|")]
    assert cells[heads.index("p50 ms")] == "1.5"  # 43 samples support a median
    p99 = cells[heads.index("p99 ms")]
    assert p99.startswith("—") and "1.5" not in p99
    marker = p99.removeprefix("—")
    assert f"{marker} p99 needs ≥ 1,000 samples; this row has 43." in table
    assert cells[heads.index("p999 ms")].startswith("—")
    assert cells[heads.index("n samples")] == "43"


def test_headers_carry_units_not_metric_keys() -> None:
    columns = (Column("samples_per_s", "samples/s", ratio=True), latency_column("p99"))
    recs = [
        record(t, latencies_ns=constant_ns(ms, 1_000), metrics={"samples_per_s": v})
        for t, ms, v in (("tornado-ws", 1.0, 1_000.0), ("sse", 2.0, 1_500.0))
    ]
    table = scenario_table(recs, "latency", columns)
    header = table.splitlines()[0]
    assert "samples/s" in header and "p99 ms" in header and "n samples" in header
    assert "samples_per_s" not in header and "latency:" not in header
    assert "1,500 ×1.5" in table  # ratio to tornado-ws asked for by the column
    assert "2 ×2" in table  # pooled p99 ratio
    assert header_for("samples_per_s") == "samples/s"
    assert header_for("latency_ms_p99") == "latency p99 ms"
    assert header_for("rate_hz") == "rate Hz"


def test_repeats_show_median_and_range_and_only_varying_params() -> None:
    recs = [
        record("tcp", i, params={"rate_hz": rate, "clients": 1}, metrics={"lost": v})
        for i, (rate, v) in enumerate(((100, 1), (100, 3), (100, 2), (1000, 5)))
    ]
    table = scenario_table(recs, "latency", (Column("lost", "lost"),))
    lines = table.splitlines()
    assert lines[0] == "| transport | rate Hz | lost | repeats |"
    assert "| tcp | 100 | 2 [1–3] | 3 |" in lines
    assert "| tcp | 1000 | 5 | 1 |" in lines


def test_transport_specific_params_are_stated_once_and_do_not_block_ratios() -> None:
    own: dict[str, dict[str, Scalar]] = {
        "tornado-ws": {"ws_ping_timeout_s": 2.0},
        "sse": {"comment_ping_interval_s": 2.0},
    }
    recs = [
        record(t, params={"rate_hz": rate, **own[t]}, metrics={"reconnect_s": v})
        for t, base in (("tornado-ws", 1.0), ("sse", 3.0))
        for rate, v in ((100, base), (1000, 2 * base))
    ]
    table = scenario_table(recs, "latency", (Column("reconnect_s", "reconnect s", ratio=True),))
    assert table.splitlines()[0] == "| transport | rate Hz | reconnect s | repeats |"
    assert "| sse | 1000 | 6 ×3 | 1 |" in table  # matched on the rate alone
    assert "- tornado-ws: ws ping timeout 2 s" in table
    assert "- sse: comment ping interval 2 s" in table


def test_delivery_problems_are_marked_and_failed_records_listed() -> None:
    bad: dict[str, Scalar] = {"delivery_ok": False, "delivery_problems": "3 lost", "lost": 3}
    recs = [
        record("sse", 0, metrics=bad),
        record("sse", 1, metrics={"delivery_ok": True, "lost": 0}),
        record("tcp", 0, metrics={}, error="server never became ready"),
    ]
    table = scenario_table(recs, "latency", (Column("lost", "lost"),))
    assert "| sse ⚠1 |" in table
    assert "- ⚠1 sse: repeat 0: 3 lost" in table
    assert "tcp, repeat 0: server never became ready" in table
    assert "| tcp |" not in table  # nothing measured: no row of figures


# --- conditions ---------------------------------------------------------------------------


def test_settings_appear_once_in_one_conditions_table() -> None:
    seed = Settings(heartbeat_s=10.0, backoff_jitter=False)
    results = results_of(
        [record("tornado-ws", params={"rate_hz": 100, "heartbeat_s": 5.0})],
        transports=["tornado-ws", "tornado-ws-seed", "poll"],
        effective_settings={"tornado-ws": Settings(), "tornado-ws-seed": seed, "poll": Settings()},
        options={"poll": msgspec.Raw(b'{"interval_s": 0.1}')},
        knobs={"latency": msgspec.Raw(b'{"rates_hz": [100, 1000]}')},
    )
    text = render(results, Path("/nonexistent"), {"latency": LATENCY})
    assert text.count("`heartbeat_s`") == 1
    assert text.count("`dead_after_s`") == 1
    table = conditions_section(results)
    (heartbeat,) = [line for line in table.splitlines() if line.startswith("| `heartbeat_s`")]
    assert heartbeat == "| `heartbeat_s` | 5 | **10** | 5 |"
    (interval,) = [line for line in table.splitlines() if "`interval_s`" in line]
    assert interval == "| `interval_s` (own option) |  |  | 0.1 |"
    assert "rates_hz [100, 1000]" in table
    # Params the same on every row are conditions, not table columns.
    assert "heartbeat" not in scenario_table(results.records, "latency", LATENCY_COLUMNS)


def test_cite_names_commit_profile_and_what_the_figures_are() -> None:
    text = render(results_of([]), Path("/nonexistent"), {})
    cite = text.split("## How to cite", 1)[1]
    assert "0123456789ab" in cite and "profile quick" in cite and "2 repeats" in cite
    assert "Test CPU (2 cores)" in cite and "Python 3.11.9" in cite and "2025-01-02" in cite
    assert "pooled" in cite and "tornado-ws" in cite


# --- whole report -------------------------------------------------------------------------


SCHEMA_1 = {
    "schema": 1,
    "created": "2024-06-01T00:00:00+00:00",
    "profile": "quick",
    "environment": {
        "cpu_model": "Old CPU",
        "cores": 4,
        "machine": "x86_64",
        "os": "Linux",
        "python": "3.11.4",
        "packages": {"tornado": "6.4"},
        "git_commit": "feedface",
        "git_dirty": False,
        "argv": ["python", "-m", "experiments"],
        "repeats": 3,
    },
    "settings": {"heartbeat_s": 5.0, "dead_after_s": 15.0},
    "records": [
        {
            "transport": "sse",
            "scenario": "latency",
            "repeat": i,
            "params": {"rate_hz": 1000, "clients": 1},
            "metrics": {"latency_ms_p50": 1.0, "latency_ms_p99": p99, "delivered": 5000},
            "series": {"latency_cdf_ms": [[50, 1.0]]},
        }
        for i, p99 in enumerate((2.0, 4.0, 3.0))
    ]
    + [
        {
            "transport": "tcp",
            "scenario": "retired-scenario",
            "repeat": 0,
            "params": {},
            "metrics": {"samples_per_s": 1234.0, "delivery_ok": True},
        }
    ],
}


def test_a_schema_1_results_file_renders(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps(SCHEMA_1))
    path = write_report(tmp_path, {"latency": LATENCY})
    text = path.read_text()
    assert "## latency" in text and "## retired-scenario" in text
    # No histograms: the latency columns fall back to the per-repeat percentiles, and say so.
    assert "3 [2–4]" in text
    assert "schema 1" in text
    # The scenario this version lacks gets a table of its numeric metrics, headers readable.
    assert "| transport | samples/s | repeats |" in text
    assert "| tcp | 1,234 | 1 |" in text
    assert "Old CPU" in text


def test_main_rejects_a_bad_directory_and_a_bad_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "results.json").write_text(json.dumps({**SCHEMA_1, "schema": 99}))
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 2  # one line each, no traceback
    assert "schema 99" in err


def test_render_runs_each_scenarios_sections_after_its_table(tmp_path: Path) -> None:
    class WithSection(FakeScenario):
        def sections(self, results: Results, out_dir: Path) -> list[str]:
            return [f"extra for {self.name} in {out_dir.name}"]

    results = results_of([record("sse", latencies_ns=constant_ns(1.0, 1_000))])
    text = render(results, tmp_path, {"latency": WithSection("latency", LATENCY_COLUMNS)})
    assert text.index("| sse |") < text.index(f"extra for latency in {tmp_path.name}")
    assert text.index("extra for latency") < text.index("## Conditions")


def test_a_run_over_several_networks_gets_a_section_per_path(tmp_path: Path) -> None:
    class WithPlot(FakeScenario):
        def sections(self, results: Results, out_dir: Path) -> list[str]:
            ms = sorted({str(r.params["network"]) for r in results.records})
            (out_dir / "cdf.png").write_bytes(b"png")
            return [f"### Detail\n\nonly {','.join(ms)}\n\n![cdf](cdf.png)"]

    def on(network: str, ms: float) -> Record:
        return record("tcp", latencies_ns=constant_ns(ms, 1_000), params={"network": network})

    measured = NetworkConditions(nominal="40 ms RTT", measured="rtt 41.0 ms [40]", ok=True)
    results = results_of([on("loopback", 1.0), on("wan", 41.0)], networks={"wan": measured})
    text = render(results, tmp_path, {"latency": WithPlot("latency", LATENCY_COLUMNS)})
    loopback, wan = text.index("### latency on loopback"), text.index("### latency on wan")
    assert text.index("## latency") < loopback < text.index("only loopback") < wan
    assert wan < text.index("rtt 41.0 ms [40]") < text.index("only wan")
    # each path's plots in its own directory, linked from its own section, headings one down
    assert "![cdf](loopback/cdf.png)" in text and "![cdf](wan/cdf.png)" in text
    assert (tmp_path / "wan" / "cdf.png").is_file() and "#### Detail" in text
    assert "## Across networks" in text


# --- plots --------------------------------------------------------------------------------


def trace(client: int, end_s: float) -> FaultTrace:
    backlog = [0, 0, 5, 10, 15, 20, 8, 0, 0]
    return FaultTrace(
        client=client,
        bin_s=0.5,
        start_s=-1.0,
        backlog=backlog,
        end_s=end_s,
        detected_s=0.7,
        server_dropped_s=1.1,
        recovered_s=2.2,
    )


def test_timeline_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "timeline_restart.png"
    link = timeline_plot(
        {"sse": [trace(0, 2.0), trace(1, 2.5)], "tcp": [trace(0, 2.0)]}, path, "restart"
    )
    assert link == "![restart](timeline_restart.png)"
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert timeline_plot({"sse": []}, tmp_path / "none.png", "x") == ""
    assert not (tmp_path / "none.png").exists()


def test_latency_cdf_plot_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    recs = [
        record(t, i, latencies_ns=rng.integers(500_000, 3_000_000, 2_000))
        for t in ("tornado-ws", "sse")
        for i in range(2)
    ]
    path = tmp_path / "latency_cdf.png"
    link = latency_cdf_plot(recs, path, lambda r: r.transport)
    assert link == f"![Latency by percentile (pooled over repeats)]({path.name})"
    assert path.read_bytes().startswith(PNG_MAGIC)


# --- faults -------------------------------------------------------------------------------


def test_reconnection_section_pools_observations_over_repeats() -> None:
    def fault_record(repeat: int, detects: Sequence[float | None]) -> Record:
        return Record(
            transport="sse",
            scenario="blackhole",
            repeat=repeat,
            params={"target_s": 21.0},
            metrics={"faults": len(detects), "lost": 1, "duplicated": 0},
            observations=[
                Observation(client=i, detect_s=d, reconnect_s=0.5, server_drop_s=d)
                for i, d in enumerate(detects)
            ],
            traces=[trace(0, 2.0)],
        )

    results = results_of([fault_record(0, [1.0, 30.0]), fault_record(1, [2.0, None])])
    text = reconnection_section(results)
    row = next(line for line in text.splitlines() if line.startswith("| blackhole"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["blackhole", "sse", "4", "2.000 / 30.000"]
    assert cells[6] == "1/1/0"  # one detect and one server drop missed
    assert cells[7] == "2"  # lost, summed over the repeats
    assert cells[10:] == ["21", "2/4 · 2/4"]
    assert [len(v) for v in traces_by_transport(results, "blackhole").values()] == [2]
    assert reconnection_section(results, scenarios=("restart",)) == ""


# --- summary ------------------------------------------------------------------------------


def test_scenario_line_and_summary_table() -> None:
    bad: dict[str, Scalar] = {"delivery_ok": False, "delivery_problems": "2 duplicated"}
    recs = [
        record("tornado-ws", latencies_ns=constant_ns(1.4, 1_000)),
        record("sse", latencies_ns=constant_ns(1.5, 1_000), metrics=bad),
        record("tcp", latencies_ns=constant_ns(1.5, 43)),
    ]
    line = scenario_line(LATENCY, recs)
    assert line == (
        "latency done: tornado-ws 100/s p99 1.4 ms · sse 100/s p99 1.5 ms · tcp 100/s p99 — (1 ⚠)"
    )
    console = Console(record=True, width=160)
    console.print(summary_table(recs, [LATENCY]))
    shown = console.export_text()
    assert "p99 1.4 ms" in shown and "⚠ 1: 2 duplicated" in shown
    assert scenario_line(LATENCY, []) == "latency done: no records"


def test_cross_network_summary_sets_each_network_beside_the_others() -> None:
    def on(network: str, ms: float, repeat: int = 0) -> Record:
        return record(
            "tcp",
            repeat,
            latencies_ns=constant_ns(ms, 600),
            params={"rate_hz": 1000, "network": network},
        )

    restart = record(
        "tcp", scenario="restart", params={"network": "wan"}, metrics={"reconnect_s_median": 1.25}
    )
    measured = NetworkConditions(nominal="40 ms RTT", measured="rtt 41.0 ms [40]", ok=False)
    results = results_of(
        [on("loopback", 1.0), on("wan", 21.0), on("wan", 21.0, 1), restart],
        networks={"wan": measured},
    )
    text = cross_network_section(results)
    assert "| figure | loopback | wan |" in text
    p50 = next(line for line in text.splitlines() if line.startswith("| latency p50"))
    assert "| 1 |" in p50 and "21" in p50
    p99 = next(line for line in text.splitlines() if line.startswith("| latency p99"))
    # loopback's 600 samples cannot support a p99; wan pools 1,200 over its two repeats.
    assert p99.endswith("| — (n=600) | 21 |")
    assert "| reconnect s after a restart (median) | · | 1.25 |" in text
    conditions = conditions_section(results)
    assert "rtt 41.0 ms [40]" in conditions and "outside its tolerances" in conditions
    assert cross_network_section(results_of([on("loopback", 1.0)])) == ""
