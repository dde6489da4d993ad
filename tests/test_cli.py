"""``python -m transports``: the real command line in subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from transports.registry import TRANSPORTS

CLI = [sys.executable, "-m", "transports"]
SERVING = re.compile(r"^serving (\S+) on ([\d.]+):(\d+) .*epoch=([0-9a-f]+)")


@contextmanager
def serve(name: str, *args: str, port: int = 0) -> Iterator[tuple[int, str]]:
    """Run ``serve NAME`` until the block ends; yield its port and epoch."""
    proc = subprocess.Popen(
        [*CLI, "serve", name, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints this line once it listens
        match = SERVING.match(line)
        assert match, f"unexpected first line {line!r}"
        yield int(match.group(3)), match.group(4)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_list_names_every_registered_transport() -> None:
    out = run("list")
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == list(TRANSPORTS)


@pytest.mark.parametrize("name", list(TRANSPORTS))
def test_serve_and_listen_json(name: str) -> None:
    with serve(name, "--rate", "200", "--seed", "3") as (port, epoch):
        out = run("listen", name, "--port", str(port), "--count", "20", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 20
    assert {r["epoch"] for r in rows} == {epoch}
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(seqs[0], seqs[0] + 20))
    last = rows[-1]
    ones = sum(r["value"] for r in rows)
    assert (last["alpha"], last["beta"]) == (2 + ones, 2 + 20 - ones)
    assert last["mean"] == pytest.approx(last["alpha"] / (last["alpha"] + last["beta"]))
    assert last["ci_low"] < last["mean"] < last["ci_high"]


def test_listen_prints_posterior_lines() -> None:
    with serve("tornado-ws", "--rate", "100") as (port, _):
        out = run("listen", "tornado-ws", "--port", str(port), "--count", "3")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    assert all(
        "α=" in line and "β=" in line and "mean=" in line and "95% CI" in line for line in lines
    )


def test_listen_rides_through_a_server_restart() -> None:
    # The first server is slow (5/s) so the 60 samples cannot all come from it, however late
    # it gets stopped on a loaded machine; the second is fast so the test ends quickly.
    with serve("tornado-ws", "--rate", "5") as (port, first_epoch):
        listener = subprocess.Popen(
            [
                *CLI,
                "listen",
                "tornado-ws",
                "--port",
                str(port),
                "--count",
                "60",
                "--json",
                "--set",
                "backoff_base_s=0.05",
                "--set",
                "backoff_cap_s=0.2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None
        assert json.loads(listener.stdout.readline())["epoch"] == first_epoch
    try:
        with serve("tornado-ws", "--rate", "50", port=port) as (_, second_epoch):
            out, err = listener.communicate(timeout=30)
    finally:
        listener.kill()
    assert listener.returncode == 0, err
    epochs = [json.loads(line)["epoch"] for line in out.splitlines()]
    assert epochs[-1] == second_epoch != first_epoch
    assert "reconnect" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "carrier-pigeon"], "unknown transport"),
        (["listen", "nope"], "unknown transport"),
        (["serve", "tornado-ws", "--rate", "fast"], "invalid float"),
        (["serve", "tornado-ws", "--bogus"], "unrecognized arguments"),
        (["serve", "tornado-ws", "--p", "1.5"], "--p must lie in"),
        (["serve", "tornado-ws", "--set", "nonsense=1"], "--set wants KEY=VALUE"),
        (["listen", "tornado-ws", "--count", "0"], "--count must be"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args: list[str], message: str) -> None:
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_port_in_use_exits_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = run("serve", "tornado-ws", "--port", str(taken.getsockname()[1]))
    assert out.returncode == 2
    assert "in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_listen_gives_up_after_wait_with_exit_2() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = run("listen", "tornado-ws", "--port", str(port), "--wait", "1")
    assert out.returncode == 2
    assert out.stderr.count("no server at") == 1  # said once, not once per attempt
    assert "within 1 s" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_ctrl_c_exits_quietly_with_130() -> None:
    with serve("tornado-ws", "--rate", "100") as (port, _):
        listener = subprocess.Popen(
            [*CLI, "listen", "tornado-ws", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None
        listener.stdout.readline()  # it is receiving
        listener.send_signal(signal.SIGINT)
        _, err = listener.communicate(timeout=10)
    assert listener.returncode == 130
    assert "Traceback" not in err
