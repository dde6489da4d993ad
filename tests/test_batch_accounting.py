"""Accounting for a batch at once gives exactly what accounting sample by sample gives.

The client worker hands the ledger one read's samples at a time (issue 13: the client must keep
up at a million samples a second); these tests hold every count, the missing seqs, the
posterior and the seqs sets to the per-sample answer, for server-like batches (consecutive
runs) and for everything else (gaps, duplicates, reorders, corrupted values, epoch changes,
new connections), which must fall back without changing a count.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from model.ledger import DeliveryLedger
from model.posterior import BetaBinomial
from model.sample import Sample, SampleRun, as_run
from model.seqset import SeqSet
from model.source import BernoulliSource

SOURCE = BernoulliSource(0.72, seed=11)


def _sample(epoch: str, seq: int, corrupt: bool = False) -> Sample:
    value = SOURCE.value(seq)
    return Sample(epoch, seq, 1 - value if corrupt else value, seq)


# A read: a run of consecutive seqs (what servers send), possibly mangled.
reads = st.lists(
    st.tuples(
        st.sampled_from(["aa", "bb"]),  # epoch
        st.integers(0, 400),  # first seq
        st.integers(1, 300),  # length
        st.sampled_from(["run", "gap", "swap", "corrupt", "two-epochs"]),
        st.integers(1, 3),  # connection
    ),
    max_size=12,
)


def _batch(epoch: str, start: int, n: int, how: str) -> list[Sample]:
    batch = [_sample(epoch, seq) for seq in range(start, start + n)]
    if how == "gap" and n > 2:
        del batch[n // 2]
    elif how == "swap" and n > 2:
        batch[0], batch[1] = batch[1], batch[0]
    elif how == "corrupt":
        batch[n // 2] = _sample(epoch, start + n // 2, corrupt=True)
    elif how == "two-epochs" and n > 2:
        batch[-1] = _sample("cc", batch[-1].seq)
    return batch


@given(reads)
def test_a_ledger_fed_batches_counts_as_one_fed_samples(
    plan: list[tuple[str, int, int, str, int]],
) -> None:
    by_batch, by_sample = DeliveryLedger(SOURCE), DeliveryLedger(SOURCE)
    for epoch, start, n, how, connection in plan:
        batch = _batch(epoch, start, n, how)
        by_batch.record_batch(batch, connection, as_run(batch))
        for sample in batch:
            by_sample.record(sample, connection)
    assert by_batch.counts() == by_sample.counts()
    assert by_batch.epochs == by_sample.epochs
    for epoch in by_sample.epochs:
        assert by_batch.missing(epoch) == by_sample.missing(epoch)
        assert by_batch.counts(epoch) == by_sample.counts(epoch)
    posterior, expected = by_batch.posterior, by_sample.posterior
    assert (posterior.successes, posterior.failures) == (expected.successes, expected.failures)
    assert by_batch.posterior_error() == by_sample.posterior_error()


def test_a_server_batch_is_accounted_at_once() -> None:
    ledger = DeliveryLedger(SOURCE)
    batch = [_sample("aa", seq) for seq in range(1000, 3000)]
    ledger.record_batch(batch, 1)
    counts = ledger.counts()
    assert (counts.delivered, counts.lost, counts.duplicated, counts.corrupted) == (2000, 0, 0, 0)
    assert ledger.posterior.successes == SOURCE.successes(1000, 3000)
    ledger.record_batch(batch, 2)  # the same batch again after a reconnect: duplicates
    assert ledger.counts().duplicated == 2000
    assert ledger.posterior.successes == SOURCE.successes(1000, 3000)


def test_a_caller_s_run_that_does_not_fit_the_batch_is_not_trusted() -> None:
    ledger = DeliveryLedger(SOURCE)
    batch = [_sample("aa", seq) for seq in range(10)]
    ledger.record_batch(batch[:5], 1, SampleRun("aa", 0, 10))  # the run of the untruncated batch
    assert ledger.counts().delivered == 5


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=60))
def test_seqset_add_range_adds_all_or_nothing(ranges: list[tuple[int, int]]) -> None:
    model: set[int] = set()
    seqs = SeqSet()
    for start, length in ranges:
        members = set(range(start, start + length))
        added = seqs.add_range(start, start + length)
        assert added == (not members & model)
        if added:
            model |= members
        assert len(seqs) == len(model)
        assert [i for a, b in seqs.intervals() for i in range(a, b)] == sorted(model)


def test_seqset_add_range_keeps_the_interval_bound() -> None:
    seqs = SeqSet(max_intervals=3)
    for start in range(0, 100, 10):
        assert seqs.add_range(start, start + 2)
    assert len(seqs.intervals()) == 3


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 50), st.sampled_from("ab"))))
def test_posterior_update_run_counts_as_updates_do(runs: list[tuple[int, int, str]]) -> None:
    at_once, one_by_one = BetaBinomial(), BetaBinomial()
    for start, length, epoch in runs:
        batch = [_sample(epoch, seq) for seq in range(start, start + length)]
        counted = at_once.update_run(epoch, start, start + length, sum(s.value for s in batch))
        if not counted:
            for sample in batch:
                at_once.update(sample)
        for sample in batch:
            one_by_one.update(sample)
    assert (at_once.successes, at_once.failures) == (one_by_one.successes, one_by_one.failures)


def test_as_run_names_consecutive_seqs_of_one_epoch_only() -> None:
    run = [_sample("aa", seq) for seq in range(5, 9)]
    assert as_run(run) == SampleRun("aa", 5, 9)
    assert as_run([]) is None
    assert as_run(run[:1]) == SampleRun("aa", 5, 6)
    swapped = [run[1], run[0], *run[2:]]
    assert as_run(swapped) is None
    # The ends agree with a run, the middle does not.
    assert as_run([run[0], _sample("aa", 7), _sample("aa", 6), run[3]]) is None
    assert as_run([run[0], _sample("bb", 6), *run[2:]]) is None
