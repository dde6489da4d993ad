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

import httpx
import pytest

from transports.announce import parse_announcement
from transports.registry import TRANSPORTS

CLI = [sys.executable, "-m", "transports"]
SERVING = re.compile(r"^serving (\S+) on (\S+):(\d+) .*epoch=([0-9a-f]+)")


@contextmanager
def serve(name: str, *args: str, port: int = 0) -> Iterator[tuple[int, str]]:
    """Run ``serve NAME`` until the block ends; yield its port and epoch. Both readiness
    lines must name the loop asked for (``--loop``, asyncio by default)."""
    loop = args[args.index("--loop") + 1] if "--loop" in args else "asyncio"
    proc = subprocess.Popen(
        [*CLI, "serve", name, "--port", str(port), "--ready-json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # Once it listens: the line for people, then exactly one for programs.
        human, ready = proc.stdout.readline(), proc.stdout.readline()
        match = SERVING.match(human)
        assert match, f"unexpected first line {human!r}"
        announcement = parse_announcement(ready)
        assert announcement is not None, f"unexpected second line {ready!r}"
        assert announcement.ready.transport == name == match.group(1)
        assert announcement.ready.pid == proc.pid
        assert (str(announcement.ready.port), announcement.ready.epoch) == match.group(3, 4)
        assert announcement.ready.loop == loop and human.rstrip().endswith(f" loop={loop}")
        yield announcement.ready.port, announcement.ready.epoch
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
def test_serve_and_listen_json_on_uvloop(name: str) -> None:
    # Every transport's libraries on uvloop, both ends (serve() checks that the server
    # announces the loop it really runs on); the other tests here run the default asyncio.
    with serve(name, "--rate", "200", "--seed", "3", "--loop", "uvloop") as (port, epoch):
        out = run(
            "listen", name, "--port", str(port), "--count", "20", "--json", "--loop", "uvloop"
        )
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


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["serve", "tcp", "--rate", "nan"], "--rate"),
        (["serve", "tcp", "--rate", "inf"], "--rate"),
        (["serve", "tcp", "--rate", "1e-300"], "--rate"),
        (["serve", "tcp", "--set", "history=0"], "history"),
        (["serve", "tcp", "--set", "max_message_bytes=0"], "max_message_bytes"),
        (["serve", "tcp", "--set", "batch=0"], "batch"),
        (["serve", "tcp", "--set", "heartbeat_s=-1"], "heartbeat_s"),
        (["listen", "sse", "--set", "dead_after_s=nan"], "dead_after_s"),
        (["listen", "tcp", "--set", "resume=maybe"], "resume"),
        (["serve", "poll", "--set", "interval_s=0"], "interval_s"),
        (["serve", "tcp", "--set", "interval_s=1"], "--set wants KEY=VALUE"),  # poll's
        (["serve", "tcp", "--epoch", "abc\n"], "--epoch"),
        (["serve", "sse", "--epoch", "MyRun"], "--epoch must be 1-64 lowercase hex digits"),
        (["serve", "sse", "--epoch", "ABC"], "--epoch"),
        (["serve", "sse", "--allow-origin", "example.org"], "--allow-origin: 'example.org'"),
        (["serve", "sse", "--settings-json", '{"settings":{"allow_origins":["x"]}}'], "origin"),
        (["listen", "tcp", "--wait", "nan"], "--wait"),
        (["serve", "tcp", "--settings-json", '{"settings":{"history":"5"}}'], "history"),
        (["serve", "tcp", "--settings-json", '{"settings":{"histroy":5}}'], "histroy"),
        (["serve", "tcp", "--settings-json", '{"option":{}}'], "option"),
        (["listen", "poll", "--settings-json", '{"options":{"wait_s":1}}'], "wait_s"),
        (["serve", "tcp", "--settings-json", "{"], "--settings-json"),
        (["serve", "tcp", "--loop", "bogus"], "unknown event loop 'bogus'; known: asyncio"),
        (["listen", "sse", "--loop", "trio"], "unknown event loop 'trio'"),
    ],
)
def test_bad_settings_are_one_line_naming_them_and_exit_2(args: list[str], named: str) -> None:
    out = run(*args, timeout=10)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.splitlines()
    assert named in line


def _error_line_after_silence(port: int) -> bytes:
    """Connect to a tcp server, send no hello, return the line it closes with."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as probe:
        return probe.makefile("rb").readline()


@pytest.mark.parametrize(
    "args",
    [
        ["--settings-json", '{"settings": {"history": 50}, "options": {"hello_timeout_s": 0.25}}'],
        ["--set", "hello_timeout_s=0.25"],
        # --set applies on top of the document.
        ["--settings-json", '{"options": {"hello_timeout_s": 9}}', "--set", "hello_timeout_s=0.25"],
    ],
)
def test_the_transports_options_reach_the_server(args: list[str]) -> None:
    with serve("tcp", *args) as (port, _):
        line = _error_line_after_silence(port)
    assert json.loads(line) == {"error": "peer silent: no hello within 0.25 s"}


def test_serve_and_listen_over_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with serve("tcp", "--host", "::1", "--rate", "200") as (port, epoch):
        out = run("listen", "tcp", "--host", "::1", "--port", str(port), "--count", "3", "--json")
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["epoch"] for line in out.stdout.splitlines()] == [epoch] * 3


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


def test_allow_origin_reaches_the_servers_policy() -> None:
    page = "http://dash.test:8000"
    with serve("sse", "--allow-origin", page, "--allow-origin", "https://other.test") as (port, _):
        url = f"http://127.0.0.1:{port}/events"
        with httpx.stream("GET", url, headers={"Origin": page}, timeout=10) as allowed:
            assert allowed.status_code == 200
            assert allowed.headers["access-control-allow-origin"] == page
        refused = httpx.get(url, headers={"Origin": "http://elsewhere.test"}, timeout=10)
        assert refused.status_code == 403
    with serve("poll") as (port, _):  # the default: loopback pages only
        refused = httpx.get(f"http://127.0.0.1:{port}/samples", headers={"Origin": page})
        assert refused.status_code == 403


def _ignoring_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a script's background job starts


@pytest.mark.skipif(os.name != "posix", reason="signals")
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)], ids=["SIGINT", "SIGTERM"]
)
def test_serve_stops_cleanly_on_sigint_and_sigterm_even_with_sigint_ignored(
    signum: signal.Signals, code: int
) -> None:
    server = subprocess.Popen(
        [*CLI, "serve", "tcp", "--port", "0", "--rate", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignoring_sigint,
    )
    try:
        assert server.stdout is not None
        port = int(SERVING.match(server.stdout.readline()).group(3))  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"{}\n")
            assert client.makefile("rb").readline().startswith(b'{"epoch"')
            server.send_signal(signum)
            _, err = server.communicate(timeout=10)
            # The client's stream ends with a plain close (EOF; a reset would raise here).
            while client.recv(1 << 16):
                pass
    finally:
        server.kill()
    assert server.returncode == code, err
    assert "Traceback" not in err
    with socket.socket() as again:  # the port is free at once
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
