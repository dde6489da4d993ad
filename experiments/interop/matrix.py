"""The interop matrix's cells: judged from a client's outcome, blamed, drawn (pure).

A :class:`Cell` is one client against one server through one run of the scenario: it
received valid samples (every value the source's, nothing malformed), resumed across the
server's ``kill -9`` and restart (read the new epoch; 0 lost and 0 duplicated over the whole
run), noticed the black hole (a ``disconnected`` event while the hole held) and read again
after the heal. A failing cell is blamed on the client when that client fails against every
server of its family while others pass there, on the server when every client fails against
it, and on the pair otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from experiments.worker.schema import ClientOutcome, Disconnected

__all__ = ["Cell", "blame", "judge_cell", "matrix_tables"]


class Cell(msgspec.Struct, frozen=True, kw_only=True):
    family: str
    client: str
    server: str
    received: int
    lost: int
    duplicated: int
    reordered: int
    corrupted: int
    valid: bool
    resumed: bool
    noticed: bool
    #: Black hole start -> the client's ``disconnected`` (None: not noticed while it held).
    detect_s: float | None
    recovered: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def judge_cell(
    family: str,
    client: str,
    server: str,
    outcome: ClientOutcome,
    new_epoch: str,
    hole: tuple[int, int],
    recovered: bool,
) -> Cell:
    """One cell from what the client observed over the run."""
    c = outcome.counts
    start, healed = hole
    drops = [e.at_ns for e in outcome.events if isinstance(e, Disconnected)]
    in_hole = [t for t in drops if start <= t <= healed]
    detect_s = (min(in_hole) - start) / 1e9 if in_hole else None
    valid = outcome.received > 0 and c.corrupted == 0 and outcome.error is None
    resumed = new_epoch in outcome.epochs and c.lost == 0 and c.duplicated == 0
    problems: list[str] = []
    if outcome.received == 0:
        problems.append("received nothing")
    if c.corrupted:
        problems.append(f"{c.corrupted} corrupted")
    if outcome.error is not None:
        problems.append(outcome.error)
    if new_epoch not in outcome.epochs:
        problems.append("never read the restarted server")
    if c.lost:
        problems.append(f"lost {c.lost}")
    if c.duplicated:
        problems.append(f"duplicated {c.duplicated}")
    if detect_s is None:
        problems.append("did not notice the black hole")
    if not recovered:
        problems.append("no sample after the heal")
    return Cell(
        family=family,
        client=client,
        server=server,
        received=outcome.received,
        lost=c.lost,
        duplicated=c.duplicated,
        reordered=c.reordered,
        corrupted=c.corrupted,
        valid=valid,
        resumed=resumed,
        noticed=detect_s is not None,
        detect_s=detect_s,
        recovered=recovered,
        problems=problems,
    )


def blame(cells: Sequence[Cell]) -> dict[tuple[str, str], str]:
    """(client, server) of each failing cell -> who is at fault: client, server or pair."""
    out: dict[tuple[str, str], str] = {}
    for cell in cells:
        if cell.ok:
            continue
        family = [c for c in cells if c.family == cell.family]
        same_client = [c for c in family if c.client == cell.client]
        same_server = [c for c in family if c.server == cell.server]
        if all(not c.ok for c in same_server) and len(same_server) > 1:
            out[(cell.client, cell.server)] = "server"
        elif all(not c.ok for c in same_client) and any(c.ok for c in same_server):
            out[(cell.client, cell.server)] = "client"
        else:
            out[(cell.client, cell.server)] = "pair"
    return out


def _text(cell: Cell | None, fault: str | None) -> str:
    if cell is None:
        return "—"
    if cell.ok:
        detect = "" if cell.detect_s is None else f", hole noticed {cell.detect_s:.1f} s"
        return f"✓ {cell.received:,} samples, 0 lost/0 dup{detect}"
    return f"✗ {'; '.join(cell.problems)} (at fault: {fault})".replace("|", "/")


def matrix_tables(cells: Sequence[Cell]) -> list[str]:
    """Markdown: one table per protocol family, clients as rows, servers as columns, and the
    failures listed under it."""
    faults = blame(cells)
    out: list[str] = []
    for family in dict.fromkeys(c.family for c in cells):
        mine = [c for c in cells if c.family == family]
        servers = list(dict.fromkeys(c.server for c in mine))
        clients = list(dict.fromkeys(c.client for c in mine))
        ok = sum(c.ok for c in mine)
        lines = [
            f"#### {family}: {ok} of {len(mine)} cells pass",
            "",
            "| client \\ server | " + " | ".join(servers) + " |",
            "|---|" + "---|" * len(servers),
        ]
        for client in clients:
            row = []
            for server in servers:
                cell = next((c for c in mine if c.client == client and c.server == server), None)
                row.append(_text(cell, faults.get((client, server))))
            lines.append(f"| {client} | " + " | ".join(row) + " |")
        out.append("\n".join(lines))
    return out
