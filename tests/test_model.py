"""The pure core: wire codec, source, posterior, seq sets and the delivery ledger."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import beta as beta_dist

from model.errors import MalformedSample
from model.ledger import DeliveryLedger
from model.posterior import BetaBinomial
from model.sample import Sample, decode_sample, decode_samples, encode_sample, encode_samples
from model.seqset import SeqSet
from model.source import BernoulliSource

samples = st.builds(
    Sample,
    epoch=st.text("0123456789abcdef", min_size=1, max_size=64),
    seq=st.integers(0, 2**63 - 1),
    value=st.integers(0, 1),
    sent_ns=st.integers(0, 2**63 - 1),
)


@given(samples)
def test_wire_round_trip(sample: Sample) -> None:
    data = encode_sample(sample)
    assert decode_sample(data) == sample
    assert decode_sample(data.decode()) == sample
    assert list(json.loads(data)) == ["epoch", "seq", "value", "sent_ns"]


def test_wire_form_is_compact_json_with_exactly_the_four_keys() -> None:
    data = encode_sample(Sample("9f2c", 17, 1, 123456789))
    assert data == b'{"epoch":"9f2c","seq":17,"value":1,"sent_ns":123456789}'


@given(st.lists(samples, max_size=20))
def test_array_round_trip(batch: list[Sample]) -> None:
    assert decode_samples(encode_samples(batch)) == batch


GOOD = {"epoch": "ab", "seq": 1, "value": 1, "sent_ns": 5}


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({k: v for k, v in GOOD.items() if k != "seq"}, "missing"),
        ({**GOOD, "extra": 1}, "unknown field"),
        ({**GOOD, "value": 2}, "value"),
        ({**GOOD, "value": True}, "bool"),
        ({**GOOD, "seq": -1}, "seq"),
        ({**GOOD, "seq": 1.0}, "float"),
        ({**GOOD, "seq": "1"}, "str"),
        ({**GOOD, "epoch": ""}, "epoch"),
        ({**GOOD, "epoch": "XYZ"}, "epoch"),
        ({**GOOD, "epoch": 7}, "epoch"),
        # The pattern must match the whole epoch: "$" alone would let a final newline in.
        ({**GOOD, "epoch": "ab\n"}, "epoch"),
        ({**GOOD, "epoch": "\nab"}, "epoch"),
        ({**GOOD, "sent_ns": -5}, "sent_ns"),
        ([GOOD], "array"),
        ("text", "string"),
        (None, "null"),
    ],
)
def test_decoding_rejects_malformed_payloads(payload: object, why: str) -> None:
    with pytest.raises(MalformedSample, match="malformed sample"):
        decode_sample(json.dumps(payload))


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b'{"epoch":"ab"} trailing', b"[]"])
def test_decoding_rejects_broken_json(raw: bytes) -> None:
    with pytest.raises(MalformedSample):
        decode_sample(raw)


def test_an_array_with_one_bad_epoch_is_rejected_whole() -> None:
    with pytest.raises(MalformedSample):
        decode_samples(json.dumps([GOOD, {**GOOD, "seq": 2, "epoch": "ab\n"}]))


def test_source_is_a_pure_function_of_seed_and_seq() -> None:
    a, b = BernoulliSource(0.72, seed=3), BernoulliSource(0.72, seed=3)
    assert [a.value(s) for s in range(1000)] == [b.value(s) for s in range(1000)]
    other = BernoulliSource(0.72, seed=4)
    assert [a.value(s) for s in range(1000)] != [other.value(s) for s in range(1000)]
    assert a.successes(10, 20) == sum(a.value(s) for s in range(10, 20))


def test_source_frequency_matches_p() -> None:
    n = 50_000
    for p in (0.0, 0.1, 0.72, 1.0):
        freq = BernoulliSource(p, seed=11).successes(0, n) / n
        assert abs(freq - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-9


def test_source_rejects_p_outside_unit_interval() -> None:
    with pytest.raises(ValueError):
        BernoulliSource(1.5)


def test_posterior_matches_closed_form() -> None:
    post = BetaBinomial()
    values = [1, 1, 0, 1, 0, 1, 1, 1]
    for seq, v in enumerate(values):
        assert post.update(Sample("e", seq, v, 0))
    s, f = sum(values), len(values) - sum(values)
    assert (post.alpha, post.beta) == (2 + s, 2 + f)
    assert post.mean == pytest.approx((2 + s) / (4 + len(values)))
    low, high = post.interval()
    assert low == pytest.approx(beta_dist.ppf(0.025, 2 + s, 2 + f))
    assert high == pytest.approx(beta_dist.ppf(0.975, 2 + s, 2 + f))
    est = post.estimate()
    assert est.ci_low < est.mean < est.ci_high


def test_posterior_prior_is_beta_2_2() -> None:
    post = BetaBinomial()
    assert (post.alpha, post.beta, post.mean) == (2, 2, 0.5)


def test_duplicate_never_moves_the_posterior() -> None:
    post = BetaBinomial()
    post.update(Sample("e", 0, 1, 0))
    before = post.estimate()
    assert not post.update(Sample("e", 0, 1, 99))
    assert post.estimate() == before
    assert post.update(Sample("f", 0, 1, 0))  # same seq, other epoch: a different sample


@given(st.lists(st.integers(0, 200), max_size=300))
def test_seqset_behaves_like_a_set(values: list[int]) -> None:
    model: set[int] = set()
    seqs = SeqSet()
    for v in values:
        assert seqs.add(v) == (v not in model)
        model.add(v)
    assert len(seqs) == len(model)
    assert all(v in seqs for v in model)
    assert seqs.count_between(50, 150) == len([v for v in model if 50 <= v < 150])
    flat = [i for a, b in seqs.intervals() for i in range(a, b)]
    assert flat == sorted(model)
    assert all(
        b < c for (_, b), (c, _) in zip(seqs.intervals(), seqs.intervals()[1:], strict=False)
    )


SOURCE = BernoulliSource(0.72, seed=5)


def _sample(seq: int, epoch: str = "aa") -> Sample:
    return Sample(epoch, seq, SOURCE.value(seq), 0)


@given(
    start=st.integers(0, 50),
    n=st.integers(1, 100),
    drops=st.sets(st.integers(0, 99)),
    dups=st.lists(st.integers(0, 99), max_size=20),
)
def test_ledger_counts_losses_and_duplicates(
    start: int, n: int, drops: set[int], dups: list[int]
) -> None:
    ledger = DeliveryLedger(SOURCE)
    sent = list(range(start, start + n))
    kept = [s for i, s in enumerate(sent) if i not in drops or i == 0]
    for s in kept:
        ledger.record(_sample(s), connection=1)
    replays = [kept[i % len(kept)] for i in dups]
    for s in replays:
        ledger.record(_sample(s), connection=2)  # replays after a reconnect
    counts = ledger.counts()
    assert counts.delivered == len(kept)
    assert counts.lost == (max(kept) - start + 1) - len(kept)  # the unseen tail is not lost
    assert counts.duplicated == len(replays)
    assert counts.reordered == 0  # replays on a new connection are duplicates, not reorders
    assert counts.corrupted == 0
    assert ledger.missing("aa") == sorted(set(range(start, max(kept) + 1)) - set(kept))
    # The posterior counts each sample once; its error against the truth comes from losses only.
    err = ledger.posterior_error()
    lost_successes = sum(SOURCE.value(s) for s in ledger.missing("aa"))
    assert err.alpha_error == -lost_successes
    assert err.beta_error == -(counts.lost - lost_successes)


def test_ledger_reorder_is_per_connection() -> None:
    ledger = DeliveryLedger(SOURCE)
    for seq in (0, 1, 3, 2, 4):
        ledger.record(_sample(seq), connection=1)
    assert ledger.counts().reordered == 1
    assert ledger.counts().lost == 0


def test_ledger_detects_corruption() -> None:
    ledger = DeliveryLedger(SOURCE)
    good = _sample(0)
    ledger.record(Sample(good.epoch, 0, 1 - good.value, 0))
    assert ledger.counts().corrupted == 1


def test_ledger_expects_later_epochs_from_their_start() -> None:
    ledger = DeliveryLedger(SOURCE)
    for seq in range(10, 20):  # joined the first epoch live at seq 10: nothing lost
        ledger.record(_sample(seq, "aa"))
    for seq in range(5, 9):  # after a restart, seqs 0-4 of the new epoch never arrived
        ledger.record(_sample(seq, "bb"), connection=2)
    assert ledger.epochs == ["aa", "bb"]
    assert ledger.counts("aa").lost == 0
    assert ledger.counts("bb").lost == 5
    assert ledger.counts().delivered == 14


def test_decoding_builds_plain_samples_and_checks_each_epoch() -> None:
    first, second = {**GOOD, "epoch": "ab"}, {**GOOD, "epoch": "cd", "seq": 2}
    decoded = decode_samples(json.dumps([first, second]))
    assert [type(s) for s in decoded] == [Sample, Sample]
    assert decoded == [Sample("ab", 1, 1, 5), Sample("cd", 2, 1, 5)]
    # A well-formed epoch seen before does not let a malformed one through after it.
    for bad in ("AB", "", "ab\n", "x" * 65):
        with pytest.raises(MalformedSample, match="malformed sample"):
            decode_samples(json.dumps([first, {**second, "epoch": bad}]))
        with pytest.raises(MalformedSample, match="malformed sample"):
            decode_sample(json.dumps({**first, "epoch": bad}))
        assert decode_sample(json.dumps(first)) == Sample("ab", 1, 1, 5)


def test_an_array_with_an_unknown_key_in_one_sample_is_rejected_whole() -> None:
    with pytest.raises(MalformedSample, match="malformed sample"):
        decode_samples(json.dumps([GOOD, {**GOOD, "seq": 2, "extra": 1}]))
