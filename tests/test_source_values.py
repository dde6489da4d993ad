"""BernoulliSource.values: the publisher's batch form of value()."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from model.source import BernoulliSource


@given(
    p=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**70),
    start=st.integers(0, 2**66),
    length=st.integers(0, 300),
)
def test_values_equal_value_per_seq(p: float, seed: int, start: int, length: int) -> None:
    source = BernoulliSource(p, seed)
    assert source.values(start, start + length) == [
        source.value(seq) for seq in range(start, start + length)
    ]


def test_values_of_an_empty_or_reversed_range_are_empty() -> None:
    source = BernoulliSource(0.5, 1)
    assert source.values(10, 10) == []
    assert source.values(10, 5) == []
    assert source.values(0, 1000).count(1) == source.successes(0, 1000)


@given(
    p=st.floats(0.0, 1.0),
    seed=st.integers(-(2**70), 2**70),
    start=st.one_of(st.integers(0, 2**20), st.integers(2**64 - 5000, 2**64 + 10)),
    length=st.integers(120, 3000),
)
def test_long_ranges_computed_by_numpy_equal_value_per_seq(
    p: float, seed: int, start: int, length: int
) -> None:
    source = BernoulliSource(p, seed)
    expected = [source.value(seq) for seq in range(start, start + length)]
    assert source.values(start, start + length) == expected
    assert source.value_bytes(start, start + length) == bytes(expected)
    assert source.successes(start, start + length) == sum(expected)


def test_value_bytes_across_chunks_equal_value_per_seq() -> None:
    source = BernoulliSource(0.3, 7)
    got = source.value_bytes(10, 10 + (1 << 18) + 77)
    assert got == bytes(source.value(seq) for seq in range(10, 10 + (1 << 18) + 77))
