"""What a pusher's reader does with each sample: the same work as the client worker."""

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

    def take(self, sample: Sample) -> None:
        self.ledger.record(sample)
        self.received += 1
        if self.window_open:
            self.in_window += 1
