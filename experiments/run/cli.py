"""``python -m experiments``: run the comparison and write results.json, report.md, plots.

``python -m experiments [--profile quick|default|full|soak] [--transports a,b] [--scenarios x,y]
[--repeat N] [--out DIR] [--duration MINUTES]`` — transports default to every registered one,
scenarios to every registered one but the opt-in soak; ``--profile soak`` runs the soak alone,
over every transport that resumes, for ``--duration`` minutes (default 30).
``--via direct,nginx,nginx-defaults`` runs the scenarios once per path in front of the
server (:mod:`experiments.via`; quiet-stream joins the default scenarios on an nginx path).
``--client-kinds python,browser`` runs them once per kind of client
(:mod:`experiments.worker.kinds`: the browser's are headless Chromium pages, in latency,
restart, reset and blackhole).
``--security plain,tls`` runs them once plain and once over TLS, with a throwaway certificate
made for the run (:mod:`experiments.run.security`); ``--loop asyncio,uvloop`` once per event
loop of the servers, client workers and baseline pushers (:mod:`experiments.run.event_loops`);
``--gc default,freeze`` once per garbage collector policy they apply after start-up
(:mod:`experiments.run.gc_dimension`; the conditions say what each policy does).
``--clients N,N,...`` sets the fan-out sizes (positive integers; e.g. ``1000,10000``) in place
of the profile's.
``--engine ray`` runs the fan-out's clients as Ray actors (:mod:`experiments.ray_engine`) on a
cluster the run starts for itself (a local head; on an emulated ``--network``, a head beside
the server and ``--ray-hosts N`` worker nodes, default 4, one per client namespace), or on the
user's with ``--ray-address HOST:PORT``; ``--engine builtin`` (the default) runs them in the
suite's own worker processes.
A bad argument or an unknown name is one line on stderr and exit code 2; Ctrl-C tears every
process down and exits with 130. A rich progress bar shows what runs; a summary table
follows (when the output is not a terminal, one plain line per finished scenario instead of
the bar); the report is written from results.json by :mod:`experiments.report`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import inspect
import itertools
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from experiments.network import (
    PROFILES as NETWORKS,
)
from experiments.network import (
    NetworkError,
    NetworkPath,
    measure,
    parse_profiles,
    require_network,
)
from experiments.network import (
    Profile as NetworkProfile,
)
from experiments.network.layout import SERVER_ADDR
from experiments.ray_engine.address import BadAddress, parse_address
from experiments.ray_engine.cluster import RayCluster, RayClusterError
from experiments.ray_engine.dimension import DEFAULT_ENGINE, ENGINES
from experiments.report.dimensions import label
from experiments.report.markdown import write_report
from experiments.report.summary import scenario_line, summary_table
from experiments.results import (
    SCHEMA,
    Record,
    Results,
    environment,
    network_conditions,
    now_iso,
    results_dir,
    write_results,
)
from experiments.run.event_loops import DEFAULT_LOOP, UnknownLoop, parse_loops
from experiments.run.gc_dimension import DEFAULT_GC, UnknownGc, parse_gcs, policy_words
from experiments.run.processes import kill_all, settle_teardowns
from experiments.run.profiles import EXPERIMENT_SETTINGS, OPT_IN, PROFILES, Profile
from experiments.run.runner import Progress as RunProgress
from experiments.run.runner import run_suite, scenario_repeats
from experiments.run.security import (
    DEFAULT_SECURITY,
    TLS_SCENARIOS,
    RunCertificate,
    UnknownSecurity,
    parse_securities,
    run_certificate,
)
from experiments.scenarios.registry import SCENARIOS, Scenario, UnknownScenario
from experiments.scenarios.registry import get as get_scenario
from experiments.via import (
    PROXIED,
    VIA_SCENARIOS,
    VIAS,
    NginxMissing,
    UnknownVia,
    nginx_version,
    parse_vias,
    require_nginx,
)
from experiments.worker.browser import ChromiumMissing, require_chromium
from experiments.worker.kinds import UnknownClientKind, parse_client_kinds, runs_in
from experiments.worker.process import PRESPAWN, discard_spare
from transports.registry import TRANSPORTS, UnknownTransport
from transports.registry import get as get_transport

__all__ = ["main"]

PROG = "python -m experiments"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: The source's seed in every repeat (a server kept for several repeats serves them all).
SEED = 1
#: Simulated hosts (Ray worker nodes, one per client namespace) on an emulated path.
DEFAULT_RAY_HOSTS = 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def _vias(text: str) -> tuple[str, ...]:
    try:
        return parse_vias(text)
    except UnknownVia as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _kinds(text: str) -> tuple[str, ...]:
    try:
        return parse_client_kinds(text)
    except UnknownClientKind as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _securities(text: str) -> tuple[str, ...]:
    try:
        return parse_securities(text)
    except UnknownSecurity as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _loops(text: str) -> tuple[str, ...]:
    try:
        return parse_loops(text)
    except UnknownLoop as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _gcs(text: str) -> tuple[str, ...]:
    try:
        return parse_gcs(text)
    except UnknownGc as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _clients(text: str) -> tuple[int, ...]:
    """``1000,10000`` -> the fan-out sizes, each a positive integer, in order, each once."""
    sizes: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            n = int(part)
        except ValueError:
            n = 0
        if n < 1:
            raise argparse.ArgumentTypeError(
                f"want comma-separated client counts >= 1, got {part!r}"
            )
        if n not in sizes:
            sizes.append(n)
    return tuple(sizes)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--profile", choices=sorted(PROFILES), default="default")
    p.add_argument("--transports", type=_names, help=f"comma-separated; of {', '.join(TRANSPORTS)}")
    p.add_argument("--scenarios", type=_names, help=f"comma-separated; of {', '.join(SCENARIOS)}")
    p.add_argument("--repeat", type=int, help="repeats (default: the profile's)")
    p.add_argument("--out", type=Path, help="output directory (default: results/<UTC time>/)")
    p.add_argument(
        "--duration",
        type=float,
        metavar="MINUTES",
        help="how long the soak runs (default: 30 under --profile soak)",
    )
    p.add_argument(
        "--network",
        help=(
            f"comma-separated network profiles; of {', '.join(NETWORKS)} "
            "(default: the profile's: quick loopback, default loopback,wan, full all)"
        ),
    )
    p.add_argument(
        "--via",
        type=_vias,
        default=("direct",),
        help=f"comma-separated paths in front of the server; of {', '.join(VIAS)} "
        "(default: direct; the nginx ones need the Debian package nginx)",
    )
    p.add_argument(
        "--client-kinds",
        type=_kinds,
        default=("python",),
        help="comma-separated kinds of client; of python, browser (default: python; "
        "browser: headless Chromium pages, Debian's chromium)",
    )
    p.add_argument(
        "--security",
        type=_securities,
        default=(DEFAULT_SECURITY,),
        help="comma-separated; of plain, tls (default: plain; tls: a throwaway CA and "
        "certificate made for the run)",
    )
    p.add_argument(
        "--loop",
        type=_loops,
        default=(DEFAULT_LOOP,),
        help="comma-separated event loops of servers, clients and pushers; of asyncio, uvloop "
        "(default: asyncio)",
    )
    p.add_argument(
        "--gc",
        type=_gcs,
        default=(DEFAULT_GC,),
        help="comma-separated garbage collector policies of servers, clients and pushers; of "
        "default, freeze (default: default; freeze: gc.freeze() and higher thresholds after "
        "start-up)",
    )
    p.add_argument(
        "--clients",
        type=_clients,
        metavar="N,N,...",
        help="fan-out sizes, e.g. 1000,10000 (default: the profile's)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help="what runs the clients: builtin worker processes (default) or ray actors "
        "(fan-out only; needs the ray package)",
    )
    p.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="with --engine ray: join this Ray cluster (this machine must be one of its "
        "nodes) instead of starting one",
    )
    p.add_argument(
        "--ray-hosts",
        type=int,
        metavar="N",
        help=f"with --engine ray on an emulated --network: simulated hosts, one Ray worker "
        f"node per client namespace (default: {DEFAULT_RAY_HOSTS})",
    )
    return p


@contextlib.contextmanager
def _display(console: Console, steps: int, dimensions: Sequence[str] = ()) -> Iterator[RunProgress]:
    """A progress bar on a terminal; one plain line per finished scenario otherwise, which
    names the step's values of ``dimensions`` (those the run has several values of)."""
    if not console.is_terminal:
        started = time.monotonic()

        def done(scenario: Scenario, records: list[Record]) -> None:
            step = label(records[0].params, dimensions) if records else ""
            where = f"({step}) " if step else ""
            console.print(
                f"[{time.monotonic() - started:5.0f} s] {where}{scenario_line(scenario, records)}",
                soft_wrap=True,
                highlight=False,
            )

        yield RunProgress(scenario_done=done)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("starting", total=steps, note="")
        yield RunProgress(
            step=lambda d: bar.update(task, description=d, note=""),
            note=lambda n: bar.update(task, note=n),
            advance=lambda: bar.advance(task),
        )


