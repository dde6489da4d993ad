"""Kernel-level faults on real namespaces: black hole, link down, and a run of all three.

Marked ``network``: they build namespaces, veths and nftables tables in this machine's kernel
(root, ``ip``, ``nft``, ``/dev/net/tun``), and are skipped with the reason elsewhere. The
scenarios run as the harness runs them (servers through the CLI, one worker process per
client namespace), every transport at once, with short timers so a black hole is noticed
within seconds: heartbeat 1 s, dead-after 3 s, target 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from experiments.faults.kernel import Conn, parse_diag
from experiments.network import missing_requirements
from experiments.results import Record, load_results
from experiments.run.context import RunContext
from experiments.run.profiles import PROFILES
from experiments.scenarios.blackhole_kernel import (
    BLACKHOLE_KERNEL,
    BlackholeKernel,
    BlackholeKernelKnobs,
)
from experiments.scenarios.link_down import LINK_DOWN
from transports.registry import get
from transports.settings import Settings
from transports.sockets import tune_accepted

REPO = Path(__file__).resolve().parents[1]
NEEDS_KERNEL = pytest.mark.skipif(
    bool(missing_requirements()),
    reason="kernel faults need " + "; ".join(missing_requirements()),
)

SETTINGS = Settings(
    heartbeat_s=1.0, dead_after_s=3.0, backoff_base_s=0.1, backoff_cap_s=1.0, header_timeout_s=2.0
)

#: Heavy on CPU or timing-sensitive: under ``pytest -n 2`` these run one after another on one
#: worker (``--dist loadgroup``), never two at once.
pytestmark = pytest.mark.xdist_group("cpu-heavy")
TARGET_S = 1.0 + 3.0 + 1.0
#: Every transport except the seed design, whose fixed timers (30 s) are reported as they are.
TRANSPORTS = ("tornado-ws", "sse", "poll", "long-poll", "tcp")
LINK_DOWN_TRANSPORTS = ("tcp", "tornado-ws")

#: One client per transport, a hold long enough to see the target met or missed.
HOLE = BlackholeKernel()
HOLE.knobs = {
    "quick": BlackholeKernelKnobs(
        BLACKHOLE_KERNEL.knobs["quick"].pace,
        rounds=1,
        connections=1,
        grace_s=1.0,
        max_hold_s=8.0,
    )
}


def _context(transport: str, scenario: str, out_dir: Path) -> RunContext:
    return RunContext(
        transport=get(transport),
        scenario=scenario,
        profile=PROFILES["quick"],
        settings=SETTINGS,
        repeat=0,
        seed=1,
        out_dir=out_dir,
    )


async def _run_all(out_dir: Path) -> dict[tuple[str, str], Record]:
    holes = [HOLE.run(_context(t, HOLE.name, out_dir)) for t in TRANSPORTS]
    links = [LINK_DOWN.run(_context(t, LINK_DOWN.name, out_dir)) for t in LINK_DOWN_TRANSPORTS]
    done = await asyncio.gather(*holes, *links)
    return {(r.scenario, r.transport): r for records in done for r in records}


@pytest.fixture(scope="module")
def kernel_faults(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Record]:
    """One kernel black hole per transport and one 3 s link outage for two, all at once
    (the harness runs fault scenarios that way too)."""
    if missing_requirements():
        pytest.skip("kernel faults need " + "; ".join(missing_requirements()))
    return asyncio.run(_run_all(tmp_path_factory.mktemp("kernel")))


def tcp_user_timeout_in_force() -> bool:
    """Whether servers set TCP_USER_TIMEOUT on accepted sockets: read back with getsockopt
    from a socket accepted here and tuned by the servers' own ``tune_accepted``."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        stack.enter_context(socket.create_connection(listener.getsockname()))
        accepted = stack.enter_context(listener.accept()[0])
        tune_accepted(accepted, SETTINGS)
        return accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) > 0


# -- pure: the sock_diag parser ----------------------------------------------------------


def _diag_message(state: int, sport: int, dport: int, acked: int) -> bytes:
    body = struct.pack("=BBBB2H16s16s", socket.AF_INET, state, 0, 0, socket.htons(sport),
                       socket.htons(dport), socket.inet_aton("198.18.0.2") + bytes(12),
                       socket.inet_aton("198.19.0.2") + bytes(12))  # fmt: skip
    body += bytes(72 - len(body))
    info = bytearray(232)
    struct.pack_into("=I", info, 24, 3)
    struct.pack_into("=QQ", info, 120, acked, 7)
    attr = struct.pack("=HH", 4 + len(info), 2) + bytes(info)
    payload = body + attr
    return struct.pack("=IHHII", 16 + len(payload), 20, 2, 1, 0) + payload


