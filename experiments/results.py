"""results.json, schema 2, and the conditions it records: typed from writer to report.

``{"schema": 2, "created": ISO-UTC, "profile": NAME, "environment": {...}, "settings": {...},
"records": [{"transport", "scenario", "repeat", "params", "metrics", ...}, ...]}``

Every field is declared here (:class:`Results`, :class:`Record`, :class:`Environment`); the
run writes these types and the report reads them back with the same types, so nothing is a
free-form dict between the two. ``params`` and ``metrics`` map names to scalars (the
design's metric keys); a record may also carry the latency histograms it pooled (HDR,
mergeable across repeats), per-fault observations and traces (fault scenarios), and a
``detail`` document only its own scenario reads (typed by that scenario).

Schema 1 files (before the typed records) still load: :func:`load_results` upgrades them.

``environment``: CPU model, cores, OS, Python, the version of every distribution the suite
depends on (read with importlib.metadata from this project's requirements), git commit and
dirty flag, profile, repeats, argv, selected transports and scenarios, and per transport the
settings and options it effectively ran with. ``settings``: the shared experiment settings.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from experiments.network import PathProperties
from transports.settings import Settings

__all__ = [
    "SCHEMA",
    "Environment",
    "FaultTrace",
    "NetworkConditions",
    "Observation",
    "Record",
    "Results",
    "Scalar",
    "environment",
    "load_results",
    "network_conditions",
    "results_dir",
    "write_results",
]

SCHEMA = 2
PROJECT = "transport-bench"
_ROOT = Path(__file__).resolve().parent.parent

#: What a param or metric may be.
Scalar = str | int | float | bool | None


class Observation(msgspec.Struct, frozen=True, kw_only=True):
    """What one client saw of one fault (seconds; None: it did not happen in its window)."""

    client: int
    #: From the fault's start to the client's ``disconnected`` event.
    detect_s: float | None
    #: From the fault's end to the first sample received on a new connection.
    reconnect_s: float | None
    #: From the fault's start to the server dropping the connection (when it can be seen).
    server_drop_s: float | None = None
    #: Whether the client received samples of the epoch the server came back with.
    new_epoch: bool | None = None


class FaultTrace(msgspec.Struct, frozen=True, kw_only=True):
    """One client through one fault, on a time axis whose 0 is the fault's start.

    ``backlog[i]``: samples the server had sent (by their scheduled time) but this client had
    not yet received, at ``start_s + i * bin_s``, counting the samples the client received in
    the end (a resuming client receives them all).
    """

    client: int
    bin_s: float
    start_s: float
    backlog: list[int]
    #: The fault's end (server back, reset done, hole healed).
    end_s: float
    detected_s: float | None = None
    server_dropped_s: float | None = None
    #: The first sample received after the fault ended, on a new connection.
    recovered_s: float | None = None


class Record(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One measurement: a scenario, a transport, one repeat, one set of params."""

    transport: str
    scenario: str
    repeat: int
    params: dict[str, Scalar] = {}
    metrics: dict[str, Scalar] = {}
    #: Wall seconds the scenario took for this transport and repeat.
    elapsed_s: float | None = None
    #: Why the measurement failed (``metrics`` then empty).
    error: str | None = None
    #: Role -> HDR latency histogram (µs, encoded) over the window; mergeable over repeats.
    latency: dict[str, str] = {}
    observations: list[Observation] = []
    traces: list[FaultTrace] = []
    #: Scenario-specific data (JSON; ``null``: none), decoded by that scenario with its type.
    detail: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))

    def metric(self, name: str) -> float | None:
        """A numeric metric (None when absent, not a number, or a bool)."""
        value = self.metrics.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)


class NetworkConditions(msgspec.Struct, frozen=True, kw_only=True):
    """An emulated path as measured at the start of the run (before anything ran on it)."""

    #: The profile's nominal conditions, in words.
    nominal: str
    #: The measured figures with their targets and verdict, in one line.
    measured: str
    #: Every measured property held its tolerance.
    ok: bool
    figures: dict[str, Scalar] = {}


def network_conditions(props: PathProperties) -> NetworkConditions:
    """The record of an :class:`experiments.network.PathProperties`."""
    figures: dict[str, Scalar] = {
        k: v
        for k, v in props.as_dict().items()
        if v is None or isinstance(v, str | int | float | bool)
    }
    return NetworkConditions(
        nominal=props.profile.summary(), measured=props.line(), ok=props.ok, figures=figures
    )


