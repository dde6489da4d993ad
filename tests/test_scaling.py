"""The fan-out scaling law's fit (pure): slope, intercept and R² from fan-out records."""

from __future__ import annotations

import pytest

from experiments.report.scaling import fit_scaling, scaling_section
from experiments.results import Record


def _record(transport: str, clients: int, cpu_percent: float, **params: str) -> Record:
    return Record(
        transport=transport,
        scenario="fanout",
        repeat=0,
        params={"clients": clients, "rate_hz": 10.0, **params},
        metrics={"delivered_fraction": 1.0, "server_cpu_percent": cpu_percent},
    )


def test_a_cost_in_proportion_to_the_deliveries_is_its_slope_with_r2_one() -> None:
    # 2 % of a core idle, plus 20 µs per delivery: 10 clients x 10/s = 100 deliveries/s.
    records = [_record("tcp", n, 2.0 + 100 * n * 10 * 20e-6) for n in (10, 100, 1000)]
    (fit,) = fit_scaling(records)
    assert fit.transport == "tcp" and fit.sizes == (10, 100, 1000) and fit.points == 3
    assert fit.us_per_delivery == pytest.approx(20.0)
    assert fit.idle_percent == pytest.approx(2.0)
    assert fit.r_squared == pytest.approx(1.0)


def test_a_cost_that_is_no_line_has_a_low_r2_and_too_few_sizes_no_fit() -> None:
    scattered = [_record("sse", n, cpu) for n, cpu in ((10, 50.0), (100, 5.0), (1000, 40.0))]
    (fit,) = fit_scaling(scattered)
    assert fit.r_squared < 0.5
    assert fit_scaling([_record("sse", n, 1.0) for n in (10, 100)]) == []


def test_dimensions_are_separate_lines_named_by_what_differs() -> None:
    records = [
        _record("tcp", n, 1.0 + n / 100, loop=loop, network="loopback")
        for n in (10, 100, 1000)
        for loop in ("asyncio", "uvloop")
    ]
    fits = fit_scaling(records)
    assert [f.conditions for f in fits] == ["loop=asyncio", "loop=uvloop"]
    table = scaling_section(records, lambda name: f"how {name} writes")
    assert "tcp (loop=uvloop)" in table and "how tcp writes" in table
