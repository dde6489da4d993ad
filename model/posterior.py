"""The Beta-Binomial posterior over the source's success probability.

With prior Beta(a0, b0) and data of s successes and f failures, the posterior is
Beta(a0 + s, b0 + f). Each ``(epoch, seq)`` counts once: a duplicate never moves it.

Memory is bounded whatever a server sends. The seqs seen are kept for the :data:`RECENT_EPOCHS`
epochs that received a sample most recently (the current one and those a resume or a late
replay could still bring back), each as at most :data:`MAX_GAPS` intervals. A server that
changes epoch on every sample therefore costs a fixed amount, not an entry per sample. The
price, in cases no server of this suite produces: a sample of an epoch evicted from that set
(one not seen for ``RECENT_EPOCHS`` epoch changes) counts as new, since nothing remembers it;
a sample in an epoch's oldest gap after more than ``MAX_GAPS`` gaps counts as a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.sample import Sample
from model.seqset import SeqSet

__all__ = ["MAX_GAPS", "RECENT_EPOCHS", "BetaBinomial", "Estimate"]

#: Epochs whose seqs the posterior remembers (the most recently used ones).
RECENT_EPOCHS = 16
#: Gaps remembered per epoch (each an interval of a :class:`SeqSet`).
MAX_GAPS = 4096


@dataclass(frozen=True, slots=True)
class Estimate:
    """A snapshot of the posterior: its parameters, mean and 95% equal-tailed interval."""

    alpha: float
    beta: float
    mean: float
    ci_low: float
    ci_high: float


@dataclass
class BetaBinomial:
    """Posterior Beta(alpha, beta) updated by each distinct ``(epoch, seq)`` exactly once."""

    prior_alpha: float = 2.0
    prior_beta: float = 2.0
    successes: int = 0
    failures: int = 0
    _seen: dict[str, SeqSet] = field(default_factory=dict, repr=False)

    @property
    def alpha(self) -> float:
        return self.prior_alpha + self.successes

    @property
    def beta(self) -> float:
        return self.prior_beta + self.failures

    @property
    def mean(self) -> float:
        """The posterior mean alpha / (alpha + beta) (not the raw success frequency)."""
        return self.alpha / (self.alpha + self.beta)

    def interval(self, mass: float = 0.95) -> tuple[float, float]:
        """The equal-tailed credible interval holding ``mass`` of the posterior."""
        # Imported here: scipy costs half a second to import, and servers never need it.
        from scipy.stats import beta as beta_dist

        tail = (1.0 - mass) / 2.0
        low, high = beta_dist.ppf([tail, 1.0 - tail], self.alpha, self.beta)
        return float(low), float(high)

    @property
    def epochs_remembered(self) -> int:
        """How many epochs' seqs are held now (at most :data:`RECENT_EPOCHS`)."""
        return len(self._seen)

    def update(self, sample: Sample) -> bool:
        """Count ``sample`` unless its ``(epoch, seq)`` was counted before; say if it counted."""
        if not self._seqs(sample.epoch).add(sample.seq):
            return False
        if sample.value:
            self.successes += 1
        else:
            self.failures += 1
        return True

    def update_run(self, epoch: str, start: int, stop: int, successes: int) -> bool:
        """Count the samples ``start <= seq < stop`` of ``epoch`` at once, ``successes`` of
        them 1, if none was counted before, and return True; else count nothing and return
        False (then update them one by one)."""
        if not self._seqs(epoch).add_range(start, stop):
            return False
        self.successes += successes
        self.failures += stop - start - successes
        return True

    def _seqs(self, epoch: str) -> SeqSet:
        """The seqs counted in ``epoch``, made the most recently used."""
        seen_by_epoch = self._seen
        seen = seen_by_epoch.get(epoch)
        if seen is None:
            if len(seen_by_epoch) >= RECENT_EPOCHS:
                # dicts keep insertion order and each use re-inserts: the first is the oldest.
                del seen_by_epoch[next(iter(seen_by_epoch))]
            seen = seen_by_epoch[epoch] = SeqSet(MAX_GAPS)
        elif next(reversed(seen_by_epoch)) != epoch:
            # A return to an older epoch makes it the most recent (rare: no cost per sample).
            seen_by_epoch[epoch] = seen_by_epoch.pop(epoch)
        return seen

    def estimate(self) -> Estimate:
        low, high = self.interval()
        return Estimate(self.alpha, self.beta, self.mean, low, high)
