"""Pure pieces of the fault scenarios: detection/reconnection extraction, bad-peer answers."""

from __future__ import annotations

import pytest

from experiments.faults.hostile import CASES, Target, cases_for, describe_answer, ws_frame
from experiments.faults.proxy import PeerClose
from experiments.faults.windows import FaultWindow, observe, summarize, trace
from experiments.scenarios.slow_consumer import server_cuts
from experiments.worker.schema import ClientEvent, ClientOutcome, Connected, Disconnected
from model.ledger import DeliveryCounts, PosteriorError
from transports.registry import TRANSPORTS

S = 1_000_000_000


def client(
    events: list[tuple[str, float]], samples: list[tuple[float, str, int, float]]
) -> ClientOutcome:
    """A client that saw ``events`` and received ``(recv s, epoch, seq, sent s)`` samples."""
    made: list[ClientEvent] = [
        Connected(int(at * S), 1) if kind == "connected" else Disconnected(int(at * S), 1, "x")
        for kind, at in events
    ]
    return ClientOutcome(
        index=0,
        role="normal",
        received=len(samples),
        received_in_window=0,
        counts=DeliveryCounts(),
        posterior_error=PosteriorError(0.0, 0.0, 0.0),
        epochs=sorted({s[1] for s in samples}),
        events=made,
        samples=[(int(r * S), e, q, int(sent * S)) for r, e, q, sent in samples],
    )


def test_detection_and_reconnection_of_one_fault() -> None:
    c = client(
        [("connected", 0.0), ("disconnected", 10.5), ("connected", 11.0)],
        [(9.9, "a", 1, 9.9), (10.2, "a", 2, 10.0), (11.3, "b", 0, 11.0), (11.4, "b", 1, 11.1)],
    )
    # A sample still buffered from the broken connection (10.2 s, after the fault began and
    # before the new connection) is not the recovery; the first sample after 11.0 s is.
    o = observe(0, c, FaultWindow(start_ns=10 * S, end_ns=int(10.1 * S), new_epoch="b"))
    assert o.detect_s == pytest.approx(0.5)
    assert o.reconnect_s == pytest.approx(11.3 - 10.1)
    assert o.new_epoch is True
    assert observe(0, c, FaultWindow(10 * S, int(10.1 * S), new_epoch="c")).new_epoch is False


def test_a_disconnect_after_the_heal_is_not_a_detection() -> None:
    c = client([("disconnected", 21.0)], [(25.0, "a", 9, 25.0)])
    o = observe(0, c, FaultWindow(start_ns=10 * S, end_ns=20 * S, detect_until_ns=20 * S))
    assert o.detect_s is None
    assert o.reconnect_s == pytest.approx(5.0)


def test_nothing_after_the_fault_is_missed() -> None:
    o = observe(0, client([], [(1.0, "a", 0, 1.0)]), FaultWindow(2 * S, 3 * S))
    assert (o.detect_s, o.reconnect_s, o.server_drop_s) == (None, None, None)


def test_trace_counts_the_backlog_on_the_faults_axis() -> None:
    # Samples sent every 0.1 s from 9.0 s; those sent during the 1 s hole (10.0-11.0 s)
    # arrive together at 11.5 s, after the client reconnected at 11.4 s.
    samples = []
    for i in range(40):
        sent = 9.0 + i / 10
        recv = sent + 0.001 if not 10.0 <= sent < 11.5 else 11.5
        samples.append((recv, "a", i, sent))
    c = client([("connected", 0.0), ("disconnected", 10.6), ("connected", 11.4)], samples)
    tr = trace(0, c, FaultWindow(10 * S, 11 * S, server_drop_ns=int(10.8 * S)), 10.0)
    assert tr.start_s < 0 < tr.end_s == pytest.approx(1.0)
    assert tr.detected_s == pytest.approx(0.6) and tr.server_dropped_s == pytest.approx(0.8)
    assert tr.recovered_s == pytest.approx(1.5)

    def at(seconds: float) -> int:
        return tr.backlog[round((seconds - tr.start_s) / tr.bin_s)]

    assert at(-0.25) == 0  # everything arrives (within 1 ms) before the hole
    assert at(1.0) in (10, 11)  # a second of samples held back by the hole
    assert at(1.45) == 15  # ... still growing until the recovery
    assert at(1.6) <= 1


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
        assert transport.bad_input_family in CASES, transport.name
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
