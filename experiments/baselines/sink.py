"""What a pusher's reader does with what it reads: the same work as the client worker."""

from __future__ import annotations

from model.ledger import DeliveryLedger
from model.sample import Sample
from model.source import BernoulliSource

__all__ = ["Sink"]


class Sink:
    """Records every sample in a ledger; counts those inside the measurement window."""

    __slots__ = ("in_window", "ledger", "received", "window_open")

    def __init__(self, source: BernoulliSource) -> None:
        self.ledger = DeliveryLedger(source)
        self.received = 0
        self.in_window = 0
        self.window_open = False

    def take_batch(self, samples: list[Sample]) -> None:
        """Samples that arrived together (one read's lines): accounted at once, as the
        client worker accounts for a batched transport's reads."""
        self.ledger.record_batch(samples)
        self.received += len(samples)
        if self.window_open:
            self.in_window += len(samples)

    def take(self, sample: Sample) -> None:
        self.ledger.record(sample)
        self.received += 1
        if self.window_open:
            self.in_window += 1
