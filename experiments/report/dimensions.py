"""The dimensions every record ran under, for the report's grouping (pure).

Each record's params name its ``network``, ``via``, ``security``, ``client_kind``, ``loop``
and ``gc`` (:attr:`experiments.run.context.RunContext.dimensions`); records from before a
dimension existed lack it and read as its default. A summary that picks one figure per
transport (across networks, through a proxy, side by side) must never pick it from a mix of
these: :func:`split` groups records by the dimensions that vary, and :func:`label` names a
group (``tls · uvloop``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from experiments.results import Record, Scalar

__all__ = [
    "DIMENSIONS",
    "Group",
    "dimension",
    "label",
    "not_applicable",
    "split",
    "telling_apart",
    "values",
    "varying",
]

#: Every dimension and the value a record without it ran under.
DIMENSIONS: Mapping[str, str] = {
    "network": "loopback",
    "via": "direct",
    "security": "plain",
    "client_kind": "python",
    "loop": "asyncio",
    "gc": "default",
    "engine": "builtin",
}


def dimension(params: Mapping[str, Scalar], key: str) -> str:
    """The value of dimension ``key`` in ``params`` (its default when absent)."""
    value = params.get(key)
    return DIMENSIONS[key] if value is None else str(value)


def values(records: Iterable[Record], key: str) -> list[str]:
    """The values of dimension ``key`` the records ran under, in first-seen order."""
    return list(dict.fromkeys(dimension(r.params, key) for r in records))


def varying(records: Sequence[Record], keys: Iterable[str] = DIMENSIONS) -> list[str]:
    """Those of ``keys`` with more than one value among ``records``."""
    return [k for k in keys if len(values(records, k)) > 1]


def telling_apart(records: Sequence[Record]) -> list[str]:
    """The dimensions with more than one value for some one transport: what tells two of a
    transport's rows apart (a dimension that differs only from one transport to another, as
    WebTransport's security always ``tls`` in a plaintext run, does not)."""
    by_transport: dict[str, list[Record]] = {}
    for r in records:
        by_transport.setdefault(r.transport, []).append(r)
    return [k for k in DIMENSIONS if any(len(values(rs, k)) > 1 for rs in by_transport.values())]


def label(params: Mapping[str, Scalar], keys: Sequence[str]) -> str:
    """``tls · uvloop``: the values of ``keys`` in ``params``, joined ("" for no keys)."""
    return " · ".join(dimension(params, k) for k in keys)


@dataclass(frozen=True, slots=True)
class Group:
    """Records that share the values of some dimensions; ``label`` names them."""

    label: str
    params: Mapping[str, str]
    records: tuple[Record, ...]


def split(records: Sequence[Record], keys: Iterable[str]) -> list[Group]:
    """``records`` grouped by those of ``keys`` that vary among them, in first-seen order;
    one group labelled "" when none vary."""
    keys = varying(records, keys)
    groups: dict[tuple[str, ...], list[Record]] = {}
    for r in records:
        groups.setdefault(tuple(dimension(r.params, k) for k in keys), []).append(r)
    return [
        Group(" · ".join(key), dict(zip(keys, key, strict=True)), tuple(group))
        for key, group in groups.items()
    ]


def not_applicable(records: Iterable[Record]) -> str | None:
    """The reason when every record says it was not applicable (None otherwise)."""
    reasons = [r.metrics.get("not_applicable") for r in records]
    if not reasons or any(not isinstance(reason, str) for reason in reasons):
        return None
    return str(reasons[0])
