"""Which run owns which namespaces, and clearing away those of runs that died.

Before a run creates anything it writes ``/run/tbench/<run>.json`` with its pid and the
process's start time (pid plus start time names one process; a bare pid can be reused). A
namespace ``tbench-<run>-...`` whose state file is missing, or whose owner is no longer
running, belongs to a killed run: the next start ends the processes still inside it and
removes it. A live owner's namespaces (a concurrent run) are left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from experiments.network import namespaces
from experiments.network.errors import LeftoverError, PathError
from experiments.network.layout import run_id_of_namespace

__all__ = ["STATE_DIR", "Owner", "claim", "clean_stale", "owner_of", "release"]

#: tmpfs, root-only, cleared at boot (when every namespace is gone anyway).
STATE_DIR = Path("/run/tbench")


@dataclass(frozen=True, slots=True)
class Owner:
    pid: int
    start_ticks: int

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), _start_ticks(os.getpid()) or 0)

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks


def _start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat``: when the process started, in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return int(stat.rsplit(")", 1)[1].split()[19])


def _state_file(run_id: str) -> Path:
    return STATE_DIR / f"{run_id}.json"


def owner_of(run_id: str) -> Owner | None:
    try:
        doc = json.loads(_state_file(run_id).read_text())
        return Owner(int(doc["pid"]), int(doc["start_ticks"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def claim(run_id: str) -> None:
    """Record this process as the owner of ``run_id``, before anything of the run exists."""
    previous = owner_of(run_id)
    if previous is not None and previous.alive():
        raise PathError(f"run id {run_id} is in use by live process {previous.pid}")
    try:
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        me = Owner.me()
        _state_file(run_id).write_text(json.dumps({"pid": me.pid, "start_ticks": me.start_ticks}))
    except OSError as exc:
        raise PathError(f"cannot record run {run_id} under {STATE_DIR}: {exc}") from exc


def release(run_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _state_file(run_id).unlink()


def clean_stale() -> list[str]:
    """Remove every namespace of ours whose run is dead; the names removed.

    Raises :class:`LeftoverError` naming what could not be removed.
    """
    dead: dict[str, list[str]] = {}
    for name in namespaces.list_namespaces():
        run_id = run_id_of_namespace(name)
        if run_id is None:
            continue
        owner = owner_of(run_id)
        if owner is None or not owner.alive():
            dead.setdefault(run_id, []).append(name)
    removed: list[str] = []
    failures: list[str] = []
    kept: set[str] = set()
    for run_id, names in sorted(dead.items()):
        namespaces.kill_processes(names)
        for name in names:
            try:
                namespaces.remove(name)
            except PathError as exc:
                failures.append(str(exc))
            else:
                removed.append(name)
        if any(namespaces.exists(n) for n in names):
            kept.add(run_id)
    # State files of dead runs: those just cleaned, and those killed before any namespace.
    if STATE_DIR.is_dir():
        for state in STATE_DIR.glob("*.json"):
            owner = owner_of(state.stem)
            if state.stem not in kept and (owner is None or not owner.alive()):
                with contextlib.suppress(FileNotFoundError):
                    state.unlink()
    if failures:
        raise LeftoverError("leftover of a dead run cannot be removed: " + "; ".join(failures))
    return removed
