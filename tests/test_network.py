"""Emulated network paths: profiles, layout and judging (pure), then real namespaces.

The tests marked ``network`` build real namespaces, veths, a TUN delay line and nftables
tables in this machine's kernel (root, ``ip``, ``nft`` and ``/dev/net/tun``); select them with
``-m network`` or leave them out with ``-m "not network"``. Without those they are skipped
with the reason; on a machine like CI's they run. Every address they use is inside the
namespaces they create (198.18.0.0/15).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from experiments.network import (
    PROFILES,
    LeftoverError,
    NetworkPath,
    NetworkUnavailable,
    PathError,
    UnknownProfile,
    get_profile,
    measure,
    namespaces,
    nftables,
    parse_profiles,
    require_network,
    stale,
)
from experiments.network.delay_line import DelayQueue
from experiments.network.layout import MAC_BRIDGE, MAC_CLIENT, layout, mac, run_id_of_namespace
from experiments.network.measurement import DEFAULT_LOSS_PROBES
from experiments.network.profiles import Profile
from experiments.network.properties import Measured, PathProperties, judge
from experiments.network.shaping import peak_packet_rate, tbf_parameters
from tests.support import NEEDS_NETWORK_PATHS

#: Heavy on CPU or timing-sensitive: under ``pytest -n 2`` these run one after another on one
#: worker (``--dist loadgroup``), never two at once.
pytestmark = pytest.mark.xdist_group("cpu-heavy")


# -- pure: profiles, layout, delay queue, rules, judging ----------------------------------


def test_profiles_are_the_issues() -> None:
    assert list(PROFILES) == ["loopback", "lan", "wan", "mobile", "lossy"]
    wan, mobile, lossy = PROFILES["wan"], PROFILES["mobile"], PROFILES["lossy"]
    assert (wan.rtt_ms, wan.rate_mbit, wan.loss) == (40.0, 50.0, 0.0)
    assert (mobile.rtt_ms, mobile.rate_mbit, mobile.loss) == (120.0, 5.0, 0.01)
    assert (lossy.rtt_ms, lossy.rate_mbit, lossy.loss) == (40.0, None, 0.03)
    assert not PROFILES["loopback"].namespaces
    assert PROFILES["lan"].namespaces and not PROFILES["lan"].has_delay_line
    assert mobile.one_way_delay_ms == 60.0 and mobile.loss_per_mille == 10


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(UnknownProfile) as caught:
        parse_profiles("wan,moblie")
    assert "'moblie'" in str(caught.value)
    for name in PROFILES:
        assert name in str(caught.value)
    with pytest.raises(UnknownProfile):
        get_profile("")
    assert [p.name for p in parse_profiles("lossy, wan")] == ["lossy", "wan"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"namespaces": False, "rtt_ms": 10.0},
        {"rtt_ms": -1.0},
        {"rate_mbit": 0.0},
        {"loss": 0.0105},  # nftables draws per mille: 1.05 % cannot be expressed
        {"loss": 1.0},
    ],
)
def test_impossible_profiles_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Profile("bad", "bad", **kwargs)  # type: ignore[arg-type]


def test_layout_names_fit_interfaces_and_addresses_are_for_benchmarks() -> None:
    lay = layout("ab12cd34", 100)
    interfaces = [lay.server_if, lay.router_server_if, lay.bridge, lay.tun]
    interfaces += [*lay.router_client_if, *lay.client_if]
    assert max(len(name) for name in interfaces) <= 15
    assert all(name.startswith("tbab12cd34-") for name in interfaces)
    assert all(run_id_of_namespace(ns) == "ab12cd34" for ns in lay.namespaces)
    assert len(set(lay.client_addr)) == 100
    benchmark = ipaddress.ip_network("198.18.0.0/15")
    for addr in lay.client_addr:
        assert ipaddress.ip_address(addr) in benchmark
        assert not ipaddress.ip_address(addr).is_global
    macs = {mac(MAC_CLIENT, i) for i in range(300)} | {mac(MAC_BRIDGE)}
    assert len(macs) == 301
    assert all(int(m.split(":")[0], 16) & 0b11 == 0b10 for m in macs)  # local, unicast
    assert run_id_of_namespace("tbench-x-srv") == "x"
    assert run_id_of_namespace("tbenchx-srv") is None
    assert run_id_of_namespace("someone-elses") is None


@pytest.mark.parametrize("run_id", ["", "UPPER", "has-dash", "ninechars"])
def test_bad_run_ids_are_refused(run_id: str) -> None:
    with pytest.raises(ValueError):
        layout(run_id, 1)


def test_too_many_clients_for_interface_names() -> None:
    with pytest.raises(ValueError, match="15"):
        layout("ab12cd34", 1001)


def test_delay_queue_holds_each_packet_for_the_delay_in_order() -> None:
    queue = DelayQueue(delay_ns=20, limit_bytes=10)
    assert queue.push(0, b"aaa") and queue.push(5, b"bbb") and queue.push(5, b"ccc")
    assert not queue.push(6, b"dd")  # 11 bytes > limit: dropped, as by a full router queue
    assert queue.dropped == 1
    assert list(queue.pop_due(19)) == []
    assert queue.next_due_ns() == 20
    assert list(queue.pop_due(20)) == [b"aaa"]
    assert list(queue.pop_due(100)) == [b"bbb", b"ccc"]
    assert queue.held_bytes == 0 and queue.next_due_ns() is None
    assert list(DelayQueue(0).pop_due(0)) == []


def test_zero_delay_queue_forwards_at_once() -> None:
    queue = DelayQueue(delay_ns=0)
    queue.push(7, b"x")
    assert list(queue.pop_due(7)) == [b"x"]


def test_loss_rules_drop_per_mille_on_each_ingress() -> None:
    rules = nftables.loss_rules("tbench_x", 30, ["a", "b"])
    assert rules.count("numgen random mod 1000 < 30") == 2
    assert 'iifname "a"' in rules and 'iifname "b"' in rules
    assert nftables.loss_rules("tbench_x", 0, ["a"]) == ""
    assert "loss" not in nftables.ruleset("tbench_x", 0, ["a"]).split("jump loss")[1]
    assert nftables.delete_addresses("t", "blackhole", []) == ""


def test_tbf_queue_is_one_bandwidth_delay_product() -> None:
    wan = tbf_parameters(50.0, 40.0)
    assert wan.rate_bit == 50_000_000
    assert wan.limit_bytes == 250_000  # 50 Mbit/s x 40 ms
    assert wan.burst_bytes >= 2 * 1514
    assert tbf_parameters(1.0, None).limit_bytes >= 16 * 1514
    assert peak_packet_rate(None) is None
    assert peak_packet_rate(50.0) == pytest.approx(3 * 50e6 / (8 * 1514))


def _measured(**changes: float | None) -> Measured:
    figures: dict[str, float | None] = {
        "connect_ms": 40.6,
        "rtt_ms": 41.0,
        "rate_down_mbit": 49.0,
        "rate_up_mbit": 50.5,
        "goodput_down_mbit": 47.0,
        "goodput_up_mbit": 47.0,
        "loss_down": 0.0,
        "loss_up": 0.001,
        "delay_line_ceiling_pps": 100_000.0,
    }
    figures.update(changes)
    return Measured(loss_probes=10_000, **figures)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({}, []),
        ({"rtt_ms": 44.5}, ["rtt_ms"]),
        ({"connect_ms": 35.9}, ["connect_ms"]),
        ({"rate_up_mbit": 44.9}, ["rate_up_mbit"]),
        ({"loss_down": 0.0051}, ["loss_down"]),
        ({"delay_line_ceiling_pps": 10_000.0}, ["pps_over_ceiling"]),
    ],
)
def test_judging_uses_the_issues_tolerances(changes: dict[str, float], failing: list[str]) -> None:
    properties = judge(PROFILES["wan"], _measured(**changes))
    assert [c.name for c in properties.checks if not c.ok] == failing
    assert properties.ok is (not failing)
    assert ("within tolerance" in properties.line()) is (not failing)
    assert properties.as_dict()["network"] == "wan"


def test_half_a_millisecond_is_enough_on_short_paths() -> None:
    short = Profile("short", "short", rtt_ms=2.0)
    assert judge(short, _measured(connect_ms=2.45, rtt_ms=1.55)).ok
    assert not judge(short, _measured(connect_ms=2.55, rtt_ms=2.0)).ok


def test_lan_and_loopback_judge_only_what_they_promise() -> None:
    lan = judge(PROFILES["lan"], _measured(rtt_ms=0.1, connect_ms=0.1, rate_down_mbit=9000.0))
    assert {c.name for c in lan.checks} == {"loss_down", "loss_up"}
    assert lan.below_ceiling is None
    assert judge(PROFILES["loopback"], _measured()).checks == ()


def test_missing_root_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetworkUnavailable, match="root"):
        require_network()


async def test_loopback_builds_nothing_and_cannot_be_broken() -> None:
    async with NetworkPath("loopback", clients=2) as path:
        assert path.server_ns is None and path.client_ns == (None, None)
        assert path.server_addr == "127.0.0.1"
        assert path.exec_prefix(path.server_ns) == []
        with pytest.raises(PathError, match="no network"):
            await path.blackhole()


# -- real namespaces -------------------------------------------------------------------


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout


def leftovers(run_id: str) -> list[str]:
    """Everything of run ``run_id`` still on the machine, in words (empty: nothing)."""
    found = [f"namespace {n}" for n in _run("ip", "netns", "list").split() if f"-{run_id}-" in n]
    found += [
        f"link {line.split(':')[1].strip()}"
        for line in _run("ip", "-o", "link").splitlines()
        if f"tb{run_id}-" in line
    ]
    found += [
        f"nft {line}" for line in _run("nft", "list", "tables").splitlines() if run_id in line
    ]
    ours = [n for n in namespaces.list_namespaces() if f"-{run_id}-" in n]
    found += [f"process {pid} inside the namespaces" for pid in namespaces.pids_in(ours)]
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if f"tb{run_id}-" in cmdline or f"tbench-{run_id}-" in cmdline:
            found.append(f"process {proc.info['pid']}: {cmdline}")
    if (stale.STATE_DIR / f"{run_id}.json").exists():
        found.append("state file")
    return found


def _in_router(path: NetworkPath, *argv: str) -> str:
    assert path.router_ns is not None
    return _run(*path.exec_prefix(path.router_ns), *argv)


def _assert_built(path: NetworkPath) -> None:
    """The things whose absence the teardown tests check are really there while it lives."""
    run = path.run_id
    listed = _run("ip", "netns", "list")
    assert all(ns in listed for ns in path.layout.namespaces)
    assert f"tbench_{run}" in _in_router(path, "nft", "list", "tables")
    assert path.layout.tun in _in_router(path, "ip", "link")
    assert path.delay_line_pid is not None and psutil.pid_exists(path.delay_line_pid)
    assert len(leftovers(run)) >= len(path.layout.namespaces) + 1
    # A command run through exec_prefix is inside: it sees the server's address.
    assert path.server_addr in _run(*path.exec_prefix(path.server_ns), "ip", "-o", "addr")
    # Nothing leads out: no default route anywhere, and no interface but the run's own.
    for ns in path.layout.namespaces:
        assert "default" not in _run("ip", "-n", ns, "route", "show", "table", "main")
        names = [
            line.split(":")[1].strip().split("@")[0]
            for line in _run("ip", "-n", ns, "-o", "link").splitlines()
        ]
        assert all(n == "lo" or n.startswith(f"tb{run}-") for n in names), names


async def _wait_for(predicate: object, timeout_s: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def _loss_bound(loss: float, probes: int) -> float:
    # 0.5 points is the issue's tolerance; at 3 % loss and 10,000 probes it is 2.9 standard
    # errors, so one run in a few hundred would fail on chance alone. Four standard errors
    # (0.68 points there) keeps this test honest without making it flaky; measure() itself
    # still judges against 0.5.
    return max(0.005, 4 * math.sqrt(max(loss, 0.001) * (1 - loss) / probes))


def _failed_checks(properties: PathProperties) -> list[str]:
    """The checks outside tolerance, loss apart (judged below with its own bound)."""
    return [c.name for c in properties.checks if not c.ok and not c.name.startswith("loss")]


@pytest.mark.parametrize("name", ["lan", "wan", "mobile", "lossy"])
@pytest.mark.timeout(90)
@pytest.mark.network
@NEEDS_NETWORK_PATHS
async def test_path_properties_within_tolerance(name: str) -> None:
    profile = get_profile(name)
    async with NetworkPath(profile) as path:
        properties = await measure(path)
        if _failed_checks(properties) and all(
            c.startswith("rate") for c in _failed_checks(properties)
        ):
            # The delay line is a process on these two cores: a moment of the other test
            # worker's load can starve it while the rate is measured. A rate check that fails
            # is measured once more on the same path; a broken shaper fails both times.
            print("rate off, measured again:", properties.line())
            properties = await measure(path)
    print(properties.line())
    m = properties.measured
    assert _failed_checks(properties) == []
    bound = _loss_bound(profile.loss, m.loss_probes)
    assert abs(m.loss_down - profile.loss) <= bound, properties.line()
    assert abs(m.loss_up - profile.loss) <= bound, properties.line()
    if profile.has_delay_line:
        assert m.delay_line_ceiling_pps is not None and m.delay_line_ceiling_pps > 20_000
    if profile.rate_mbit is not None:
        assert properties.below_ceiling is True
    if profile.rtt_ms is None:
        assert m.rtt_ms < 5.0  # plain veths: well under a millisecond, whatever the load
    assert m.loss_probes == DEFAULT_LOSS_PROBES


@pytest.mark.network
@NEEDS_NETWORK_PATHS
async def test_teardown_after_success_leaves_nothing() -> None:
    forgotten: subprocess.Popen[bytes] | None = None
    try:
        async with NetworkPath("wan", clients=2) as path:
            _assert_built(path)
            # A process the "harness" started inside the path and forgot to stop.
            forgotten = subprocess.Popen([*path.exec_prefix(path.server_ns), "sleep", "60"])
            pid = forgotten.pid
            await _wait_for(lambda: pid in namespaces.pids_in([path.layout.server_ns]), 5, "it")
        assert forgotten.wait(timeout=5) == -signal.SIGTERM
    finally:
        if forgotten is not None and forgotten.poll() is None:
            forgotten.kill()
            forgotten.wait()
    assert leftovers(path.run_id) == []


@pytest.mark.network
@NEEDS_NETWORK_PATHS
async def test_teardown_after_an_exception_leaves_nothing() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with NetworkPath("mobile") as path:
            _assert_built(path)
            raise RuntimeError("boom")
    assert leftovers(path.run_id) == []


@pytest.mark.network
@NEEDS_NETWORK_PATHS
@pytest.mark.timeout(60)
async def test_teardown_after_sigint_in_the_middle() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.network", "check", "wan"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        parent = psutil.Process(proc.pid)

        def delay_line() -> list[str]:
            for child in parent.children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    cmdline: list[str] = child.cmdline()
                    if "experiments.network.delay_line" in cmdline:
                        return cmdline
            return []

        await _wait_for(delay_line, 20, "the delay line of the check")
        run_id = delay_line()[delay_line().index("--tun") + 1][2:].split("-")[0]
        await _wait_for(
            lambda: sum(f"tbench-{run_id}-" in n for n in namespaces.list_namespaces()) == 3,
            5,
            "the namespaces",
        )
        await asyncio.sleep(0.5)  # into the measurement
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert err == b"" and out == b""
    assert leftovers(run_id) == []


_KILLED_RUN = """
import asyncio, subprocess, sys
from experiments.network import NetworkPath

