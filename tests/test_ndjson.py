"""The tcp transport's pure NDJSON framing: splitter, hello, heartbeat/error lines, decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.errors import (
    BadResumeToken,
    FrameTooLarge,
    MalformedSample,
    ProtocolError,
    ServerRefused,
)
from model.sample import Sample, encode_sample
from transports.ndjson import (
    Heartbeat,
    LineSplitter,
    ServerError,
    ServerLine,
    decode_server_line,
    decode_server_lines,
    encode_error,
    encode_heartbeat,
    encode_hello,
    encode_sample_lines,
    parse_client_line,
    parse_hello,
    server_batch,
    server_block,
)
from transports.resume import ResumeToken

SAMPLES = [Sample("9f2c", seq, seq % 2, 1_000 + seq) for seq in range(4)]


def _split_everywhere(data: bytes, limit: int) -> list[tuple[int, list[bytes]]]:
    """The lines got when ``data`` arrives in two pieces, cut at every offset."""
    results = []
    for cut in range(len(data) + 1):
        splitter = LineSplitter(limit)
        results.append((cut, splitter.feed(data[:cut]) + splitter.feed(data[cut:])))
    return results


def test_lines_come_out_whole_wherever_the_input_is_cut() -> None:
    data = b'{"a":1}\n{"b":2}\n\n{"c":3}\n'
    expected = [b'{"a":1}', b'{"b":2}', b"", b'{"c":3}']
    for cut, lines in _split_everywhere(data, 64):
        assert lines == expected, cut


def test_byte_by_byte_equals_one_chunk() -> None:
    data = encode_sample_lines(SAMPLES)
    splitter = LineSplitter(1024)
    lines = [line for byte in data for line in splitter.feed(bytes([byte]))]
    assert lines == LineSplitter(1024).feed(data) == [encode_sample(s) for s in SAMPLES]


def test_an_unfinished_line_is_held_back() -> None:
    splitter = LineSplitter(64)
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert splitter.pending == 4
    assert splitter.feed(b":2}") == []
    assert splitter.feed(b"\n") == [b'{"b":2}']
    assert splitter.pending == 0


def test_crlf_ends_a_line_and_a_lone_cr_is_data() -> None:
    data = b"{}\r\nx\ry\n\r\r\n"
    for cut, lines in _split_everywhere(data, 64):
        assert lines == [b"{}", b"x\ry", b"\r"], cut


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_line_of_exactly_the_limit_passes(ending: bytes) -> None:
    body = b"x" * (8 - len(ending) + 1)  # the \r counts toward the limit of 8
    for cut, lines in _split_everywhere(body + ending, 8):
        assert lines == [body], cut


@pytest.mark.parametrize("data", [b"x" * 9 + b"\n", b"x" * 8 + b"\r\n", b"ok\n" + b"y" * 9])
def test_a_line_over_the_limit_raises_wherever_the_input_is_cut(data: bytes) -> None:
    for cut in range(len(data) + 1):
        splitter = LineSplitter(8)
        with pytest.raises(FrameTooLarge):
            splitter.feed(data[:cut])
            splitter.feed(data[cut:])


def test_the_limit_trips_on_the_first_byte_over_not_at_the_newline() -> None:
    splitter = LineSplitter(8)
    for _ in range(8):
        assert splitter.feed(b"x") == []
    with pytest.raises(FrameTooLarge, match="longer than 8 bytes"):
        splitter.feed(b"x")


def test_the_limit_applies_to_a_long_tail_after_complete_lines() -> None:
    with pytest.raises(FrameTooLarge):
        LineSplitter(8).feed(b"a\n" + b"b" * 9)


@given(
    st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_any_chunking_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    splitter = LineSplitter(16)
    got: list[bytes] = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        got += splitter.feed(data[start:cut])
        start = cut
    assert got == [line.removesuffix(b"\r") for line in lines]
    assert splitter.pending == 0


def test_sample_lines_are_the_wire_form_one_per_line() -> None:
    assert encode_sample_lines([]) == b""
    assert encode_sample_lines(SAMPLES) == b"".join(encode_sample(s) + b"\n" for s in SAMPLES)


# --- hello ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "token"),
    [
        (b"{}", None),
        (b" { } ", None),
        (b'{"epoch":"9f2c","since":17}', ResumeToken("9f2c", 17)),
        (b'{"since":-1, "epoch":"ab"}', ResumeToken("ab", -1)),
    ],
)
def test_hello_parses(line: bytes, token: ResumeToken | None) -> None:
    assert parse_hello(line) == token


@pytest.mark.parametrize("token", [None, ResumeToken("9f2c", 0), ResumeToken("ab", 2**40)])
def test_hello_round_trips(token: ResumeToken | None) -> None:
    encoded = encode_hello(token)
    assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
    assert parse_hello(encoded[:-1]) == token


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"epoch":"9f2c"}', "both epoch and since"),
        (b'{"since":3}', "both epoch and since"),
        (b'{"epoch":"XYZ","since":3}', "hex"),
        (b'{"epoch":"ab","since":-2}', "since must be"),
    ],
)
def test_hello_with_an_unusable_token_is_a_bad_resume_token(line: bytes, message: str) -> None:
    with pytest.raises(BadResumeToken, match=message):
        parse_hello(line)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage",
        b"[]",
        b"null",
        b'{"epoch":null,"since":null}',
        b'{"epoch":"ab","since":true}',
        b'{"epoch":"ab","since":"3"}',
        b'{"epoch":"ab","since":1.0}',
        b'{"epoch":"ab","since":1,"extra":0}',
        b"{}{}",
        b"\xff\xfe",
    ],
)
def test_anything_else_is_not_a_hello(line: bytes) -> None:
    with pytest.raises(ProtocolError, match="hello must be"):
        parse_hello(line)


def test_after_the_hello_a_client_may_send_only_heartbeats() -> None:
    assert parse_client_line(encode_heartbeat(42).rstrip(b"\n")) == 42
    for line in (b"{}", b"", b'{"heartbeat":-1}', b'{"heartbeat":1,"x":0}', b"hello?"):
        with pytest.raises(ProtocolError, match="only"):
            parse_client_line(line)


# --- lines from the server -----------------------------------------------------------------


def test_heartbeat_and_error_lines_classify() -> None:
    assert decode_server_line(encode_heartbeat(123).rstrip(b"\n")) == Heartbeat(123)
    message = 'bad hello: got "x"\n and more'
    error = encode_error(message)
    assert error.count(b"\n") == 1  # the message's own newline is escaped
    assert decode_server_line(error[:-1]) == ServerError(message)
    assert decode_server_line(encode_sample(SAMPLES[1])) == SAMPLES[1]


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"{}",
        b'{"heartbeat":-1}',
        b'{"heartbeat":1,"x":2}',
        b'{"error":3}',
        b'{"error":"x","heartbeat":1}',
        b'{"epoch":"9f2c","seq":0,"value":2,"sent_ns":1}',
    ],
)
def test_other_lines_from_the_server_are_malformed(line: bytes) -> None:
    with pytest.raises(MalformedSample):
        decode_server_line(line)


def _one_by_one(lines: list[bytes]) -> list[ServerLine] | type[MalformedSample]:
    try:
        return [decode_server_line(line) for line in lines]
    except MalformedSample:
        return MalformedSample


def _batched(lines: list[bytes]) -> list[ServerLine] | type[MalformedSample]:
    try:
        return list(decode_server_lines(lines))
    except MalformedSample:
        return MalformedSample


a, b, c = (encode_sample(s) for s in SAMPLES[:3])
A_HEAD, _, A_TAIL = a.partition(b",")  # one sample cut at a comma into two lines
HEARTBEAT = encode_heartbeat(5).rstrip(b"\n")


#: Runs of lines a batched decoder could get wrong.
MIXED_LINES = [
    [a],
    [a, b, c],
    [a, HEARTBEAT, b],
    [a, encode_error("bye")[:-1]],
    [a, b""],
    [a, b" " + b],
    # A sample spread over two lines, balanced by a line holding two samples: the joined
    # text decodes as three samples, as many as there are lines. Still malformed.
    [A_HEAD, A_TAIL, b + b"," + c],
    [b + b"," + c, A_HEAD, A_TAIL],
    [a + b",", b],
    [a + b"]", b"[" + b],
]


@pytest.mark.parametrize("lines", [[], *MIXED_LINES])
def test_batched_decoding_is_as_strict_as_line_by_line(lines: list[bytes]) -> None:
    assert _batched(lines) == _one_by_one(lines)


def test_batched_decoding_gives_the_lines_before_a_bad_one() -> None:
    decoded = iter(decode_server_lines([a, b, b"junk", c]))
    assert [next(decoded), next(decoded)] == SAMPLES[:2]
    with pytest.raises(MalformedSample):
        next(decoded)


def test_a_batch_keeps_the_samples_before_whatever_ended_it() -> None:
    a, b = Sample("ab", 1, 1, 10), Sample("ab", 2, 0, 20)
    lines = [encode_sample(a), encode_sample(b)]
    assert server_batch(lines, "stream") == ([a, b], None)
    beat = encode_heartbeat(5).rstrip(b"\n")
    assert server_batch([lines[0], beat, lines[1]], "stream") == ([a, b], None)
    samples, error = server_batch([lines[0], encode_error("going away").rstrip(b"\n")], "stream")
    assert samples == [a] and isinstance(error, ServerRefused)
    assert str(error) == "server closed the stream: going away"
    samples, error = server_batch([lines[0], b"{not json", lines[1]], "connection")
    assert samples == [a] and isinstance(error, ProtocolError)
    assert server_batch([], "stream") == ([], None)


def _outcome(pair: tuple[list[Sample], Exception | None]) -> tuple[list[Sample], str | None]:
    samples, error = pair
    return samples, None if error is None else f"{type(error).__name__}: {error}"


@pytest.mark.parametrize("lines", [*MIXED_LINES, [a + b"\r", b + b"\r"], [b"{not json", a]])
def test_a_block_decodes_as_its_lines_do(lines: list[bytes]) -> None:
    """What tcp and webtransport read (a chunk's complete lines, unsplit) decodes to what the
    same lines give one by one: the samples before whatever ended them, and that error."""
    data = b"\n".join(lines) + b"\n"
    block = LineSplitter(1 << 20).feed_block(data)
    assert block is not None
    by_lines = server_batch(LineSplitter(1 << 20).feed(data), "stream")
    assert _outcome(server_block(block, "stream")) == _outcome(by_lines)