def _profile(args: argparse.Namespace) -> Profile:
    profile = PROFILES[args.profile]
    if args.duration is not None:
        profile = dataclasses.replace(profile, duration_min=args.duration)
    if args.clients is not None:
        profile = dataclasses.replace(profile, clients=args.clients)
    return profile


def _transport_names(profile: Profile) -> list[str]:
    """Every transport, or every one that resumes when the profile judges resumption."""
    return [n for n, t in TRANSPORTS.items() if t.features.resume or not profile.resuming_only]


def _scenario_names(args: argparse.Namespace) -> list[str]:
    """``--scenarios``, else the profile's own, else every scenario but the opt-in ones."""
    profile = PROFILES[args.profile]
    if args.scenarios:
        return list(args.scenarios)
    if profile.scenarios:
        return list(profile.scenarios)
    special = (*VIA_SCENARIOS, *TLS_SCENARIOS)
    names = [n for n in SCENARIOS if n not in OPT_IN and n not in special]
    # Through a proxy, the scenarios about proxies run too (quiet-stream); with TLS, those
    # about what TLS costs (reconnect-cost).
    if set(PROXIED) & set(args.via):
        names += VIA_SCENARIOS
    if "tls" in args.security:
        names += TLS_SCENARIOS
    return names


def _networks(
    args: argparse.Namespace, profile: Profile, console: Console
) -> tuple[NetworkProfile, ...]:
    """``--network`` as given, else the profile's paths (loopback alone with
    ``--ray-address``: the cluster's machines are the path); without root a profile's
    emulated paths are left out with one line saying why (an explicit ``--network`` never
    is)."""
    if args.network is not None:
        return parse_profiles(args.network)
    if args.ray_address is not None:
        # A joined cluster's actors are on other machines: the real network is the path.
        return parse_profiles("loopback")
    wanted = parse_profiles(",".join(profile.networks))
    emulated = [p.name for p in wanted if p.namespaces]
    if not emulated:
        return wanted
    try:
        require_network()
    except NetworkError as exc:
        console.print(
            f"{PROG}: skipping network paths {', '.join(emulated)} of --profile {profile.name}: "
            f"{exc} (pass --network loopback to silence this)",
            soft_wrap=True,
            highlight=False,
        )
        return tuple(p for p in wanted if not p.namespaces)
    return wanted


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the profile, scenarios and duration together (None: nothing)."""
    profile = PROFILES[args.profile]
    names = _scenario_names(args)
    others = [n for n in names if n not in profile.scenarios]
    if profile.scenarios and others:
        return (
            f"--profile {profile.name} runs only {', '.join(profile.scenarios)}, "
            f"not {', '.join(others)}"
        )
    if args.duration is not None:
        if not args.duration > 0:  # also NaN
            return f"--duration must be > 0 minutes, got {args.duration}"
        if "soak" not in names:
            return "--duration sets the soak's length: use it with --profile soak"
    if args.clients is not None and "fanout" not in names:
        return "--clients sets the fan-out sizes: use it with the fanout scenario"
    return _engine_problem(args)


def _emulated_paths(args: argparse.Namespace) -> bool | None:
    """Whether the run has an emulated network path (``--network``, else the profile's);
    None when a name is unknown (reported on its own)."""
    names = args.network if args.network is not None else ",".join(PROFILES[args.profile].networks)
    try:
        return any(p.namespaces for p in parse_profiles(names))
    except NetworkError:
        return None


def _engine_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--engine``, ``--ray-address`` and ``--ray-hosts`` together."""
    if args.engine != "ray":
        for flag, value in (("--ray-address", args.ray_address), ("--ray-hosts", args.ray_hosts)):
            if value is not None:
                return f"{flag} is for the Ray engine: use it with --engine ray"
        return None
    if args.ray_hosts is not None:
        if args.ray_hosts < 1:
            return f"--ray-hosts must be >= 1, got {args.ray_hosts}"
        if args.ray_address is None and _emulated_paths(args) is False:
            return "--ray-hosts sets the simulated hosts of an emulated --network (lan, wan, ...)"
    if args.ray_address is not None:
        try:
            parse_address(args.ray_address)
        except BadAddress as exc:
            return str(exc)
        explicit = args.network is not None and _emulated_paths(args)
        if explicit or args.ray_hosts is not None:
            return (
                "--ray-address joins a cluster outside this machine's emulated network paths: "
                "use it without --ray-hosts and an emulated --network"
            )
    if importlib.util.find_spec("ray") is None:  # the harness itself never imports it
        return "--engine ray needs the ray package: pip install 'transport-bench[experiments]'"
    return None


def _ray_cluster(args: argparse.Namespace, net: NetworkPath) -> RayCluster | None:
    """The run's Ray cluster on ``net`` under ``--engine ray`` (None: the builtin engine)."""
    if args.engine != "ray":
        return None
    if args.ray_address is not None:
        return RayCluster.join(args.ray_address)
    if net.namespaced:
        return RayCluster.on_path(net, args.ray_hosts or DEFAULT_RAY_HOSTS)
    return RayCluster.local()


def _ray_hosts(args: argparse.Namespace) -> int:
    """Client namespaces an emulated path is built with: one per simulated Ray host."""
    if args.engine == "ray" and args.ray_address is None:
        return args.ray_hosts or DEFAULT_RAY_HOSTS
    return 1


async def _run(args: argparse.Namespace, console: Console) -> int:
    profile = _profile(args)
    transports = [get_transport(n) for n in (args.transports or _transport_names(profile))]
    scenarios = [get_scenario(n) for n in _scenario_names(args)]
    repeats = profile.repeats if args.repeat is None else args.repeat
    # --repeat N repeats the faults too; otherwise the profile says (one run of the fault
    # scenarios injects many faults).
    fault_repeats = profile.fault_repeats if args.repeat is None else None
    out = results_dir(args.out)
    settings = EXPERIMENT_SETTINGS
    env = environment()
    env.profile = profile.name
    env.repeats = repeats
    env.fault_repeats = min(repeats, fault_repeats or repeats)
    env.transports = [t.name for t in transports]
    env.scenarios = [s.name for s in scenarios]
    env.effective_settings = {t.name: t.settings(settings) for t in transports}
    env.options = {t.name: msgspec.Raw(msgspec.json.encode(t.options)) for t in transports}
    env.seeds = [SEED]
    env.scenario_docs = {s.name: inspect.getdoc(s) or "" for s in scenarios}
    env.knobs = {
        s.name: msgspec.Raw(msgspec.json.encode(s.knobs[profile.knob_set])) for s in scenarios
    }
    results = Results(
        schema=SCHEMA, created=now_iso(), profile=profile.name, environment=env, settings=settings
    )
    networks = _networks(args, profile, console)
    vias = args.via
    if set(vias) & set(PROXIED):
        env.packages["nginx"] = nginx_version()
    securities, loops = args.security, args.loop
    env.conditions["security"] = ",".join(securities)
    env.conditions["loop"] = ",".join(loops)
    gcs = args.gc
    env.conditions["gc"] = ",".join(gcs)
    for gc in gcs:
        env.conditions[f"gc_{gc}"] = policy_words(gc)
    if "uvloop" in loops:
        env.packages.setdefault("uvloop", metadata.version("uvloop"))
    if profile.clients is not None:
        env.conditions["fanout_clients"] = ",".join(map(str, profile.clients))
    env.conditions["engine"] = args.engine
    if args.engine == "ray":
        env.packages.setdefault("ray", metadata.version("ray"))
        env.conditions["ray_cluster"] = args.ray_address or "started by the run"
    started = time.monotonic()
    kinds = args.client_kinds
    steps = sum(
        scenario_repeats(s, repeats, fault_repeats)
        for kind in kinds
        for s in scenarios
        if runs_in(kind, s.name)
    ) * len(transports)
    per_path = len(vias) * len(securities) * len(loops) * len(gcs)
    with (
        _display(console, steps * len(networks) * per_path, _multiplied(args, networks)) as hooks,
        contextlib.ExitStack() as stack,
    ):
        # One certificate for the run, for loopback and the emulated paths' server address.
        certificate: RunCertificate | None = None
        if "tls" in securities:
            certificate = stack.enter_context(run_certificate((SERVER_ADDR,)))
        PRESPAWN["enabled"] = True
        try:
            for network in networks:
                async with contextlib.AsyncExitStack() as on_path:
                    net = await on_path.enter_async_context(
                        NetworkPath(network, clients=_ray_hosts(args))
                    )
                    if net.namespaced:
                        # What the path really does, measured before anything runs on it.
                        props = await measure(net)
                        env.networks[network.name] = network_conditions(props)
                        console.print(props.line(), soft_wrap=True, highlight=False)
                    # One Ray cluster per path (its nodes live in the path's namespaces).
                    cluster = _ray_cluster(args, net)
                    if cluster is not None:
                        await on_path.enter_async_context(cluster)
                        console.print(
                            f"ray: {cluster.expect_nodes} node(s) at {cluster.address}"
                            + ("" if cluster.started else " (joined)"),
                            soft_wrap=True,
                            highlight=False,
                        )
                    for via, kind, security, loop, gc in itertools.product(
                        vias, kinds, securities, loops, gcs
                    ):
                        results.records += await run_suite(
                            profile,
                            transports,
                            scenarios,
                            repeats,
                            settings,
                            out,
                            hooks,
                            seed=SEED,
                            fault_repeats=fault_repeats,
                            network=net if net.namespaced else None,
                            via=via,
                            client_kind=kind,
                            security=security,
                            securities=securities,
                            certificate=certificate,
                            loop=loop,
                            gc=gc,
                            engine=args.engine,
                            ray=cluster,
                        )
        finally:
            await settle_teardowns()
            await discard_spare()
    env.elapsed_s = round(time.monotonic() - started, 2)
    env.elapsed_by_kind_s = _elapsed_by_kind(results.records, scenarios)
    path = write_results(out, results)
    report = write_report(out)
    if not console.is_terminal:  # a log or CI: rich assumes 80 columns and wraps every figure
        console.width = max(console.width, 120)
    console.print(summary_table(results.records, scenarios))
    console.print(
        f"wall time {env.elapsed_s:.0f} s: "
        + ", ".join(f"{kind} {seconds:.0f} s" for kind, seconds in env.elapsed_by_kind_s.items())
    )
    console.print(f"results: {path}\nreport:  {report}")
    return 0


def _multiplied(args: argparse.Namespace, networks: Sequence[NetworkProfile]) -> list[str]:
    """The dimensions the run has several values of (a step's line names its values)."""
    counts = {
        "network": len(networks),
        "via": len(args.via),
        "client_kind": len(args.client_kinds),
        "security": len(args.security),
        "loop": len(args.loop),
        "gc": len(args.gc),
    }
    return [k for k, n in counts.items() if n > 1]


def _elapsed_by_kind(records: Sequence[Record], scenarios: Sequence[Scenario]) -> dict[str, float]:
    """Wall seconds spent per scenario kind (steady, fault). Concurrent transports of one
    scenario overlap, so each (scenario, repeat) counts its slowest transport."""
    by_name = {s.name: s for s in scenarios}
    spans: dict[tuple[str, str, int, str], float] = {}
    for r in records:
        # Every record of one step carries the same span (one step per network, via, client
        # kind, security, loop and gc, too).
        network = "/".join(
            str(r.params.get(k, default))
            for k, default in (
                ("network", "loopback"),
                ("via", "direct"),
                ("client_kind", "python"),
                ("security", "plain"),
                ("loop", "asyncio"),
                ("gc", "default"),
            )
        )
        spans[(r.scenario, network, r.repeat, r.transport)] = float(r.elapsed_s or 0.0)
    slowest: dict[tuple[str, str, int], float] = {}
    summed: dict[tuple[str, str, int], float] = {}
    for (scenario, network, repeat, _), seconds in spans.items():
        key = (scenario, network, repeat)
        slowest[key] = max(slowest.get(key, 0.0), seconds)
        summed[key] = summed.get(key, 0.0) + seconds
    out: dict[str, float] = {}
    for (scenario, network, repeat), seconds in summed.items():
        s = by_name.get(scenario)
        span = slowest[(scenario, network, repeat)] if s is not None and s.concurrent else seconds
        kind = s.kind if s is not None else "steady"
        out[kind] = round(out.get(kind, 0.0) + span, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    err = Console(stderr=True)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.repeat is not None and args.repeat < 1:
        print(f"{PROG}: error: --repeat must be >= 1, got {args.repeat}", file=sys.stderr)
        return EXIT_USAGE
    problem = _usage_problem(args)
    if problem is not None:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        for name in args.transports or ():
            get_transport(name)
        for name in args.scenarios or ():
            get_scenario(name)
        if args.network is not None and any(p.namespaces for p in parse_profiles(args.network)):
            require_network()  # asked for an emulated path: never fall back to loopback
        if set(args.via) & set(PROXIED):
            require_nginx()  # names the Debian package when nginx is missing
        if "browser" in args.client_kinds:
            require_chromium()  # names the Debian package when Chromium is missing
    except (UnknownTransport, UnknownScenario, NetworkError, NginxMissing, ChromiumMissing) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, err))
    except (NetworkError, RayClusterError, BadAddress) as exc:
        # A path or a Ray cluster that could not be built, joined or torn down.
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; every server and client stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        kill_all()
