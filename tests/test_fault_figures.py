"""Pure pieces of the fault scenarios: detection/reconnection extraction, bad-peer answers."""

from __future__ import annotations

from typing import Any

import pytest

from experiments.bad_peers import (
    CASES,
    Target,
    cases_for,
    describe_answer,
    protocol_family,
    ws_frame,
)
from experiments.fault_figures import FaultWindow, observe, summarize
from experiments.proxy import PeerClose
from experiments.scenarios.slow_consumer import server_cuts
from transports.registry import TRANSPORTS

S = 1_000_000_000


def client(events: list[tuple[str, float]], samples: list[tuple[float, str, int]]) -> Any:
    return {
        "events": [{"type": kind, "at_ns": int(at * S)} for kind, at in events],
        "samples": [[int(at * S), epoch, seq] for at, epoch, seq in samples],
    }


def test_detection_and_reconnection_of_one_fault() -> None:
    c = client(
        [("connected", 0.0), ("disconnected", 10.5), ("connected", 11.0)],
        [(9.9, "a", 1), (10.2, "a", 2), (11.3, "b", 0), (11.4, "b", 1)],
    )
    # A sample still buffered from the broken connection (10.2 s, after the fault began and
    # before the new connection) is not the recovery; the first sample after 11.0 s is.
    o = observe(c, FaultWindow(start_ns=10 * S, end_ns=int(10.1 * S)))
    assert o.detect_s == pytest.approx(0.5)
    assert o.reconnect_s == pytest.approx(11.3 - 10.1)
    assert o.epochs_after == {"a", "b"}


def test_a_disconnect_after_the_heal_is_not_a_detection() -> None:
    c = client([("disconnected", 21.0)], [(25.0, "a", 9)])
    o = observe(c, FaultWindow(start_ns=10 * S, end_ns=20 * S, detect_until_ns=20 * S))
    assert o.detect_s is None
    assert o.reconnect_s == pytest.approx(5.0)


def test_nothing_after_the_fault_is_missed() -> None:
    o = observe(client([], [(1.0, "a", 0)]), FaultWindow(2 * S, 3 * S))
    assert (o.detect_s, o.reconnect_s, o.epochs_after) == (None, None, frozenset())


def test_summarize_counts_missed_values() -> None:
    assert summarize("detect_s", [1.0, None, 3.0, 2.0]) == {
        "detect_s_median": 2.0,
        "detect_s_max": 3.0,
        "detect_s_missed": 1,
    }
    assert summarize("x", [None]) == {"x_median": None, "x_max": None, "x_missed": 1}


def test_server_cuts_ignore_the_server_answering_a_client_close() -> None:
    closes = [
        PeerClose(1, "downstream", 5),
        PeerClose(1, "upstream", 6),  # the server closing after the client left: not a cut
        PeerClose(2, "upstream", 7),
        PeerClose(2, "downstream", 8),
    ]
    assert server_cuts(closes) == [7]


def test_every_registered_transport_has_bad_cases_of_its_family() -> None:
    for transport in TRANSPORTS.values():
        family = protocol_family(transport)
        assert family in CASES, transport.name
        names = [c.name for c in cases_for(transport)]
        assert "garbage bytes" in names and len(names) == len(set(names)) > 2


def test_bad_cases_build_bytes_for_the_endpoint() -> None:
    target = Target("127.0.0.1", 8888, "/websocket/")
    for cases in CASES.values():
        for case in cases:
            payload = case.build(target)
            assert isinstance(payload, bytes) and payload


def test_ws_frame_lengths() -> None:
    assert ws_frame(0x1, b"hi") == b"\x81\x82\0\0\0\0hi"
    assert ws_frame(0x1, b"x" * 200)[:4] == b"\x81\xfe\x00\xc8"
    assert ws_frame(0x2, b"x" * 70_000)[:10] == b"\x82\xff" + (70_000).to_bytes(8, "big")


@pytest.mark.parametrize(
    ("data", "ending", "expected"),
    [
        (
            b"HTTP/1.1 400 Bad Request\r\nA: b\r\n\r\nbody",
            "closed",
            "HTTP/1.1 400 Bad Request; closed",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x88\x05\x03\xf1big",
            "reset",
            "HTTP/1.1 101 Switching Protocols; close 1009 'big'; reset",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x89\x00",
            "closed",
            "HTTP/1.1 101 Switching Protocols; no close frame; closed",
        ),
        (b'{"error":"bad hello"}\n', "closed", '{"error":"bad hello"}; closed'),
        (b"", "reset", "reset"),
        (b"\x01\x02", "closed", "2 bytes: b'\\x01\\x02'; closed"),
    ],
)
def test_describe_answer(data: bytes, ending: str, expected: str) -> None:
    assert describe_answer(data, ending) == expected
