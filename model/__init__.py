"""The pure core: samples and their wire form, the source, the posterior, the ledger.

Nothing here does I/O or imports asyncio or a network library.
"""

from __future__ import annotations

from model.errors import (
    BadResumeToken,
    CertificateInvalid,
    ConnectionLost,
    FrameTooLarge,
    MalformedSample,
    NotThisProtocol,
    PeerSilent,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
    WaitExpired,
)
from model.ledger import DeliveryCounts, DeliveryLedger, PosteriorError
from model.posterior import BetaBinomial, Estimate
from model.sample import Sample, decode_sample, decode_samples, encode_sample, encode_samples
from model.seqset import SeqSet
from model.source import BernoulliSource

__all__ = [
    "BadResumeToken",
    "BernoulliSource",
    "BetaBinomial",
    "CertificateInvalid",
    "ConnectionLost",
    "DeliveryCounts",
    "DeliveryLedger",
    "Estimate",
    "FrameTooLarge",
    "MalformedSample",
    "NotThisProtocol",
    "PeerSilent",
    "PosteriorError",
    "ProtocolError",
    "Sample",
    "SeqSet",
    "ServerRefused",
    "ServerUnavailable",
    "StreamError",
    "SubscriberOverflow",
    "TooManyConnections",
    "WaitExpired",
    "decode_sample",
    "decode_samples",
    "encode_sample",
    "encode_samples",
]
