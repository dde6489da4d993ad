"""What a scenario gets: :class:`RunContext`, one per (scenario, transport, repeat).

A scenario's ``run(ctx)`` uses:

- ``ctx.transport`` (a registry :class:`~transports.contract.Transport`), ``ctx.profile``,
  ``ctx.repeat``, ``ctx.seed`` (differs per repeat), ``ctx.settings`` (the shared experiment
  settings) and ``ctx.effective_settings`` (with the transport's fixed settings applied);
- ``ctx.server(rate_hz)`` -> a :class:`~experiments.harness.ServerProcess` (use it with
  ``async with``; ``kill()``/``start()`` for restarts);
- ``ctx.job(port, groups, ...)`` -> a :class:`~experiments.jobs.ClientJob` with the run's
  settings, seed and p filled in; ``ctx.clients(job)`` -> a
  :class:`~experiments.harness.ClientProcess`;
- ``ctx.record(params, metrics)`` -> one results.json record (transport, scenario and repeat
  filled in);
- ``ctx.note(text)`` to show what is happening in the progress bar;
- ``ctx.shared``: a dict living for the whole run (e.g. pusher results reused by every
  transport that maps to the same pusher within one repeat).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.harness import ClientProcess, ServerProcess
from experiments.jobs import ClientGroup, ClientJob
from experiments.profiles import Profile
from transports.contract import Transport
from transports.settings import Settings

__all__ = ["RunContext"]

#: The source's success probability in every experiment.
P = 0.72


@dataclass
class RunContext:
    transport: Transport
    scenario: str
    profile: Profile
    settings: Settings
    repeat: int
    seed: int
    out_dir: Path
    shared: dict[str, Any] = field(default_factory=dict)
    note: Callable[[str], None] = lambda text: None
    p: float = P

    @property
    def effective_settings(self) -> Settings:
        """The settings this transport actually runs with (fixed settings applied)."""
        return self.transport.settings(self.settings)

    def server(self, rate_hz: float, **kwargs: Any) -> ServerProcess:
        kwargs.setdefault("ready_timeout_s", self.profile.ready_timeout_s)
        return ServerProcess(
            self.transport.name,
            rate_hz=rate_hz,
            settings=self.effective_settings,
            seed=self.seed,
            p=self.p,
            **kwargs,
        )

    def job(
        self, port: int, groups: tuple[ClientGroup, ...], host: str = "127.0.0.1", **kwargs: Any
    ) -> ClientJob:
        return ClientJob(
            transport=self.transport.name,
            host=host,
            port=port,
            groups=groups,
            settings=self.settings,
            seed=self.seed,
            p=self.p,
            **kwargs,
        )

    def clients(self, job: ClientJob, **kwargs: Any) -> ClientProcess:
        return ClientProcess(job, **kwargs)

    def record(self, params: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "transport": self.transport.name,
            "scenario": self.scenario,
            "repeat": self.repeat,
            "params": params,
            "metrics": metrics,
        }
