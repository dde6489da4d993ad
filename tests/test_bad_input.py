"""The bad-input scenario's cases on servers of their own: the limit and fd exhaustion."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from experiments.faults.hostile import is_refusal
from experiments.results import load_results
from experiments.run.processes import ServerProcess
from experiments.scenarios.bad_input import OWN_FIGURES, _answers
from transports.limits import HEADROOM
from transports.registry import TRANSPORTS
from transports.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("described", "refused"),
    [
        ("HTTP/1.1 503 Service Unavailable; closed", True),
        ("HTTP/1.0 503 Service Unavailable; left open after 1 s", True),
        (
            "HTTP/1.1 101 Switching Protocols; close 1013 'server full: connection limit 64 "
            "reached'; closed",
            True,
        ),
        ('{"error":"server full: connection limit 64 reached"}; closed', True),
        ("HTTP/1.1 101 Switching Protocols; no close frame; left open after 1 s", False),
        ("HTTP/1.1 200 OK; left open after 1 s", False),
        ("HTTP/1.1 400 Bad Request; closed", False),
        ('{"epoch":"ab","seq":1}; left open after 1 s', False),
        ("left open after 1 s", False),
        ("reset", False),
    ],
)
def test_a_clear_refusal_is_503_close_1013_or_the_error_line(described: str, refused: bool) -> None:
    assert is_refusal(described) is refused


async def test_a_server_started_with_a_low_nofile_keeps_it_and_says_so_on_stderr() -> None:
    server = ServerProcess("tcp", rate_hz=10, settings=Settings(), nofile=128)
    await server.start()
    try:
        # Soft and hard: serve cannot raise it, so it lowers max_connections instead.
        assert psutil.Process(server.pid).rlimit(psutil.RLIMIT_NOFILE) == (128, 128)
        for _ in range(100):
            if server.stderr_bytes():
                break
            await asyncio.sleep(0.01)
        size = server.stderr_bytes()
        log = server.stderr_since(0)
        assert len(log) == size > 0
        assert f"max_connections lowered from 10000 to {128 - HEADROOM}" in log.decode()
        assert server.stderr_since(size) == b""
        assert server.stderr_bytes() == size  # reading moved nothing
    finally:
        await server.stop()  # not a background teardown: the test's loop ends here


#: Raw asyncio and grpcio's HTTP/2 (the one whose refusal past the limit is slowest): the
#: pipeline from cases to figures and report is the same for every transport, and each
#: transport's own refusals are checked in its own tests (test_hardening_servers, test_tcp,
#: test_grpc, test_webtransport, ...). All eleven at once took two minutes of the suite.
TRANSPORTS_RUN = ("tcp", "grpc")


@pytest.mark.timeout(300)
@pytest.mark.xdist_group("cpu-heavy")
def test_quick_bad_input_shows_the_limit_and_fd_exhaustion_per_transport(tmp_path: Path) -> None:
    assert set(TRANSPORTS_RUN) <= set(TRANSPORTS)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "experiments", "--profile", "quick", "--scenarios", "bad-input"]
    done = subprocess.run(
        [*argv, "--transports", ",".join(TRANSPORTS_RUN), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = load_results(out)
    assert {r.transport for r in results.records} == set(TRANSPORTS_RUN)
    for record in results.records:
        assert record.error is None, (record.transport, record.error)
        by_case = {a.case.split(" (")[0]: a for a in _answers(record)}
        for case in ("idle sockets at the limit", "fd exhaustion"):
            got = by_case[case]
            assert got.server_survived and got.others_unaffected, (record.transport, got)
        m = record.metrics
        assert m["delivery_ok"] is True, (record.transport, m["delivery_problems"])
        assert m["cases"] == m["server_survived"] == m["others_unaffected"]
        assert set(OWN_FIGURES) <= set(m)
        # Past the limit of streams every transport refuses the newcomer in words.
        assert m["limit_newcomer_refused"] is True, (record.transport, by_case)
        # Out of descriptors: resting, not spinning or flooding the log, and served again.
        cpu = m["fd_exhaustion_server_cpu_percent"]
        assert isinstance(cpu, float) and cpu < 50, (record.transport, cpu)
        assert isinstance(m["fd_exhaustion_log_lines"], int) and m["fd_exhaustion_log_lines"] < 20
        assert m["fd_exhaustion_served_again_s"] is not None
    report = (out / "report.md").read_text()
    assert "| idle sockets at the limit" in report and "| fd exhaustion" in report