def test_parse_diag_reads_established_connections_and_the_end() -> None:
    done = struct.pack("=IHHII", 20, 3, 2, 1, 0) + bytes(4)
    data = _diag_message(1, 8080, 40000, 1234) + _diag_message(8, 8080, 40001, 9) + done
    conns, finished = parse_diag(data)
    assert finished
    # Only ESTABLISHED (1); CLOSE_WAIT (8) is a connection its peer already gave up.
    assert conns == [Conn(("198.18.0.2", 8080), ("198.19.0.2", 40000), 1234, 7, 3)]


# -- real namespaces ---------------------------------------------------------------------


@pytest.mark.network
@NEEDS_KERNEL
@pytest.mark.timeout(150)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_kernel_black_hole_is_noticed_and_resumed_without_loss(
    kernel_faults: dict[tuple[str, str], Record], transport: str
) -> None:
    record = kernel_faults[(HOLE.name, transport)]
    assert record.error is None
    assert record.params["network"] == "lan"
    m = record.metrics
    assert m["faults"] == 1 and m["recovered"] == 1
    assert (m["lost"], m["duplicated"], m["reordered"]) == (0, 0, 0), m["delivery_problems"]
    assert m["delivery_ok"], m["delivery_problems"]
    reconnect = m["reconnect_s_max"]
    assert isinstance(reconnect, float) and reconnect < 5.0
    detect = m["detect_s_max"]
    assert isinstance(detect, float) and detect <= TARGET_S, m


@pytest.mark.network
@NEEDS_KERNEL
@pytest.mark.timeout(150)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_drops_a_kernel_black_holed_client(
    kernel_faults: dict[tuple[str, str], Record], transport: str
) -> None:
    """tcp's server reads its client's heartbeats; an SSE or long-poll server only writes,
    so it needs the kernel (TCP_USER_TIMEOUT = dead-after) to tell it the peer is gone."""
    assert tcp_user_timeout_in_force()
    m = kernel_faults[(HOLE.name, transport)].metrics
    drop = m["server_drop_s_max"]
    assert isinstance(drop, float) and drop <= TARGET_S, m


@pytest.mark.network
@NEEDS_KERNEL
@pytest.mark.timeout(150)
@pytest.mark.parametrize("transport", LINK_DOWN_TRANSPORTS)
def test_link_down_and_up_resumes_without_loss(
    kernel_faults: dict[tuple[str, str], Record], transport: str
) -> None:
    record = kernel_faults[(LINK_DOWN.name, transport)]
    assert record.error is None
    assert record.params["network"] == "lan" and record.params["down_s"] == 3.0
    m = record.metrics
    assert m["faults"] == 1 and m["recovered"] == 1
    assert (m["lost"], m["duplicated"], m["reordered"]) == (0, 0, 0), m["delivery_problems"]
    assert m["delivery_ok"], m["delivery_problems"]


@pytest.fixture
def quick_run(tmp_path: Path) -> Iterator[subprocess.CompletedProcess[str]]:
    yield subprocess.run(
        [
            sys.executable, "-m", "experiments", "--profile", "quick", "--transports", "tcp",
            "--scenarios", "blackhole-kernel,reset-kernel,link-down", "--out", str(tmp_path),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip


@pytest.mark.network
@NEEDS_KERNEL
@pytest.mark.timeout(120)
def test_quick_run_of_the_kernel_faults(
    quick_run: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    assert quick_run.returncode == 0, quick_run.stderr[-2000:]
    results = load_results(tmp_path / "results.json")
    by_scenario = {r.scenario: r for r in results.records}
    assert set(by_scenario) == {"blackhole-kernel", "reset-kernel", "link-down"}
    for record in results.records:
        assert record.error is None, record.error
        assert record.params["network"] == "lan"
        m = record.metrics
        assert (record.metric("faults") or 0) >= 1 and m["delivery_ok"] is True, m
        assert (m["lost"], m["duplicated"]) == (0, 0)
        for key in ("detect_s_median", "server_drop_s_median", "reconnect_s_median"):
            assert key in m
        assert record.observations and record.traces
    assert isinstance(by_scenario["blackhole-kernel"].metrics["server_drop_s_max"], float)
    assert isinstance(by_scenario["reset-kernel"].metrics["server_drop_s_max"], float)
    assert "survived" in by_scenario["link-down"].metrics
    report = (tmp_path / "report.md").read_text()
    assert "Proxy and kernel black holes differ" in report
