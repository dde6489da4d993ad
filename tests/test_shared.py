"""Shared transport pieces: backoff, resume tokens, the hub, settings and options, the
readiness line, the rejections table and the listening sockets."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Annotated

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.errors import (
    BadResumeToken,
    FrameTooLarge,
    PeerSilent,
    ProtocolError,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample
from transports.announce import Announcement, Ready, parse_announcement
from transports.backoff import Backoff
from transports.config import decode_config, encode_config
from transports.hub import Hub
from transports.options import Options, replace_options
from transports.publisher import check_rate
from transports.rejections import http_refusal, rejection, rejection_text, ws_close_reason
from transports.resume import ResumeToken, parse_event_id, parse_query, start_seq
from transports.settings import Settings, SettingsError
from transports.sockets import BACKLOG, bound_port, listening_sockets, url_host


def test_backoff_full_jitter_grows_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(1))
    ceilings = []
    for _ in range(6):
        ceilings.append(backoff.ceiling())
        assert 0.0 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5


def test_backoff_jitter_spreads_delays() -> None:
    backoff = Backoff(1.0, 1.0, rng=random.Random(2))
    delays = {round(backoff.next_delay(), 3) for _ in range(50)}
    assert len(delays) > 40


def test_fixed_backoff_without_jitter() -> None:
    backoff = Backoff(3.0, 3.0, jitter=False)
    assert [backoff.next_delay() for _ in range(4)] == [3.0] * 4


def test_backoff_survives_many_failures() -> None:
    backoff = Backoff(0.1, 5.0)
    backoff.attempt = 10_000
    assert backoff.ceiling() == 5.0


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, 100),  # no token: live only
        (ResumeToken("aa", 49), 50),  # same epoch, held: continue at since + 1
        (ResumeToken("aa", 99), 100),  # fully caught up
        (ResumeToken("aa", 5), 40),  # too old: oldest held (the gap is real loss)
        (ResumeToken("aa", 500), 100),  # ahead of the server: live only
        (ResumeToken("bb", 70), 40),  # another epoch (restart): oldest held
    ],
)
def test_start_seq(token: ResumeToken | None, expected: int) -> None:
    assert start_seq(token, "aa", oldest=40, next_seq=100) == expected


def test_event_id_and_query_tokens() -> None:
    assert parse_event_id("9f2c:17") == ResumeToken("9f2c", 17)
    assert parse_query({"epoch": "9f2c", "since": "17"}) == ResumeToken("9f2c", 17)
    assert parse_query({}) is None


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "9f2c",
        "9f2c:",
        ":17",
        "9f2c:x",
        "XX:1",
        "9f2c: 1",
        "9f2c:+1",
        "9f2c:1_0",
        "9f2c:-5",
        "9f2c:99999999999999999999999",
    ],
)
def test_bad_event_ids_are_rejected(bad: str) -> None:
    with pytest.raises(BadResumeToken):
        parse_event_id(bad)


@pytest.mark.parametrize(
    "query",
    [
        {"epoch": "aa"},
        {"since": "1"},
        {"epoch": "aa", "since": "x"},
        {"epoch": "A!", "since": "1"},
        {"epoch": "aa\n", "since": "1"},  # fullmatch: "$" would allow the newline
    ],
)
def test_bad_queries_are_rejected(query: dict[str, str]) -> None:
    with pytest.raises(BadResumeToken):
        parse_query(query)


@pytest.mark.parametrize("epoch", ["abc\n", "\nabc", "ab c", "", "a" * 65, "ABC"])
def test_a_resume_token_holds_nothing_but_hex_in_its_epoch(epoch: str) -> None:
    with pytest.raises(BadResumeToken):
        ResumeToken(epoch, 1)
    with pytest.raises(BadResumeToken):
        parse_event_id(f"{epoch}:1")


@given(st.text(max_size=30))
def test_event_id_parser_never_crashes(text: str) -> None:
    try:
        token = parse_event_id(text)
    except BadResumeToken:
        return
    assert f"{token.epoch}:{token.since}" == text


def _publish(hub: Hub, n: int) -> None:
    first = hub.next_seq
    hub.publish(Sample(hub.epoch, s, 1, s) for s in range(first, first + n))


async def test_hub_keeps_bounded_history_and_places_resumes() -> None:
    hub = Hub("aa", Settings(history=100, queue_size=1_000, batch=1_000))
    _publish(hub, 250)
    assert (hub.oldest_seq, hub.next_seq) == (150, 250)
    assert [s.seq for s in hub.slice(240, 5)] == [240, 241, 242, 243, 244]
    assert [s.seq for s in hub.slice(0, 3)] == [150, 151, 152]
    assert [s.seq for s in hub.slice(245, 100)] == [245, 246, 247, 248, 249]
    live = hub.subscribe(None)
    resumed = hub.subscribe(ResumeToken("aa", 199))
    restarted = hub.subscribe(ResumeToken("bb", 3))
    assert live.take() == []
    assert [s.seq for s in resumed.take()] == list(range(200, 250))
    assert [s.seq for s in restarted.take()][:1] == [150]
    _publish(hub, 3)
    assert [s.seq for s in live.take()] == [250, 251, 252]


async def test_hub_cuts_a_subscriber_that_falls_behind() -> None:
    reasons: list[str] = []
    hub = Hub("aa", Settings(queue_size=10, history=100))
    slow = hub.subscribe(None, on_overflow=reasons.append)
    fast = hub.subscribe(None)
    for _ in range(3):
        _publish(hub, 5)
        fast.take()
    assert reasons and "fell behind" in reasons[0]
    assert hub.subscriber_count == 1
    with pytest.raises(SubscriberOverflow):
        slow.take()


class _Socket:
    """What a direct writer sees: the bytes it took, and whether its buffer is full."""

    def __init__(self) -> None:
        self.took: list[bytes] = []
        self.full = False

    def write(self, data: bytes) -> bool:
        if self.full:
            return False
        self.took.append(data)
        return True


def _seqs(samples: Sequence[Sample]) -> bytes:
    return b"".join(b"%d;" % s.seq for s in samples)


async def test_publish_encodes_once_per_form_and_writes_caught_up_subscribers_itself() -> None:
    hub = Hub("aa", Settings(history=100))
    encodings: list[str] = []

    def form(name: str) -> Callable[[Sequence[Sample]], bytes]:
        def encode(batch: Sequence[Sample]) -> bytes:
            encodings.append(name)
            return name.encode() + _seqs(batch)

        return encode

    sockets = [_Socket() for _ in range(4)]
    subs = [hub.subscribe(None) for _ in sockets]
    for i, (sub, sock) in enumerate(zip(subs, sockets, strict=True)):
        name = "a" if i < 3 else "b"
        sub.write_directly(name, form(name), sock.write)
        sub.rejoin()
    _publish(hub, 2)
    _publish(hub, 1)
    assert sorted(encodings) == ["a", "a", "b", "b"]  # once per form per batch, not per socket
    assert [s.took for s in sockets[:3]] == [[b"a0;1;", b"a2;"]] * 3
    assert sockets[3].took == [b"b0;1;", b"b2;"]
    # Nobody's task was woken: each is caught up, and its next wait only times out.
    assert all(sub.fast and sub.cursor == 3 for sub in subs)
    assert await subs[0].next_batch(timeout=0.01) == []


async def test_a_full_socket_leaves_the_fast_way_until_its_task_has_caught_up() -> None:
    hub = Hub("aa", Settings(history=100, queue_size=50))
    sock = _Socket()
    sub = hub.subscribe(None)
    sub.write_directly("a", _seqs, sock.write)
    sub.rejoin()
    _publish(hub, 1)
    sock.full = True
    _publish(hub, 2)  # refused: the task takes seqs 1-2 itself
    sock.full = False
    _publish(hub, 1)  # not written directly either: the task has not caught up yet
    assert sock.took == [b"0;"] and not sub.fast
    taken = await sub.next_batch(timeout=1)
    assert [s.seq for s in taken] == [1, 2, 3]
    sock.took.append(_seqs(taken))  # what the task writes, then drains
    sub.rejoin()
    _publish(hub, 1)
    assert sock.took == [b"0;", b"1;2;3;", b"4;"]  # in order, nothing twice, nothing skipped
    assert sub.fast and sub.direct_writes == 2


async def test_a_full_socket_is_still_cut_when_it_falls_too_far_behind() -> None:
    reasons: list[str] = []
    hub = Hub("aa", Settings(history=100, queue_size=5))
    sock = _Socket()
    sub = hub.subscribe(None, on_overflow=reasons.append)
    sub.write_directly("a", _seqs, sock.write)
    sub.rejoin()
    sock.full = True
    for _ in range(3):
        _publish(hub, 3)
    assert reasons and "fell behind" in reasons[0] and hub.subscriber_count == 0


async def test_a_writer_that_raises_leaves_the_fast_way_and_stops_nobody_else() -> None:
    hub = Hub("aa", Settings(history=100))
    good, broken = _Socket(), hub.subscribe(None)
    sub = hub.subscribe(None)
    sub.write_directly("a", _seqs, good.write)

    def write_after_eof(data: bytes) -> bool:
        raise RuntimeError("Cannot call write() after write_eof()")

    broken.write_directly("a", _seqs, write_after_eof)
    for s in (sub, broken):
        s.rejoin()
    _publish(hub, 2)
    _publish(hub, 1)  # the publisher goes on, and the healthy subscriber gets everything
    assert good.took == [b"0;1;", b"2;"] and sub.fast
    assert not broken.fast and [s.seq for s in await broken.next_batch(timeout=1)] == [0, 1, 2]


async def test_hub_limits_subscribers() -> None:
    hub = Hub("aa", Settings(max_connections=2))
    hub.subscribe(None)
    hub.subscribe(None)
    with pytest.raises(TooManyConnections):
        hub.subscribe(None)


async def test_next_batch_wakes_on_publish_and_times_out_when_idle() -> None:
    hub = Hub("aa")
    sub = hub.subscribe(None)
    assert await sub.next_batch(timeout=0.01) == []
    waiting = asyncio.create_task(sub.next_batch(timeout=5))
    await asyncio.sleep(0)
    _publish(hub, 2)
    assert [s.seq for s in await asyncio.wait_for(waiting, 5)] == [0, 1]


async def test_wait_beyond() -> None:
    hub = Hub("aa")
    assert not await hub.wait_beyond(-1, 0.01)
    waiting = asyncio.create_task(hub.wait_beyond(-1, 5))
    await asyncio.sleep(0)
    _publish(hub, 1)
    assert await asyncio.wait_for(waiting, 5)


async def test_the_publisher_waits_for_readers_the_hub_does_not_feed() -> None:
    hub = Hub("aa", Settings(history=100))
    position: list[int | None] = [None]
    hub.watch(lambda: position[0])
    assert hub.lowest_reader() is None  # a watched reader that asked nothing yet
    position[0] = 5
    assert hub.lowest_reader() == 5
    _publish(hub, 10)
    waiting = asyncio.create_task(hub.wait_for_room(3))  # 10 - 5 >= 3: no room
    await asyncio.sleep(0)
    assert not waiting.done()
    position[0] = 9
    hub.room_made()
    await asyncio.wait_for(waiting, 5)


# -- settings and options: checked once, in their types ----------------------------------------


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"history": 0}, "history"),
        ({"max_message_bytes": 0}, "max_message_bytes"),
        ({"batch": 0}, "batch"),
        ({"heartbeat_s": -1}, "heartbeat_s"),
        ({"heartbeat_s": 1e-9}, "heartbeat_s"),  # a heartbeat loop, not a keepalive
        ({"heartbeat_s": math.nan}, "heartbeat_s"),
        ({"dead_after_s": math.inf}, "dead_after_s"),
        ({"backoff_base_s": 0}, "backoff_base_s"),  # reconnecting in a tight loop
        ({"backoff_base_s": 2.0, "backoff_cap_s": 1.0}, "backoff_cap_s"),
        ({"queue_size": -5}, "queue_size"),
        ({"max_connections": True}, "max_connections"),
        ({"resume": 1}, "resume"),
        ({"history": 2.5}, "history"),
        ({"connect_timeout_s": "5"}, "connect_timeout_s"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(changes: dict[str, object], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_mapping(changes)
    with pytest.raises(SettingsError, match=named):
        Settings(**changes)  # type: ignore[arg-type]  # the same check, built directly


def test_settings_from_a_mapping_are_exact_unless_read_from_text() -> None:
    assert Settings.from_mapping({"heartbeat_s": 1, "dead_after_s": None}) == Settings(
        heartbeat_s=1.0, dead_after_s=None
    )
    with pytest.raises(SettingsError, match="unknown setting 'heartbeat'"):
        Settings.from_mapping({"heartbeat": 1})
    texts = {"history": "50", "resume": "false", "heartbeat_s": "0.5"}
    assert Settings.from_mapping(texts, strict=False) == Settings(
        history=50, resume=False, heartbeat_s=0.5
    )
    base = Settings(batch=7)
    assert Settings.from_mapping({"history": 9}, base) == Settings(batch=7, history=9)


class _Knobs(Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pace_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    fancy: bool = False


def test_options_are_replaced_strictly_by_their_own_type() -> None:
    knobs = _Knobs()
    assert replace_options(knobs, {"pace_s": 2}) == _Knobs(pace_s=2.0)
    assert replace_options(knobs, {"fancy": "true"}, strict=False) == _Knobs(fancy=True)
    with pytest.raises(SettingsError, match=r"unknown option 'pase_s'.*pace_s, fancy"):
        replace_options(knobs, {"pase_s": 2})
    with pytest.raises(SettingsError, match="option pace_s: Expected `float` > 0"):
        replace_options(knobs, {"pace_s": 0})
    with pytest.raises(SettingsError, match="option fancy: Expected `bool`"):
        replace_options(knobs, {"fancy": "yes"})


def test_the_settings_document_round_trips_and_is_strict() -> None:
    settings, knobs = Settings(heartbeat_s=1.5, dead_after_s=None), _Knobs(pace_s=3.0)
    assert decode_config(encode_config(settings, knobs), Settings(), _Knobs()) == (
        settings,
        knobs,
    )
    assert decode_config("{}", settings, knobs) == (settings, knobs)
    only = decode_config('{"options": {"fancy": true}}', settings, knobs)
    assert only == (settings, _Knobs(pace_s=3.0, fancy=True))
    for document, named in [
        ('{"setings": {}}', "setings"),
        ('{"settings": {"history": "5"}}', "history"),
        ('{"settings": {"nope": 1}}', "nope"),
        ('{"options": {"pace_s": -1}}', "pace_s"),
        ('{"settings": []}', "settings"),
        ("{not json", "--settings-json"),
    ]:
        with pytest.raises(SettingsError, match=named):
            decode_config(document, Settings(), _Knobs())


@pytest.mark.parametrize("rate", [math.nan, math.inf, -1.0, 1e-300, 1e12])
def test_a_rate_no_schedule_can_keep_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be"):
        check_rate(rate)


def test_usable_rates_pass() -> None:
    assert [check_rate(r) for r in (0.0, 0.5, 10.0, 1e6)] == [0.0, 0.5, 10.0, 1e6]


# -- the readiness line ---------------------------------------------------------------------


def test_the_readiness_line_round_trips_and_other_lines_are_not_it() -> None:
    announcement = Announcement(Ready("tcp", "::1", 8890, "9f2c", 1234))
    line = announcement.encode()
    assert line == (
        '{"ready":{"transport":"tcp","host":"::1","port":8890,"epoch":"9f2c","pid":1234}}'
    )
    assert parse_announcement(line + "\n") == announcement
    for other in [
        "serving tcp on 127.0.0.1:8890 url=tcp://127.0.0.1:8890 epoch=9f2c rate=10/s",
        "",
        '{"ready":{"transport":"tcp"}}',  # incomplete
        '{"ready":{"transport":"tcp","host":"h","port":0,"epoch":"9f2c","pid":1}}',
        '{"ready":{"transport":"t","host":"h","port":1,"epoch":"9F","pid":1}}',
        '{"ready":{"transport":"t","host":"h","port":1,"epoch":"ab","pid":1,"x":1}}',
        '{"epoch":"9f2c","seq":1,"value":1,"sent_ns":1}',
    ]:
        assert parse_announcement(other) is None, other


# -- one rejection per error, on every protocol --------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code", "text"),
    [
        (TooManyConnections("limit 3 reached"), 503, 1013, "server full: limit 3 reached"),
        (BadResumeToken("epoch must be hex"), 400, 1008, "bad resume token: epoch must be hex"),
        (FrameTooLarge("line over 9 bytes"), 413, 1009, "too large: line over 9 bytes"),
        (ProtocolError("only sends"), 400, 1008, "protocol error: only sends"),
        (SubscriberOverflow("fell behind"), 503, 1008, "slow consumer: fell behind"),
        (PeerSilent("no hello within 5 s"), 408, 1008, "peer silent: no hello within 5 s"),
        (StreamError(), 500, 1011, "server error"),
    ],
)
def test_each_error_has_one_answer_per_protocol(
    error: StreamError, status: int, code: int, text: str
) -> None:
    assert (rejection(error).http_status, rejection(error).ws_close_code) == (status, code)
    assert rejection_text(error) == text
    assert http_refusal(error) == (status, text + "\n")


def test_a_close_reason_fits_a_close_frame_without_splitting_a_character() -> None:
    reason = ws_close_reason("é" * 100)
    assert len(reason.encode()) <= 123 and reason == "é" * 61


# -- listening sockets ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_listening_sockets_bind_what_the_host_names_on_one_port(host: str) -> None:
    sockets = listening_sockets(host, 0)
    try:
        expected = {info[4][0] for info in socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)}
        assert {sock.getsockname()[0] for sock in sockets} == expected
        port = bound_port(sockets)
        assert port > 0 and {sock.getsockname()[1] for sock in sockets} == {port}
        for sock in sockets:
            assert not sock.getblocking()
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            with socket.create_connection(sock.getsockname()[:2], timeout=5):
                pass  # the kernel completes the handshake: it listens
    finally:
        for sock in sockets:
            sock.close()
    assert BACKLOG >= 1024


def test_a_host_that_does_not_resolve_is_an_os_error() -> None:
    with pytest.raises(OSError):
        listening_sockets("no-such-host.invalid", 0)


@pytest.mark.parametrize(
    ("host", "in_url"),
    [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("localhost", "localhost")],
)
def test_an_ipv6_literal_is_bracketed_in_urls(host: str, in_url: str) -> None:
    assert url_host(host) == in_url


def test_asking_for_one_transport_imports_only_its_own_libraries() -> None:
    """``serve tcp`` must not pay for grpc's and aioquic's imports (servers start by the
    dozen in the experiments)."""
    code = (
        "import sys\n"
        "from transports.registry import get\n"
        "get('tcp')\n"
        "print(sorted(m for m in ('grpc', 'aioquic', 'tornado', 'uvicorn') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
