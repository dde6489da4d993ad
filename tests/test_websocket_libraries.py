"""The report's "WebSocket libraries side by side" section (pure, from records)."""

from __future__ import annotations

from experiments.report.markdown import _is_websocket
from experiments.report.websocket_libraries import websocket_libraries_section
from experiments.results import Environment, Record, Results, Scalar
from transports.settings import Settings


def _results(records: list[Record]) -> Results:
    env = Environment(
        cpu_model="", cores=2, machine="", os="", python="", python_implementation="",
        packages={}, git_commit=None, git_dirty=None, argv=[],
    )  # fmt: skip
    return Results(
        schema=2, created="", profile="quick", environment=env, settings=Settings(),
        records=records,
    )  # fmt: skip


def _record(transport: str, scenario: str, params: dict[str, Scalar], **metrics: Scalar) -> Record:
    return Record(transport=transport, scenario=scenario, repeat=0, params=params, metrics=metrics)


def test_the_registry_says_which_transports_are_websocket_ones() -> None:
    assert [
        n for n in ("tornado-ws", "websockets", "aiohttp-ws", "sse", "tcp") if _is_websocket(n)
    ] == [
        "tornado-ws",
        "websockets",
        "aiohttp-ws",
    ]


def test_one_line_per_websocket_library_with_each_scenarios_headline() -> None:
    records = []
    for name, rate in (("websockets", 40_000.0), ("aiohttp-ws", 30_000.0), ("sse", 99.0)):
        records += [
            _record(name, "throughput", {}, samples_per_s=rate, server_cpu_s_per_1k=0.02),
            _record(name, "fanout", {"clients": 10}, delivered_fraction=1.0),
            _record(name, "fanout", {"clients": 1000}, delivered_fraction=1.0),
            _record(name, "complexity", {}, sloc=300, cyclomatic_total=70),
            _record(name, "restart", {}, reconnect_s_median=0.4, lost=0),
            _record(name, "reset", {}, reconnect_s_median=0.1, lost=2),
        ]
    text = websocket_libraries_section(_results(records), _is_websocket)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines] == ["| library", "| websockets", "| aiohttp-ws"]
    websockets = lines[1].split(" | ")
    assert websockets[1] == "40,000" and websockets[3] == "20" and websockets[-1] == "2 |"
    assert "sse" not in text
    one_library = [r for r in records if r.transport in ("websockets", "sse")]
    assert websocket_libraries_section(_results(one_library), _is_websocket) == ""
