"""What one client received, judged against what the server sent.

Definitions after Jepsen's queue checkers, per epoch:

- delivered: distinct seqs received;
- lost: a seq the server sent that the client never received although it received a later seq
  of the same epoch (the tail not yet received is unseen, not lost);
- duplicated: a receipt of a seq already received;
- reordered: a first receipt after a higher seq of the same epoch *on the same connection*
  (replays across a reconnect count as duplicates, not reorders);
- corrupted: a value that differs from ``BernoulliSource.value(seq)``.

Where each epoch is expected to start: in the first epoch the client sees, at the first seq it
received (it joined a live stream); in every later epoch at seq 0, because a client that follows
a restarted server should receive the new run from its beginning. Pass ``first_seq`` to judge
against another start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from model.posterior import BetaBinomial
from model.sample import Sample, SampleRun, as_run
from model.seqset import SeqSet
from model.source import BernoulliSource

__all__ = ["DeliveryCounts", "DeliveryLedger", "PosteriorError"]


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0

    def __add__(self, other: DeliveryCounts) -> DeliveryCounts:
        return DeliveryCounts(
            self.delivered + other.delivered,
            self.lost + other.lost,
            self.duplicated + other.duplicated,
            self.reordered + other.reordered,
            self.corrupted + other.corrupted,
        )


@dataclass(frozen=True, slots=True)
class PosteriorError:
    """The client's posterior against the ground truth over every sample it should have."""

    mean_error: float
    alpha_error: float
    beta_error: float


@dataclass
class _Epoch:
    start: int
    received: SeqSet = field(default_factory=SeqSet)
    highest: int = -1
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0


class DeliveryLedger:
    """Counts deliveries per epoch; feed it every sample a client yields, with its connection."""

    def __init__(self, source: BernoulliSource, first_seq: dict[str, int] | None = None) -> None:
        self._source = source
        self._first_seq = dict(first_seq or {})
        self._epochs: dict[str, _Epoch] = {}
        # epoch -> highest seq seen on the current connection. Only the current connection's
        # are kept: reorders count within a connection, and connections only move forward,
        # so a client that reconnects thousands of times does not grow this.
        self._connection = 0
        self._highest_on_connection: dict[str, int] = {}
        # The client's posterior as a client keeps it (bounded: see model.posterior). The
        # ledger itself keeps every epoch's seqs: it is the judge, its counts must be exact,
        # and it lives for one bounded experiment run, never in ``listen``.
        self.posterior = BetaBinomial()

    @property
    def epochs(self) -> list[str]:
        """The epochs seen, in order of first receipt."""
        return list(self._epochs)

    def record(self, sample: Sample, connection: int = 0) -> None:
        ep = self._epochs.get(sample.epoch)
        if ep is None:
            default = sample.seq if not self._epochs else 0
            ep = self._epochs[sample.epoch] = _Epoch(self._first_seq.get(sample.epoch, default))
        self.posterior.update(sample)
        if sample.value != self._source.value(sample.seq):
            ep.corrupted += 1
        if connection != self._connection:
            self._connection = connection
            self._highest_on_connection.clear()
        highest_here = self._highest_on_connection.get(sample.epoch, -1)
        if not ep.received.add(sample.seq):
            ep.duplicated += 1
        elif sample.seq < highest_here:
            ep.reordered += 1
        if sample.seq > highest_here:
            self._highest_on_connection[sample.epoch] = sample.seq
        ep.highest = max(ep.highest, sample.seq)

    def record_batch(
        self, samples: Sequence[Sample], connection: int = 0, run: SampleRun | None = None
    ) -> None:
        """``record`` each of ``samples`` (one read's worth, in order), with the same counts.

        A batch that is one epoch's consecutive seqs, all new and above what this connection
        has delivered (a server's batch, the common case) is accounted at once: one interval
        added, the values compared with the source's as bytes, the posterior given a count.
        Anything else goes sample by sample. ``run``: what ``as_run(samples)`` gives, when
        the caller has it already (the shared client does).
        """
        if run is None or run.stop - run.start != len(samples):
            run = as_run(samples) if len(samples) > 1 else None
        if run is None or not self._record_run(samples, run.epoch, run.start, run.stop, connection):
            for sample in samples:
                self.record(sample, connection)

    def _record_run(
        self, samples: Sequence[Sample], epoch: str, start: int, stop: int, connection: int
    ) -> bool:
        """Account for a run at once; False (nothing counted yet) when it must go one by one."""
        if connection != self._connection:
            self._connection = connection
            self._highest_on_connection.clear()
        if start <= self._highest_on_connection.get(epoch, -1):
            return False  # a reorder on this connection: counted sample by sample
        try:
            values = bytes([s.value for s in samples])
        except ValueError:
            return False  # a value no byte holds: certainly corrupted, counted one by one
        ep = self._epochs.get(epoch)
        if ep is None:
            default = start if not self._epochs else 0
            ep = self._epochs[epoch] = _Epoch(self._first_seq.get(epoch, default))
        if not ep.received.add_range(start, stop):
            return False  # some were received before (duplicates)
        expected = self._source.value_bytes(start, stop)
        if values != expected:
            ep.corrupted += sum(a != b for a, b in zip(values, expected, strict=True))
        successes = len(values) - values.count(0)  # as record() counts: any non-zero value
        if not self.posterior.update_run(epoch, start, stop, successes):
            for sample in samples:
                self.posterior.update(sample)
        self._highest_on_connection[epoch] = stop - 1
        ep.highest = max(ep.highest, stop - 1)
        return True

    def counts(self, epoch: str | None = None) -> DeliveryCounts:
        """Counts for one epoch, or summed over all epochs."""
        if epoch is not None:
            return self._counts(self._epochs[epoch])
        total = DeliveryCounts()
        for ep in self._epochs.values():
            total = total + self._counts(ep)
        return total

    @staticmethod
    def _counts(ep: _Epoch) -> DeliveryCounts:
        expected = max(0, ep.highest + 1 - ep.start)
        in_range = ep.received.count_between(ep.start, ep.highest + 1)
        return DeliveryCounts(
            delivered=len(ep.received),
            lost=expected - in_range,
            duplicated=ep.duplicated,
            reordered=ep.reordered,
            corrupted=ep.corrupted,
        )

    def missing(self, epoch: str) -> list[int]:
        """The lost seqs of one epoch, in order."""
        ep = self._epochs[epoch]
        out: list[int] = []
        cursor = ep.start
        for a, b in ep.received.intervals():
            out.extend(range(cursor, min(a, ep.highest + 1)))
            cursor = max(cursor, b)
        return out

    def truth(self) -> BetaBinomial:
        """The posterior over every sample the server sent in each epoch's expected range."""
        truth = BetaBinomial(self.posterior.prior_alpha, self.posterior.prior_beta)
        for ep in self._epochs.values():
            n = max(0, ep.highest + 1 - ep.start)
            s = self._source.successes(ep.start, ep.highest + 1)
            truth.successes += s
            truth.failures += n - s
        return truth

    def posterior_error(self) -> PosteriorError:
        truth = self.truth()
        return PosteriorError(
            mean_error=abs(self.posterior.mean - truth.mean),
            alpha_error=self.posterior.alpha - truth.alpha,
            beta_error=self.posterior.beta - truth.beta,
        )
