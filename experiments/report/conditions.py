"""The conditions a run's figures hold under, and how to cite them (pure markdown).

:func:`conditions_section`: machine, Python, packages, commit, command, profile, repeats,
elapsed time; ONE table of the settings each transport ran with (a row per setting, a
column per transport: the shared settings with any fixed ones the transport applies, then
its own options), so no scenario table repeats them on every row; the scenarios' profile
knobs and anything else the run recorded about its conditions.

:func:`cite_section`: one quotable line naming what a reader needs to reproduce the figures,
and what the figures are.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

import msgspec

from experiments.report.rows import REFERENCE
from experiments.results import Results

__all__ = ["cite_section", "conditions_section", "settings_table"]

_BLANK = ""


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int):
        return f"{v:,}"
    if v is None:
        return "none"
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(", ", ": "))


def _decode_object(raw: msgspec.Raw) -> dict[str, object]:
    """A JSON object as a dict; anything else is kept whole under ``value``."""
    decoded = msgspec.json.decode(raw) if raw else {}
    return decoded if isinstance(decoded, dict) else {"value": decoded}


def _transports(results: Results) -> list[str]:
    env = results.environment
    names = dict.fromkeys([*env.transports, *env.effective_settings, *env.options])
    return list(names)


def settings_table(results: Results) -> str:
    """Settings (rows) by transport (columns); a value that differs from the shared settings
    is in bold, a transport's own options come after the shared settings."""
    env = results.environment
    shared = dataclasses.asdict(results.settings)
    transports = _transports(results)
    if not transports:  # nothing per transport recorded: the shared settings alone
        columns: dict[str, dict[str, object]] = {"every transport": shared}
        options: dict[str, dict[str, object]] = {}
    else:
        columns = {
            t: dataclasses.asdict(env.effective_settings[t]) if t in env.effective_settings
            else shared
            for t in transports
        }  # fmt: skip
        options = {t: _decode_object(env.options[t]) for t in transports if t in env.options}
    head = ["setting", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, common in shared.items():
        cells = []
        for values in columns.values():
            v = values.get(name, common)
            cells.append(_value(v) if v == common else f"**{_value(v)}**")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    option_names = dict.fromkeys(k for opts in options.values() for k in opts)
    for name in option_names:
        cells = [
            _value(options[t][name]) if name in options.get(t, {}) else _BLANK for t in columns
        ]
        lines.append(f"| `{name}` (own option) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _flatten(mapping: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Nested knobs as dotted names (``pace.rate_hz``): one flat, greppable list."""
    out: dict[str, object] = {}
    for k, v in mapping.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _listing(mapping: Mapping[str, object]) -> str:
    return ", ".join(f"{k} {_value(v)}" for k, v in _flatten(mapping).items())


def network_lines(results: Results) -> list[str]:
    """The network paths the run used: loopback, or emulated paths as measured at the start
    (what the path really did, against its nominal conditions)."""
    lines = ["### Network paths", ""]
    names = sorted({str(r.params.get("network", "loopback")) for r in results.records})
    for name in names or ["loopback"]:
        measured = results.environment.networks.get(name)
        if measured is None:
            lines.append(f"- {name}: 127.0.0.1 in the harness's own namespace, no conditions"
                         if name == "loopback" else f"- {name}: not measured")  # fmt: skip
            continue
        verdict = "" if measured.ok else " — **outside its tolerances: read its figures with care**"
        lines.append(f"- {name} ({measured.nominal}): measured {measured.measured}{verdict}")
    return lines


def conditions_section(results: Results) -> str:
    """``## Conditions``: machine, software, invocation, settings table, knobs, conditions."""
    env = results.environment
    packages = ", ".join(
        f"{name} {version or '(not installed)'}" for name, version in sorted(env.packages.items())
    )
    dirty = {True: " (with uncommitted changes)", False: "", None: " (dirty state unknown)"}
    repeats = f"{env.repeats or '?'} repeat(s)"
    if env.fault_repeats is not None and env.fault_repeats != env.repeats:
        repeats += f", {env.fault_repeats} for the fault scenarios"
    elapsed = "unknown" if env.elapsed_s is None else f"{env.elapsed_s:,.0f} s"
    if env.elapsed_by_kind_s:
        elapsed += " (" + ", ".join(f"{k} {s:,.0f} s" for k, s in env.elapsed_by_kind_s.items())
        elapsed += ")"
    lines = [
        "## Conditions",
        "",
        f"- Created {results.created}; profile **{results.profile}**, {repeats}; elapsed {elapsed}",
        f"- Machine: {env.cpu_model}, {env.cores or '?'} cores ({env.machine}), {env.os}",
        f"- Python {env.python} {env.python_implementation}".rstrip(),
        f"- Packages: {packages or 'not recorded'}",
        f"- Commit: `{env.git_commit or 'unknown'}`{dirty[env.git_dirty]}",
        f"- Command: `{' '.join(env.argv)}`",
    ]
    if env.transports:
        lines.append(f"- Transports: {', '.join(env.transports)}")
    if env.scenarios:
        lines.append(f"- Scenarios: {', '.join(env.scenarios)}")
    if env.seeds:
        lines.append(f"- Source seed: {', '.join(map(str, env.seeds))} (the same in every repeat)")
    lines += [
        "",
        "### Settings each transport ran with",
        "",
        "The shared settings, with the fixed values a transport applies over them in bold, "
        "then each transport's own options (blank: not one of its options).",
        "",
        settings_table(results),
    ]
    lines += ["", *network_lines(results)]
    if env.knobs:
        lines += ["", "### Scenario knobs (this profile)", ""]
        lines += [f"- {name}: {_listing(_decode_object(raw))}" for name, raw in env.knobs.items()]
    if env.conditions:
        lines += ["", "### Other conditions", ""]
        lines += [f"- {name}: {_value(v)}" for name, v in env.conditions.items()]
    return "\n".join(lines)


def cite_section(results: Results) -> str:
    """``## How to cite``: commit, profile, repeats, machine, Python, date; what figures mean."""
    env = results.environment
    commit = (env.git_commit or "unknown commit")[:12] + ("+dirty" if env.git_dirty else "")
    date = results.created.split("T")[0]
    return (
        "## How to cite\n\n"
        f"> transport-bench @ {commit}, profile {results.profile}, {env.repeats or '?'} "
        f"repeats, {env.cpu_model} ({env.cores or '?'} cores), Python {env.python}, {date}.\n\n"
        "Figures are medians over repeats with [min–max] when repeats differ. Latency "
        "percentiles are pooled over every sample of every repeat (HDR histograms, 3 "
        "significant digits) and printed with their sample counts; a percentile with too few "
        "samples behind it is left out. Ratios ×r are against "
        f"{REFERENCE} under the same conditions."
    )