async def main():
    async with NetworkPath("wan", sys.argv[1]) as path:
        sleeper = subprocess.Popen([*path.exec_prefix(path.server_ns), "sleep", "60"])
        print(sleeper.pid, flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.network
@NEEDS_NETWORK_PATHS
async def test_a_killed_runs_leftovers_are_cleaned_at_the_next_start() -> None:
    run_id = "k" + os.urandom(3).hex()
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, run_id], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        sleeper = int(proc.stdout.readline())
    finally:
        proc.kill()  # no teardown: as if the machine's OOM killer struck
        proc.wait()
    left = leftovers(run_id)
    assert sum(item.startswith("namespace") for item in left) == 3, left
    async with NetworkPath("lan") as live:
        # The next start removed the dead run's namespaces and the process inside them...
        assert [item for item in leftovers(run_id) if not item.startswith("process")] == []
        # ... but never a live run's: the clean-up leaves this one alone.
        assert stale.clean_stale() == []
        assert all(namespaces.exists(ns) for ns in live.layout.namespaces)
        assert not _running(sleeper), "the process inside the dead run's namespace lives on"
    # The dead run's delay line noticed its parent was gone and exited by itself.
    await _wait_for(lambda: leftovers(run_id) == [], 5, f"the end of {leftovers(run_id)}")


