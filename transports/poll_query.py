"""The polling transports' query and which samples answer it (pure: no I/O, no clock).

A poll is ``GET /samples?epoch=E&since=SEQ[&wait=SECONDS]``. The query follows the rule of
every HTTP transport (:func:`transports.resume.query_parameters`): other parameters are ignored
(browsers add cache busters such as ``_=123``, although answers are sent
``Cache-Control: no-store``), while one of these given twice, a malformed token and a wait
that is not a plain non-negative number of seconds are errors (the server answers 400 with
the reason).

Which samples answer a poll (at most ``batch``, oldest first):

- no token: the newest sample only (nothing before the first sample); this gives a fresh
  client its epoch and position;
- a token: the resume rules of :func:`transports.resume.start_seq` (same epoch: after
  ``since``, or from the oldest held if ``since + 1`` is gone; other epoch: from the oldest
  held).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from model.errors import ProtocolError
from transports.resume import ResumeToken, parse_query, query_parameters, start_seq

__all__ = [
    "PARAMETERS",
    "PollQuery",
    "answer_range",
    "format_poll_query",
    "parse_poll_query",
    "wanted_seq",
]

#: Every parameter a poll may carry.
PARAMETERS = ("epoch", "since", "wait")

# Plain decimal seconds: no sign, exponent, "nan" or "inf", which float() would all accept.
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


@dataclass(frozen=True, slots=True)
class PollQuery:
    """A parsed poll: the resume token (None: newest only) and how long to hold the request."""

    token: ResumeToken | None
    #: Seconds the server may hold the request waiting for a sample; 0 answers at once.
    wait_s: float = 0.0


def parse_poll_query(pairs: Iterable[tuple[str, str]], max_wait_s: float) -> PollQuery:
    """Parse the decoded query parameters of a poll; ``wait`` is capped at ``max_wait_s``.

    Raises :class:`~model.errors.BadResumeToken` for a bad epoch/since and
    :class:`~model.errors.ProtocolError` for anything else wrong, each with the reason.
    """
    given = query_parameters(pairs, PARAMETERS)
    token = parse_query(given)
    wait = given.get("wait")
    if wait is None:
        return PollQuery(token)
    if not _SECONDS.fullmatch(wait):
        raise ProtocolError(f"wait must be a non-negative number of seconds, got {wait[:40]!r}")
    return PollQuery(token, min(float(wait), max_wait_s))


def format_poll_query(token: ResumeToken | None, wait_s: float | None = None) -> str:
    """The query string (with its ``?``, or empty) a client sends; inverse of the parser."""
    parts = [] if token is None else [f"epoch={token.epoch}", f"since={token.since}"]
    if wait_s is not None:
        parts.append(f"wait={wait_s:.3f}".rstrip("0").rstrip("."))
    return "?" + "&".join(parts) if parts else ""


def answer_range(
    token: ResumeToken | None, epoch: str, oldest: int, next_seq: int, batch: int
) -> range:
    """The seqs that answer a poll holding ``token`` (empty: nothing to send yet).

    ``oldest`` is the oldest seq the hub holds (``next_seq`` when it holds none) and
    ``next_seq`` the seq it will publish next, both of the current ``epoch``.
    """
    if token is None:
        start = max(oldest, next_seq - 1)
        return range(start, next_seq)
    start = start_seq(token, epoch, oldest, next_seq)
    return range(start, min(next_seq, start + batch))


def wanted_seq(token: ResumeToken | None, epoch: str) -> int:
    """The lowest seq whose arrival gives an empty answer something to send (long polling)."""
    if token is None or token.epoch != epoch:
        return 0
    return token.since + 1
