"""results.json, schema 1 (see design.md), and the conditions it records.

``{"schema": 1, "created": ISO-UTC, "profile": NAME, "environment": {...}, "settings": {...},
"records": [{"transport", "scenario", "repeat", "params", "metrics"}, ...]}``

``environment``: CPU model, cores, OS, Python, the version of every distribution the suite
depends on (read with importlib.metadata from this project's requirements), git commit and
dirty flag, profile, repeats, argv, selected transports and scenarios, and per transport the
settings it effectively ran with. ``settings``: the shared experiment settings.
"""

from __future__ import annotations

import json
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

__all__ = [
    "SCHEMA",
    "environment",
    "load_results",
    "new_results",
    "results_dir",
    "write_results",
]

SCHEMA = 1
PROJECT = "transport-bench"
_ROOT = Path(__file__).resolve().parent.parent


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
    except metadata.PackageNotFoundError:
        reqs = []
    names = {re.split(r"[\s<>=!~\[;(]", r, maxsplit=1)[0] for r in reqs}
    # Fall back to the libraries the suite imports when the project is not installed.
    names |= {
        "aiohttp", "httpx", "httpx-sse", "msgspec", "scipy", "sse-starlette", "starlette",
        "tornado", "uvicorn", "lizard", "matplotlib", "psutil", "rich", "numpy",
    }  # fmt: skip
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


def environment(**extra: Any) -> dict[str, Any]:
    """The machine, software and invocation, plus ``extra`` (profile, repeats, ...)."""
    status = _git("status", "--porcelain")
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": _versions(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "argv": list(sys.argv),
        **extra,
    }


def new_results(
    profile: str, settings: dict[str, Any], env: dict[str, Any], created: datetime | None = None
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": (created or datetime.now(UTC)).isoformat(timespec="seconds"),
        "profile": profile,
        "environment": env,
        "settings": settings,
        "records": [],
    }


def results_dir(base: Path | None = None, now: datetime | None = None) -> Path:
    """``results/<UTC time>/`` under the current directory (or ``base`` itself if given)."""
    if base is not None:
        return base
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path("results") / stamp


def _finite(value: Any) -> Any:
    """NaN and infinities as null: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_results(directory: Path, results: dict[str, Any]) -> Path:
    """Write results.json atomically (a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(results), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def load_results(path: Path) -> dict[str, Any]:
    """Read results.json (``path`` may be the file or its directory); check the schema."""
    if path.is_dir():
        path = path / "results.json"
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {data.get('schema')!r}, this reader knows {SCHEMA}")
    for key in ("created", "profile", "environment", "settings", "records"):
        if key not in data:
            raise ValueError(f"{path}: missing {key!r}")
    return data
