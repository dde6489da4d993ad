"""How a job's clients are spread over actors and the actors over nodes (pure).

- :func:`actor_count`: ``hosts`` x a per-host count, the smallest that keeps every actor at
  or under ``max_per_actor`` clients (one event loop, one core: ~2,500 clients at the
  fan-out's rates), and at least ``at_least`` actors (the built-in engine's worker count, so
  both engines spread the same clients over as many processes), never more actors than
  clients;
- :func:`split_groups`: a share of every client group for each actor, as even as it gets;
- :func:`target_nodes`: the nodes actors go to: every node but the driver's (the driver runs
  beside the server, so clients elsewhere cross the network), or the driver's own when the
  cluster has no other;
- actor ``i`` goes to ``targets[i % len(targets)]`` (node affinity, not a soft hint).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from experiments.worker.schema import ClientGroup

__all__ = ["MAX_CLIENTS_PER_ACTOR", "actor_count", "node_of", "split_groups", "target_nodes"]

#: The most clients one actor carries by default (one event loop on one core).
MAX_CLIENTS_PER_ACTOR = 2_500


def actor_count(
    clients: int, hosts: int, max_per_actor: int = MAX_CLIENTS_PER_ACTOR, at_least: int = 1
) -> int:
    """Actors for ``clients`` over ``hosts`` nodes: ``hosts`` x per host, each actor holding at
    most ``max_per_actor`` clients, at least ``at_least`` actors, at most one per client."""
    if clients < 1 or hosts < 1 or max_per_actor < 1:
        raise ValueError(
            f"need clients, hosts, max_per_actor >= 1: {clients}, {hosts}, {max_per_actor}"
        )
    per_host = max(math.ceil(clients / (hosts * max_per_actor)), math.ceil(at_least / hosts))
    return max(1, min(clients, hosts * per_host))


def _even(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def split_groups(groups: Sequence[ClientGroup], actors: int) -> list[tuple[ClientGroup, ...]]:
    """``actors`` shares of ``groups``: each group's clients dealt out as evenly as possible
    (the remainder of one group starting where the previous one's ended, so the shares' sizes
    differ by at most one); a share may leave out a group it got no client of, and a share
    with no clients at all is left out."""
    if actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    shares: list[list[ClientGroup]] = [[] for _ in range(actors)]
    start = 0
    for group in groups:
        counts = _even(group.count, actors)
        counts = counts[-start:] + counts[:-start] if start else counts  # rotate the remainder
        for share, n in zip(shares, counts, strict=True):
            if n:
                share.append(msgspec.structs.replace(group, count=n))
        start = (start + group.count % actors) % actors
    return [tuple(s) for s in shares if s]


def target_nodes(alive: Sequence[str], driver_node: str) -> list[str]:
    """The nodes actors go to: every alive node but the driver's, else the driver's own."""
    others = [n for n in alive if n != driver_node]
    return others or [driver_node]


def node_of(actor: int, targets: Sequence[str]) -> str:
    """The node actor ``actor`` goes to (round robin)."""
    return targets[actor % len(targets)]
