"""Resume tokens and where a resumed stream starts (pure).

A token ``(epoch, since)`` says "I have everything of ``epoch`` up to ``since``". Given the
samples a hub still holds (oldest first, all of the current epoch):

- same epoch, ``since + 1`` still held: continue at ``since + 1`` (nothing lost);
- same epoch, too old: continue at the oldest held (the gap is real loss);
- same epoch, ahead of the newest (a confused client): continue with live samples only;
- other epoch (the server restarted): the oldest held of the current epoch;
- no token: live samples only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from model.errors import BadResumeToken, ProtocolError
from model.sample import is_epoch

__all__ = [
    "ResumeToken",
    "format_event_id",
    "parse_event_id",
    "parse_query",
    "query_parameters",
    "start_seq",
]

_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ResumeToken:
    epoch: str
    since: int

    def __post_init__(self) -> None:
        if not is_epoch(self.epoch):
            raise BadResumeToken(f"epoch must be 1-64 lowercase hex digits, got {self.epoch!r}")
        if not -1 <= self.since <= _MAX_SEQ:
            raise BadResumeToken(f"since must be a seq >= -1, got {self.since}")


def start_seq(token: ResumeToken | None, epoch: str, oldest: int, next_seq: int) -> int:
    """The first seq to send to a subscriber holding ``token``.

    ``oldest`` is the oldest seq still held (``next_seq`` when nothing is held) and ``next_seq``
    the seq the hub will publish next, both of the current ``epoch``.
    """
    if token is None:
        return next_seq
    if token.epoch != epoch:
        return oldest
    wanted = token.since + 1
    if wanted > next_seq:
        return next_seq
    return max(wanted, oldest)


def _parse_int(text: str, what: str) -> int:
    # int() alone would accept " 7", "+7" and "7_000"; a token is plain digits.
    if not text.isascii() or not text.lstrip("-").isdigit() or len(text) > 20:
        raise BadResumeToken(f"{what} must be an integer, got {text!r}")
    return int(text)


def parse_event_id(event_id: str) -> ResumeToken:
    """Parse an SSE event id / ``Last-Event-ID`` of the form ``EPOCH:SEQ``."""
    epoch, sep, seq = event_id.partition(":")
    if not sep:
        raise BadResumeToken(f"event id must be EPOCH:SEQ, got {event_id!r}")
    return ResumeToken(epoch, _parse_int(seq, "seq"))


def format_event_id(epoch: str, seq: int) -> str:
    return f"{epoch}:{seq}"


def query_parameters(pairs: Iterable[tuple[str, str]], names: Collection[str]) -> dict[str, str]:
    """The parameters called ``names`` in a decoded query: the rule of every HTTP transport.

    Others are ignored: browsers and proxies add their own (a cache buster such as ``_=123``),
    and a client must not be refused for them. A known one given twice is malformed, since
    nothing says which would count; raises :class:`~model.errors.ProtocolError` naming it.
    """
    given: dict[str, str] = {}
    for key, value in pairs:
        if key not in names:
            continue
        if key in given:
            raise ProtocolError(f"parameter {key!r} given more than once")
        given[key] = value
    return given


def parse_query(query: Mapping[str, str]) -> ResumeToken | None:
    """The token carried by ``?epoch=E&since=SEQ``; None when neither is given."""
    epoch, since = query.get("epoch"), query.get("since")
    if epoch is None and since is None:
        return None
    if epoch is None or since is None:
        raise BadResumeToken("give both epoch and since, or neither")
    return ResumeToken(epoch, _parse_int(since, "since"))
