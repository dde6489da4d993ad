"""What Ray itself costs on this machine over the window: CPU and RSS of its processes.

The driver takes an :class:`OverheadProbe` snapshot at each edge of the window and
:func:`overhead` turns the two into CPU seconds and RSS (pure). Counted:

- every process of the cluster on this machine: the descendants of the ``ray start``
  processes the run started (``roots``), or, for a cluster the run joined, every process
  here that :func:`is_ray_process` recognises (GCS, raylet, agents, monitors, idle workers);
- the driver itself (it exists only because of Ray);
- in each actor process, only the threads Ray ran before the actor's job started (the core
  worker, its gRPC and event-loop threads): the job's own thread runs the clients, which the
  built-in engine would run too, so it is not overhead. The actors' RSS is not counted either
  (it holds the clients).

A process that started during the window counts with all its CPU; one that ended during it
is not seen. Nothing on other machines is seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import psutil

__all__ = [
    "Overhead",
    "OverheadProbe",
    "OverheadSnapshot",
    "ProcessSample",
    "is_ray_process",
    "overhead",
]


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process (or one actor's Ray threads) at one moment."""

    pid: int
    #: Its start time (``create_time``): tells a reused pid apart.
    started: float
    cpu_s: float
    rss: int


@dataclass(frozen=True, slots=True)
class OverheadSnapshot:
    #: Whole Ray processes (and the driver).
    processes: tuple[ProcessSample, ...]
    #: Per actor process: its Ray threads' CPU (``rss`` 0: memory is per process).
    actor_threads: tuple[ProcessSample, ...]


@dataclass(frozen=True, slots=True)
class Overhead:
    cpu_s: float
    rss_bytes: int
    processes: int


def _cpu_delta(start: Iterable[ProcessSample], end: Iterable[ProcessSample]) -> float:
    before = {(s.pid, s.started): s.cpu_s for s in start}
    return sum(e.cpu_s - before.get((e.pid, e.started), 0.0) for e in end)


def overhead(start: OverheadSnapshot, end: OverheadSnapshot) -> Overhead:
    """CPU seconds between the snapshots (a process new at the end counts whole), RSS at the
    end, and how many processes that covers (actor processes included)."""
    cpu = _cpu_delta(start.processes, end.processes)
    cpu += _cpu_delta(start.actor_threads, end.actor_threads)
    return Overhead(
        cpu_s=max(0.0, cpu),
        rss_bytes=sum(e.rss for e in end.processes),
        processes=len(end.processes) + len(end.actor_threads),
    )


def is_ray_process(cmdline: Sequence[str], ray_dir: str) -> bool:
    """Whether a process with this command line is one of Ray's: a ``ray::`` worker title,
    Ray's binaries and scripts (under the ``ray`` package's directory ``ray_dir``),
    ``python -m ray...`` or the ``ray`` command."""
    if not cmdline:
        return False
    if cmdline[0].startswith("ray::") or os.path.basename(cmdline[0]) == "ray":
        return True
    for i, arg in enumerate(cmdline):
        if ray_dir and arg.startswith(ray_dir + os.sep):
            return True
        if i > 0 and cmdline[i - 1] == "-m" and (arg == "ray" or arg.startswith("ray.")):
            return True
    return False


def _sample(proc: psutil.Process) -> ProcessSample | None:
    try:
        with proc.oneshot():
            t = proc.cpu_times()
            return ProcessSample(
                proc.pid, proc.create_time(), float(t.user + t.system), int(proc.memory_info().rss)
            )
    except psutil.Error:
        return None


def _threads(pid: int, tids: Sequence[int]) -> ProcessSample | None:
    try:
        proc = psutil.Process(pid)
        wanted = set(tids)
        cpu = sum(t.user_time + t.system_time for t in proc.threads() if t.id in wanted)
        return ProcessSample(pid, proc.create_time(), float(cpu), 0)
    except psutil.Error:
        return None


class OverheadProbe:
    """Snapshots of Ray's processes here: the trees under ``roots`` (empty: every process here
    :func:`is_ray_process` recognises), plus ``also`` (the driver), less the ``actors`` (pid ->
    the ids of the threads Ray ran before its job), whose Ray threads are sampled instead."""

    def __init__(
        self,
        roots: Sequence[int],
        actors: Mapping[int, Sequence[int]],
        also: Sequence[int],
        ray_dir: str,
    ) -> None:
        self.roots = tuple(roots)
        self.actors = dict(actors)
        self.also = tuple(also)
        #: The ``ray`` package's directory (how a joined cluster's processes are recognised).
        self.ray_dir = ray_dir

    def _processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        if self.roots:
            for pid in self.roots:
                try:
                    root = psutil.Process(pid)
                    found[pid] = root
                    found.update((c.pid, c) for c in root.children(recursive=True))
                except psutil.Error:
                    continue
        else:
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = proc.info.get("cmdline") or []
                if is_ray_process(cmdline, self.ray_dir):
                    found[proc.pid] = proc
        for pid in self.also:
            if pid not in found:
                try:
                    found[pid] = psutil.Process(pid)
                except psutil.Error:
                    continue
        return [p for pid, p in sorted(found.items()) if pid not in self.actors]

    def snapshot(self) -> OverheadSnapshot:
        processes = [s for p in self._processes() if (s := _sample(p)) is not None]
        threads = [
            s for pid, tids in sorted(self.actors.items()) if (s := _threads(pid, tids)) is not None
        ]
        return OverheadSnapshot(tuple(processes), tuple(threads))