class Environment(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The machine, the software and the invocation."""

    cpu_model: str
    cores: int | None
    machine: str
    os: str
    python: str
    python_implementation: str
    packages: dict[str, str | None]
    git_commit: str | None
    git_dirty: bool | None
    argv: list[str]
    profile: str = ""
    repeats: int = 0
    fault_repeats: int | None = None
    transports: list[str] = []
    scenarios: list[str] = []
    seeds: list[int] = []
    #: Per transport, the shared settings it ran with (fixed settings applied) ...
    effective_settings: dict[str, Settings] = {}
    #: ... and its own options.
    options: dict[str, msgspec.Raw] = {}
    scenario_docs: dict[str, str] = {}
    #: Scenario -> its profile knobs, as run.
    knobs: dict[str, msgspec.Raw] = {}
    #: Everything else a run records about its conditions (limits, GC, ...).
    conditions: dict[str, Scalar] = {}
    #: Network profile -> what its emulated path measured at the start of the run.
    networks: dict[str, NetworkConditions] = {}
    elapsed_s: float | None = None
    elapsed_by_kind_s: dict[str, float] = {}


class Results(msgspec.Struct, kw_only=True):
    schema: int
    created: str
    profile: str
    environment: Environment
    settings: Settings
    records: list[Record] = []


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _requirement_names() -> list[str]:
    """Every distribution this project requires (core and extras), from its metadata."""
    try:
        reqs = metadata.requires(PROJECT) or []
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            f"{PROJECT} is not installed (pip install -e '.[experiments]'): the versions "
            "the results must record come from its metadata"
        ) from exc
    names = {re.split(r"[\s<>=!~\[;(]", r, maxsplit=1)[0] for r in reqs}
    return sorted(n for n in names if n)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _requirement_names():
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def environment() -> Environment:
    """The machine, software and invocation (the run fills in the rest)."""
    status = _git("status", "--porcelain")
    return Environment(
        cpu_model=_cpu_model(),
        cores=os.cpu_count(),
        machine=platform.machine(),
        os=platform.platform(),
        python=sys.version.split()[0],
        python_implementation=platform.python_implementation(),
        packages=_versions(),
        git_commit=_git("rev-parse", "HEAD"),
        git_dirty=None if status is None else bool(status),
        argv=list(sys.argv),
    )


def results_dir(base: Path | None = None, now: datetime | None = None) -> Path:
    """``results/<UTC time>/`` under the current directory (or ``base`` itself if given)."""
    if base is not None:
        return base
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path("results") / stamp


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).isoformat(timespec="seconds")


def _finite(value: Any) -> Any:
    """NaN and infinities as null: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_encoder = msgspec.json.Encoder()


def write_results(directory: Path, results: Results) -> Path:
    """Write results.json atomically (a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.json"
    tmp = path.with_suffix(".json.tmp")
    for record in results.records:
        record.metrics = {k: _finite(v) for k, v in record.metrics.items()}
    tmp.write_bytes(msgspec.json.format(_encoder.encode(results), indent=1) + b"\n")
    tmp.replace(path)
    return path


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A schema 1 document in schema 2's shape (what the typed records cannot hold is kept
    in each record's ``detail``)."""
    records = []
    for r in data.get("records", []):
        extra = {
            k: v
            for k, v in r.items()
            if k not in ("transport", "scenario", "repeat", "params", "metrics", "elapsed_s",
                         "error")
        }  # fmt: skip
        records.append(
            {
                "transport": r["transport"],
                "scenario": r["scenario"],
                "repeat": r["repeat"],
                "params": {k: v for k, v in r.get("params", {}).items() if _is_scalar(v)},
                "metrics": {k: v for k, v in r.get("metrics", {}).items() if _is_scalar(v)},
                "elapsed_s": r.get("elapsed_s"),
                "error": r.get("error"),
                **({"detail": extra} if extra else {}),
            }
        )
    env = dict(data.get("environment", {}))
    known = set(Environment.__struct_fields__)
    env = {k: v for k, v in env.items() if k in known}
    env.setdefault("python_implementation", "")
    settings = {k: v for k, v in data.get("settings", {}).items() if k in _settings_fields()}
    return {**data, "schema": SCHEMA, "environment": env, "settings": settings,
            "records": records}  # fmt: skip


def _settings_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(Settings)}


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def load_results(path: Path) -> Results:
    """Read results.json (``path`` may be the file or its directory); check the schema."""
    if path.is_dir():
        path = path / "results.json"
    raw = path.read_bytes()
    try:
        schema = msgspec.json.decode(raw, type=_Schema).schema
        if schema == 1:
            raw = msgspec.json.encode(_upgrade_v1(msgspec.json.decode(raw, type=dict[str, Any])))
        elif schema != SCHEMA:
            raise ValueError(f"{path}: schema {schema!r}, this reader knows 1 and {SCHEMA}")
        return msgspec.json.decode(raw, type=Results)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: {exc}") from exc


class _Schema(msgspec.Struct):
    schema: int | None = None
