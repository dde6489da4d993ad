"""Shared transport pieces without sockets: backoff, resume placement and tokens, the hub."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.errors import BadResumeToken, SubscriberOverflow, TooManyConnections
from model.sample import Sample
from transports.backoff import Backoff
from transports.hub import Hub
from transports.resume import ResumeToken, parse_event_id, parse_query, start_seq
from transports.settings import Settings


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
    [{"epoch": "aa"}, {"since": "1"}, {"epoch": "aa", "since": "x"}, {"epoch": "A!", "since": "1"}],
)
def test_bad_queries_are_rejected(query: dict[str, str]) -> None:
    with pytest.raises(BadResumeToken):
        parse_query(query)


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
