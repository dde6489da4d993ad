"""The fault scenarios' reconnection table, from the records' typed observations (pure).

Per fault scenario and transport, pooled over every :class:`~experiments.results.Observation`
(one client through one fault) of every repeat:

- faults injected (the records' ``faults`` metric; else the observations);
- detect s: fault start -> the client's ``disconnected`` event; server drop s: fault start ->
  the server dropping the connection (only where a scenario can see it); reconnect s: fault
  end -> the first sample on a new connection; each as median / max;
- missed: observations where that did not happen within the observation window;
- lost and duplicated samples (summed over repeats), moved to the new epoch (restart: the
  client read the restarted server's samples);
- target s = heartbeat + dead-after + 1 s (the records' ``target_s`` param) and how many
  observations met it on the client / server side.

Browser clients (``params.client_kind == "browser"``) get rows of their own beside the Python
clients, named after the browser's client: "EventSource (native reconnect)", "WebSocket
(page's reconnect)", fetch polling.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from experiments.report.figures import spread
from experiments.results import FaultTrace, Observation, Record, Results
from experiments.worker.page_outcome import browser_client

__all__ = ["reconnection_section", "traces_by_transport"]

NONE = "—"


def _median_max(values: Sequence[float | None]) -> str:
    s = spread(values)
    return NONE if s is None else f"{s.median:.3f} / {s.high:.3f}"


def _missed(values: Sequence[float | None]) -> int:
    return sum(v is None for v in values)


def _total(records: Sequence[Record], key: str) -> int:
    return sum(int(r.metric(key) or 0) for r in records)


def _within(values: Sequence[float | None], target: float) -> int:
    return sum(v is not None and v <= target for v in values)


def _row(scenario: str, transport: str, records: Sequence[Record], drops_seen: bool) -> str:
    obs: list[Observation] = [o for r in records for o in r.observations]
    detect = [o.detect_s for o in obs]
    drop = [o.server_drop_s for o in obs]
    reconnect = [o.reconnect_s for o in obs]
    faults = _total(records, "faults") if any("faults" in r.metrics for r in records) else len(obs)
    missed = "/".join(
        [str(_missed(detect)), str(_missed(drop)) if drops_seen else NONE, str(_missed(reconnect))]
    )
    epochs = [o.new_epoch for o in obs if o.new_epoch is not None]
    new_epoch = f"{sum(epochs)}/{len(epochs)}" if epochs else NONE
    target = next(
        (float(t) for r in records if isinstance(t := r.params.get("target_s"), int | float)),
        None,
    )
    within = NONE
    if target is not None and obs:
        server = f"{_within(drop, target)}/{len(obs)}" if drops_seen else NONE
        within = f"{_within(detect, target)}/{len(obs)} · {server}"
    cells = [
        scenario,
        transport,
        str(faults),
        _median_max(detect),
        _median_max(drop) if drops_seen else NONE,
        _median_max(reconnect),
        missed,
        str(_total(records, "lost")),
        str(_total(records, "duplicated")),
        new_epoch,
        NONE if target is None else f"{target:g}",
        within,
    ]
    return "| " + " | ".join(cells) + " |"


def client_row(record: Record) -> str:
    """The row's name: the transport, and for a browser client, the browser's client
    (``sse · EventSource (native reconnect)``, ``tornado-ws · WebSocket (page's reconnect)``)."""
    if record.params.get("client_kind", "python") == "browser":
        return f"{record.transport} · {browser_client(record.transport)}"
    return record.transport


def reconnection_section(results: Results, scenarios: Collection[str] | None = None) -> str:
    """``### Reconnection``: one line per fault scenario and transport ("" if none ran).

    ``scenarios``: the scenarios to include (None: every scenario whose records carry
    observations), in the order they were run.
    """
    measured = [
        r
        for r in results.records
        if r.error is None and r.observations and (scenarios is None or r.scenario in scenarios)
    ]
    if not measured:
        return ""
    groups: dict[str, dict[str, list[Record]]] = {}
    for r in measured:
        groups.setdefault(r.scenario, {}).setdefault(client_row(r), []).append(r)
    lines = [
        "### Reconnection",
        "",
        "Per fault scenario and transport, pooled over every client through every fault of "
        "every repeat. Seconds as median / max: detect = fault start to the client noticing; "
        "server drop = fault start to the server dropping the connection (where it can be "
        "seen); reconnect = fault end to the first sample on a new connection. Missed = "
        "observations where it did not happen in its window. Lost and duplicated are summed "
        "over repeats. Target = heartbeat + dead-after + 1 s: the time to notice a dead peer "
        "on each side (client · server).",
        "",
        "| scenario | transport | faults | detect s | server drop s | reconnect s | missed "
        "(detect/drop/reconnect) | lost | duplicated | new epoch | target s | within target "
        "(client · server) |",
        "|" + "---|" * 12,
    ]
    for scenario, by_transport in groups.items():
        # A server drop is observable in a scenario when any transport's was observed;
        # elsewhere a missing one is not a miss but not measurable.
        drops_seen = any(
            o.server_drop_s is not None
            for rs in by_transport.values()
            for r in rs
            for o in r.observations
        )
        lines += [_row(scenario, t, rs, drops_seen) for t, rs in by_transport.items()]
    return "\n".join(lines)


def traces_by_transport(
    results: Results, scenario: str, repeat: int | None = None
) -> dict[str, list[FaultTrace]]:
    """Transport -> the fault traces of ``scenario`` (of one repeat, or of every repeat)."""
    out: dict[str, list[FaultTrace]] = {}
    for r in results.records:
        if r.scenario == scenario and r.error is None and (repeat is None or r.repeat == repeat):
            out.setdefault(r.transport, []).extend(r.traces)
    return {t: ts for t, ts in out.items() if ts}
