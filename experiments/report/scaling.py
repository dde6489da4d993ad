"""The fan-out scaling law: what one more delivered sample costs the server (pure).

For each transport (and each combination of the run's dimensions), the fan-out records give
points (deliveries per second, server CPU in cores): deliveries = clients x rate x the
delivered fraction, CPU = ``server_cpu_percent`` / 100. A least-squares line through them
(every repeat a point) has a slope, the server's CPU per delivered sample per connection
(reported in µs), an intercept (the server's own cost with nobody to write to, in % of a
core) and R², the share of the CPU's variance the line explains: near 1 when the cost grows
in proportion to the work, well below when something else sets it (a GC pause, a saturated
core at the largest N). Fewer than three client counts make no fit.

Beside each fit, how that server writes one batch to many subscribers, in the transport's
own words (its registry record's ``write_path``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from experiments.results import Record

__all__ = ["DIMENSION_KEYS", "ScalingFit", "fit_scaling", "scaling_section"]

#: Params that make records of one transport different runs, never points of one line.
DIMENSION_KEYS = ("network", "via", "security", "client_kind", "loop", "engine")
#: Fewest distinct client counts a line is fitted through.
MIN_SIZES = 3


@dataclass(frozen=True, slots=True)
class ScalingFit:
    transport: str
    #: The dimensions it ran under, as ``key=value`` (empty when there is one combination).
    conditions: str
    points: int
    sizes: tuple[int, ...]
    #: Server CPU per delivered sample per connection, µs (the slope).
    us_per_delivery: float
    #: Server CPU with no deliveries, % of a core (the intercept).
    idle_percent: float
    r_squared: float


def _point(record: Record) -> tuple[int, float, float] | None:
    m, p = record.metrics, record.params
    clients, rate, fraction = p.get("clients"), p.get("rate_hz"), m.get("delivered_fraction")
    cpu = m.get("server_cpu_percent")
    if not all(isinstance(v, int | float) for v in (clients, rate, fraction, cpu)):
        return None
    assert isinstance(clients, int | float) and isinstance(rate, int | float)
    assert isinstance(fraction, int | float) and isinstance(cpu, int | float)
    return int(clients), float(clients) * float(rate) * float(fraction), float(cpu) / 100.0


def _line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``: (a, b, R²)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, (1.0 - ss_res / ss_tot) if ss_tot > 0 else 1.0


def fit_scaling(records: Iterable[Record]) -> list[ScalingFit]:
    """One fit per transport and combination of dimensions with enough client counts."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float, float]]] = {}
    for record in records:
        if record.scenario != "fanout" or record.error or (point := _point(record)) is None:
            continue
        dims = tuple((k, str(record.params[k])) for k in DIMENSION_KEYS if k in record.params)
        groups.setdefault((record.transport, dims), []).append(point)
    varying = {
        k
        for k in DIMENSION_KEYS
        if len({dict(dims).get(k) for _, dims in groups}) > 1  # differs between groups
    }
    fits = []
    for (transport, dims), points in sorted(groups.items()):
        sizes = tuple(sorted({n for n, _, _ in points}))
        if len(sizes) < MIN_SIZES:
            continue
        a, b, r2 = _line([x for _, x, _ in points], [y for _, _, y in points])
        conditions = ", ".join(f"{k}={v}" for k, v in dims if k in varying)
        fits.append(ScalingFit(transport, conditions, len(points), sizes, b * 1e6, a * 100, r2))
    return fits


def scaling_section(records: Iterable[Record], write_path: Callable[[str], str]) -> str:
    """The markdown: one line per fit, with how that server writes to many subscribers."""
    fits = fit_scaling(records)
    if not fits:
        return ""
    lines = [
        "### The scaling law: server CPU per delivered sample",
        "",
        "A least-squares line through (deliveries/s, server CPU) over every client count and "
        "repeat: the slope is what one more delivered sample per connection costs the server, "
        "the intercept its cost with nobody to write to, R² how well a line describes it.",
        "",
        "| transport | clients | points | µs per delivery | idle CPU % | R² | write path |",
        "|---|---|---|---|---|---|---|",
    ]
    for fit in fits:
        name = f"{fit.transport} ({fit.conditions})" if fit.conditions else fit.transport
        sizes = ", ".join(f"{n:,}" for n in fit.sizes)
        lines.append(
            f"| {name} | {sizes} | {fit.points} | {fit.us_per_delivery:.1f} | "
            f"{fit.idle_percent:.1f} | {fit.r_squared:.3f} | {write_path(fit.transport)} |"
        )
    return "\n".join(lines)
