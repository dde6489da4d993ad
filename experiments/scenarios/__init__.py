"""Scenarios: one module each (its run, knobs, table columns and report sections).

The contract is in :mod:`.scenario`, the one delivery judgement in :mod:`.delivery`, and the
list of scenarios in :mod:`.registry` (importing this package imports none of them, so the
shared fault machinery can use the contract without a cycle).
"""

from __future__ import annotations

__all__: list[str] = []
