"""The ``interop`` scenario: other people's clients against a real server, and its matrix.

The quick run of one family (SSE: ``httpx-sse``, ``sseclient-py`` and Chromium's
``EventSource`` against the sse server, through kill -9 and restart and a black hole) writes a
record whose cells all pass with 0 lost and 0 duplicated, and the report draws the matrix.
Blame (who is at fault for a failing cell) is checked on its own (pure).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from experiments.interop.matrix import Cell, blame, matrix_tables
from experiments.results import load_results

#: Heavy on CPU or timing-sensitive: under ``pytest -n 2`` these run one after another on one
#: worker (``--dist loadgroup``), never two at once.
pytestmark = pytest.mark.xdist_group("cpu-heavy")

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.browser
@pytest.mark.timeout(110)
def test_the_quick_sse_interop_run_passes_every_cell(tmp_path: Path) -> None:
    from experiments.worker.browser import chromium_path

    if chromium_path() is None:
        pytest.fail("Chromium not found: apt-get install chromium, or set CHROMIUM", False)
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "experiments", "--profile", "quick", "--transports", "sse",
         "--scenarios", "interop", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = load_results(out).records
    assert record.error is None and record.params["family"] == "sse"
    cells = msgspec.json.decode(record.detail, type=list[Cell])
    assert [c.client for c in cells] == ["httpx-sse", "sseclient-py", "Chromium (the page)"]
    for cell in cells:
        assert cell.ok, cell
        assert cell.valid and cell.resumed and cell.noticed and cell.recovered
        assert (cell.lost, cell.duplicated, cell.corrupted) == (0, 0, 0)
        assert cell.detect_s is not None and cell.detect_s > 0
    assert record.metrics["cells_ok"] == record.metrics["cells"] == 3
    report = (out / "report.md").read_text()
    assert "### Interop matrix" in report and "#### sse: 3 of 3 cells pass" in report


def _cell(client: str, server: str, ok: bool) -> Cell:
    return Cell(
        family="websocket", client=client, server=server, received=10, lost=0 if ok else 3,
        duplicated=0, reordered=0, corrupted=0, valid=True, resumed=ok, noticed=True,
        detect_s=1.0, recovered=True, problems=[] if ok else ["lost 3"],
    )  # fmt: skip


def test_failures_are_blamed_on_client_server_or_pair() -> None:
    cells = [
        _cell("a", "s1", True), _cell("a", "s2", True), _cell("a", "s3", False),
        _cell("b", "s1", False), _cell("b", "s2", False), _cell("b", "s3", False),
        _cell("c", "s1", True), _cell("c", "s2", False), _cell("c", "s3", False),
    ]  # fmt: skip
    faults = blame(cells)
    assert faults[("b", "s1")] == "client"  # b fails everywhere; a passes on s1
    assert faults[("a", "s3")] == "server"  # every client fails on s3
    assert faults[("c", "s2")] == "pair"
    (table,) = matrix_tables(cells)
    assert "#### websocket: 3 of 9 cells pass" in table
    assert "✗ lost 3 (at fault: client)" in table
