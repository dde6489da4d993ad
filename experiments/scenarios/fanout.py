"""The ``fanout`` scenario: N clients at a fixed rate each, from one server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from experiments.histogram import merge_encoded
from experiments.ray_engine.report import ray_figures, ray_section
from experiments.report.plots import latency_cdf_plot
from experiments.report.scaling import scaling_section
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext, clock_port_of
from experiments.scenarios.delivery import judge
from experiments.scenarios.scenario import Column, Kind, latency_column, latency_metrics
from experiments.worker.schema import ClientGroup
from transports.registry import get

__all__ = ["FANOUT", "Fanout", "FanoutKnobs", "connect_timeout_s", "split_clients"]


@dataclass(frozen=True, slots=True)
class FanoutKnobs:
    """N clients at ``rate_hz`` each; clients spread over up to ``max_workers`` processes."""

    clients: tuple[int, ...]
    rate_hz: float
    warmup_s: float
    duration_s: float
    max_workers: int = 2
    #: Below this many clients, one worker process carries them all.
    clients_per_worker_min: int = 200
    #: From this many clients on, each reads at ``large_rate_hz`` instead: 10,000 x 1/s is
    #: issue 13's size, the same 10,000 deliveries a second as 1,000 x 10/s.
    large_from: int = 10_000
    large_rate_hz: float = 1.0

    def rate_for(self, clients: int) -> float:
        """The publish rate ``clients`` clients read at."""
        return self.large_rate_hz if clients >= self.large_from else self.rate_hz


def connect_timeout_s(clients: int) -> float:
    """How long N clients may take to connect: a minute, plus 5 ms a client (10,000
    WebSocket handshakes took over a minute on 2 cores, the clients' own beside the server's)."""
    return 60.0 + 0.005 * clients


def split_clients(clients: int, k: FanoutKnobs) -> list[int]:
    """How many clients each worker process carries (one worker below the minimum)."""
    workers = 1 if clients < k.clients_per_worker_min else max(1, k.max_workers)
    base, extra = divmod(clients, workers)
    return [base + (1 if i < extra else 0) for i in range(workers) if base or i < extra]


class Fanout:
    """Fan-out cost: N clients at a fixed rate each, from one server.

    One server publishes at ``rate_hz`` (from ``large_from`` clients on, another server at
    ``large_rate_hz``); for each N, N clients (in one or two worker
    processes) connect, warm up and read for the window. Reported: latency percentiles pooled
    over every client's samples (and over repeats, with their count), ``delivered_fraction``
    (the ledger's delivered / (delivered + lost) over all clients), ``server_cpu_percent``
    over the window, and ``server_rss_bytes_per_connection`` = (server RSS with N clients -
    RSS just before they connected) / N. Delivery is checked first: any loss, duplicate,
    reorder, disconnect or client that never connected clears ``delivery_ok``. The sizes are
    the profile's knobs, or the run's ``--clients`` (``Profile.clients``); server and workers
    raise their soft file limit to the hard one, and each record's params say both
    (``server_nofile``, ``client_nofile``: the smallest of the workers').

    Under ``--engine ray`` one job carries all N clients: the Ray driver spreads them over
    actors on the cluster's nodes (``ray_actors`` over ``ray_nodes``: hosts x a per-host
    count, none above 2,500 clients, at least as many as the built-in workers), probes the
    server itself, and the server has a clock endpoint: every actor reads its latencies on the
    server's clock, and ``clock_bound_ms`` is the widest error bound of their offsets (the
    latencies are that uncertain, beside the figures). Ray's own cost over the window on the
    server's machine is ``ray_overhead_cpu_s`` and ``ray_overhead_rss_bytes``
    (:class:`~experiments.worker.schema.EngineRecord` says what is counted).
    """

    name = "fanout"
    kind: Kind = "steady"
    concurrent = False
    max_repeats: int | None = None
    knobs: Mapping[str, FanoutKnobs] = {
        "quick": FanoutKnobs(clients=(1, 10, 100), rate_hz=10.0, warmup_s=0.2, duration_s=0.5),
        # x1,000 for 2 s: 20 publishes and 20,000 samples per repeat (at 0.5 s, 5 publishes
        # made the p99 one publish's spread, and one pause anywhere decided it); x100: 6,000
        # pooled over 3 repeats. One client is the latency scenario's (the full profile keeps
        # x1 here too).
        "default": FanoutKnobs(clients=(10, 100, 1000), rate_hz=10.0, warmup_s=0.5, duration_s=2.0),
        # x10,000 (issue 13): 5,000 clients in each of two workers, one descriptor each.
        "full": FanoutKnobs(
            clients=(1, 10, 100, 1000, 10000), rate_hz=10.0, warmup_s=2.0, duration_s=10.0
        ),
    }
    columns = (
        latency_column("p50"),
        latency_column("p99"),
        latency_column("max"),
        Column("delivered_fraction", "delivered %", scale=100.0),
        Column("server_cpu_percent", "server CPU %"),
        Column("server_rss_bytes_per_connection", "server KiB/connection", scale=1 / 1024),
    )
    headline = (
        latency_column("p99"),
        Column("delivered_fraction", "delivered %", scale=100.0),
        Column("server_cpu_percent", "server CPU %"),
    )

    def variant(self, params: Mapping[str, Scalar]) -> str:
        return f"×{params.get('clients', 0)}"

    async def run(self, ctx: RunContext) -> list[Record]:
        k = self.knobs[ctx.profile.name]
        records = []
        sizes = k.clients if ctx.profile.clients is None else ctx.profile.clients
        for rate, same_rate in itertools.groupby(sizes, k.rate_for):
            records += await self._run_at(ctx, k, rate, list(same_rate))
        return records

    async def _run_at(
        self, ctx: RunContext, k: FanoutKnobs, rate: float, sizes: list[int]
    ) -> list[Record]:
        """The sizes that read at ``rate``, one after another from one server."""
        records = []
        async with ctx.server(rate) as server:
            for n in sizes:
                ctx.note(f"{n} clients")
                rss_idle = server.rss()
                shares = split_clients(n, k)
                if ctx.engine == "ray":
                    # One job: the driver spreads it over at least as many actors.
                    job = ctx.job(
                        server.port,
                        (ClientGroup(n),),
                        warmup_s=k.warmup_s,
                        duration_s=k.duration_s,
                        connect_timeout_s=connect_timeout_s(n),
                        server_pid=server.pid,
                        server_port=server.port,
                        clock_port=clock_port_of(server),
                    )
                    workers = [ctx.clients(job, min_actors=len(shares))]
                else:
                    workers = [
                        ctx.clients(
                            ctx.job(
                                server.port,
                                (ClientGroup(share),),
                                warmup_s=k.warmup_s,
                                duration_s=k.duration_s,
                                connect_timeout_s=connect_timeout_s(n),
                                server_pid=server.pid if i == 0 else None,
                            )
                        )
                        for i, share in enumerate(shares)
                    ]
                async with contextlib.AsyncExitStack() as stack:
                    for w in workers:
                        await stack.enter_async_context(w)
                    results = await asyncio.gather(*(w.result() for w in workers))
                clients = [c for r in results for c in r.clients]
                metrics: dict[str, Scalar] = judge(clients)
                metrics["clients"] = n
                delivered, lost = int(metrics["delivered"] or 0), int(metrics["lost"] or 0)
                metrics["delivered_fraction"] = (
                    delivered / (delivered + lost) if delivered + lost else 0.0
                )
                seconds = results[0].window.seconds
                metrics["window_s"] = seconds
                expected = n * rate * seconds
                got = sum(c.received_in_window for c in clients)
                metrics["received_in_window_fraction"] = got / expected if expected else None
                probe = results[0].server
                if probe is not None and seconds > 0:
                    metrics["server_cpu_percent"] = 100.0 * probe.cpu_s / seconds
                    metrics["server_rss_bytes"] = probe.rss_end
                    metrics["server_rss_idle_bytes"] = rss_idle
                    metrics["server_rss_bytes_per_connection"] = (probe.rss_end - rss_idle) / n
                metrics["client_cpu_s"] = sum(r.cpu_window_s for r in results)
                engine = results[0].engine
                processes = len(shares) if engine is None else engine.actors
                metrics["workers"] = processes
                params: dict[str, Scalar] = {
                    "clients": n,
                    "rate_hz": rate,
                    "duration_s": k.duration_s,
                    "warmup_s": k.warmup_s,
                    "workers": processes,
                    "server_nofile": server.fd_limit(),
                    "client_nofile": min(
                        (r.nofile for r in results if r.nofile is not None), default=None
                    ),
                }
                ray_params, ray_metrics = ray_figures(results[0])
                params.update(ray_params)
                metrics.update(ray_metrics)
                latency = {"normal": merge_encoded(r.latency.get("normal", "") for r in results)}
                metrics.update(latency_metrics(latency["normal"]))
                records.append(ctx.record(params, metrics, latency=latency))
        return records

    def _label(self, record: Record) -> str:
        return f"{record.transport} {self.variant(record.params)}"

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        records = [r for r in results.records if r.scenario == self.name and not r.error]
        link = latency_cdf_plot(records, out_dir / "fanout_cdf.png", self._label)
        law = scaling_section(records, _write_path)
        ray = ray_section(records)
        return [part for part in (law, ray, link) if part]


def _write_path(name: str) -> str:
    """How that transport's server writes to many subscribers (its registry record)."""
    try:
        return get(name).write_path
    except LookupError:
        return "(not in this registry)"


FANOUT = Fanout()