def _running(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return False
    return bool(status != psutil.STATUS_ZOMBIE)


@pytest.mark.network
@NEEDS_NETWORK_PATHS
def test_cli_unknown_profile_is_exit_2_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "experiments.network", "check", "wan,nosuch"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "nosuch" in done.stderr and "mobile" in done.stderr


async def _udp_pair(path: NetworkPath, client: int) -> tuple[socket.socket, socket.socket]:
    server = path.socket(path.server_ns, socket.AF_INET, socket.SOCK_DGRAM)
    peer = path.socket(path.client_ns[client], socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((path.server_addr, 0))
    peer.bind((path.client_addr[client], 0))
    return server, peer


async def _arrives(sender: socket.socket, receiver: socket.socket, wait_s: float = 0.3) -> bool:
    """Does a datagram from ``sender`` reach ``receiver`` within ``wait_s``?"""
    loop = asyncio.get_running_loop()
    marker = os.urandom(8)
    await loop.sock_sendto(sender, marker, receiver.getsockname())
    deadline = loop.time() + wait_s
    while (left := deadline - loop.time()) > 0:
        try:
            if await asyncio.wait_for(loop.sock_recv(receiver, 64), left) == marker:
                return True
        except TimeoutError:
            break
    return False


@pytest.mark.network
@NEEDS_NETWORK_PATHS
async def test_blackhole_drops_both_ways_and_heal_restores() -> None:
    async with NetworkPath("lan", clients=2) as path:
        server0, client0 = await _udp_pair(path, 0)
        server1, client1 = await _udp_pair(path, 1)
        with server0, client0, server1, client1:
            assert await _arrives(client0, server0) and await _arrives(server0, client0)
            await path.blackhole(0)
            assert not await _arrives(client0, server0), "client -> server still passes"
            assert not await _arrives(server0, client0), "server -> client still passes"
            # Only client 0 is cut off.
            assert await _arrives(client1, server1) and await _arrives(server1, client1)
            await path.heal(0)
            assert await _arrives(client0, server0) and await _arrives(server0, client0)
            await path.heal(0)  # healing a healthy client is a no-op, not an nft error


@pytest.mark.network
@NEEDS_NETWORK_PATHS
async def test_link_down_cuts_and_link_up_restores() -> None:
    async with NetworkPath("lan") as path:
        server, client = await _udp_pair(path, 0)
        with server, client:
            await path.link_down(0)
            assert not await _arrives(client, server) and not await _arrives(server, client)
            await path.link_up(0)
            assert await _arrives(client, server) and await _arrives(server, client)


@pytest.mark.network
@NEEDS_NETWORK_PATHS
async def test_reset_resets_both_ends_of_a_live_connection() -> None:
    async with NetworkPath("lan") as path:
        listener = path.socket(path.server_ns)
        listener.bind((path.server_addr, 0))
        listener.listen()
        accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        accepted = asyncio.Queue()

        async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put((reader, writer))

        server = await asyncio.start_server(keep, sock=listener)
        async with server:
            port = int(listener.getsockname()[1])
            c_reader, c_writer = await path.open_connection(
                path.client_ns[0], path.server_addr, port
            )
            s_reader, s_writer = await asyncio.wait_for(accepted.get(), 5)
            fault = asyncio.create_task(path.reset(0, hold_s=1.0))
            await asyncio.sleep(0.2)  # the rule is in
            c_writer.write(b"c")
            s_writer.write(b"s")
            for reader in (c_reader, s_reader):
                with pytest.raises(ConnectionResetError):
                    await asyncio.wait_for(reader.read(10), 5)
            await fault
            # After the hold, new connections pass again.
            _, writer = await path.open_connection(path.client_ns[0], path.server_addr, port)
            writer.close()
            for w in (c_writer, s_writer):
                w.close()


@pytest.mark.network
@NEEDS_NETWORK_PATHS
async def test_leftover_that_cannot_be_removed_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> None:
        raise PathError(f"cannot remove network namespace {name}: busy")

    path = NetworkPath("lan")
    with pytest.raises(LeftoverError, match="busy"):
        async with path:
            monkeypatch.setattr(namespaces, "remove", refuse)
    monkeypatch.undo()
    stale.clean_stale()  # the owner (this process) is alive, so it stays ...
    assert leftovers(path.run_id) != []
    for ns in path.layout.namespaces:  # ... and this test removes it itself
        namespaces.remove(ns)
    stale.release(path.run_id)
    assert leftovers(path.run_id) == []
