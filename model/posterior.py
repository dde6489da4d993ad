"""The Beta-Binomial posterior over the source's success probability.

With prior Beta(a0, b0) and data of s successes and f failures, the posterior is
Beta(a0 + s, b0 + f). Each ``(epoch, seq)`` counts once: a duplicate never moves it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.sample import Sample
from model.seqset import SeqSet

__all__ = ["BetaBinomial", "Estimate"]


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

    def update(self, sample: Sample) -> bool:
        """Count ``sample`` unless its ``(epoch, seq)`` was counted before; say if it counted."""
        seen = self._seen.get(sample.epoch)
        if seen is None:
            seen = self._seen[sample.epoch] = SeqSet()
        if not seen.add(sample.seq):
            return False
        if sample.value:
            self.successes += 1
        else:
            self.failures += 1
        return True

    def estimate(self) -> Estimate:
        low, high = self.interval()
        return Estimate(self.alpha, self.beta, self.mean, low, high)
