"""``python -m transports list | serve NAME | listen NAME``: run any transport by hand.

Settings and the transport's options come from ``--settings-json DOC`` (one JSON document,
for programs: see :mod:`transports.config`), then ``--set KEY=VALUE`` on top (for people;
KEY is a shared setting or one of the transport's options). ``serve --ready-json`` adds one
JSON readiness line (:mod:`transports.announce`) after the human ``serving ...`` line;
``serve --allow-origin ORIGIN`` (repeatable) adds to the ``allow_origins`` setting, the web
pages besides the server's own and loopback ones that may read the stream
(:mod:`transports.origins`). ``--loop asyncio|uvloop`` picks the event loop either command runs
on (:mod:`transports.loops`); ``serve`` names it in both readiness lines. ``serve --gc
default|freeze`` tunes the garbage collector once started up (:mod:`transports.gc_policy`); the
``serving ...`` line says the collector's state, read back. ``serve --clock-port PORT`` also
answers clock probes on UDP PORT of the same host (0: an ephemeral port), for clients on other
hosts to read latencies on the server's clock (:mod:`transports.clock_endpoint`); both
readiness lines give its port.

Errors a user can cause (unknown transport, bad option or setting, a malformed ``--epoch``,
an unknown ``--loop`` or ``--gc``, port in use, no server within ``--wait``) are one line on
stderr and exit code 2; Ctrl-C exits quietly with 130. ``serve`` stops cleanly (every
connection closed, the port released) on SIGINT (exit 130) and SIGTERM (exit 0), also when
started with SIGINT ignored, as a script's background job is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import math
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from model.errors import CertificateInvalid, NotThisProtocol, StreamError, WaitExpired
from model.posterior import BetaBinomial
from model.sample import is_epoch
from model.source import BernoulliSource
from transports.announce import Announcement, Ready
from transports.client import ClientEvent, Connected, Disconnected, StreamClient
from transports.clock_endpoint import ClockEndpoint, start_clock_endpoint
from transports.config import decode_config
from transports.contract import Transport
from transports.failures import FailureKind, failure_kind, printable
from transports.gc_policy import DEFAULT_GC, GCS, UnknownGc, apply_gc, parse_gcs
from transports.hub import Hub
from transports.limits import fit_connections, raise_fd_limit
from transports.loops import DEFAULT_LOOP, LOOPS, UnknownLoop, running_loop_name
from transports.loops import run as run_on_loop
from transports.options import Options, option_names, replace_options
from transports.publisher import check_rate, publish_forever
from transports.registry import TRANSPORTS, UnknownTransport, get
from transports.resume import ResumeToken
from transports.settings import Settings, SettingsError, field_names
from transports.sockets import url_host
from transports.tls import TlsConfigError, TlsSettings, client_context, server_context

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Signals that stop ``serve`` cleanly: every connection closed, the port released.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class UsageError(Exception):
    """A mistake of the caller's: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _configuration(transport: Transport, args: argparse.Namespace) -> tuple[Settings, Options]:
    """The settings and options asked for: ``--settings-json``, then ``--set`` on top.

    Each value is checked by its type (:class:`SettingsError` names the one that is wrong).
    """
    settings, options = Settings(), transport.options
    if args.settings_json is not None:
        settings, options = decode_config(args.settings_json, settings, options)
    setting_keys, option_keys = field_names(), option_names(transport.options)
    setting_changes: dict[str, object] = {}
    option_changes: dict[str, object] = {}
    for pair in args.set:
        key, sep, text = pair.partition("=")
        if not sep or key not in setting_keys + option_keys:
            keys = ", ".join(setting_keys + option_keys)
            raise UsageError(f"--set wants KEY=VALUE with KEY one of: {keys}")
        # Strings, read by each field's type (strict=False); "none" is the only null.
        value = None if text.lower() in ("none", "null") else text
        (setting_changes if key in setting_keys else option_changes)[key] = value
    settings = Settings.from_mapping(setting_changes, settings, strict=False)
    options = replace_options(options, option_changes, strict=False)
    allowed = getattr(args, "allow_origin", [])
    if allowed:
        try:
            settings = settings.with_changes(allow_origins=(*settings.allow_origins, *allowed))
        except SettingsError as exc:
            raise UsageError(f"--allow-origin: {exc}".replace("allow_origins: ", "")) from None
    tls = _tls(args)
    if tls is not None:
        settings = settings.with_changes(tls=tls)
    return transport.settings(settings), options


def _tls(args: argparse.Namespace) -> TlsSettings | None:
    """``--tls`` with its files, checked now: a file that cannot be used is a usage error."""
    files = {k: getattr(args, k, None) for k in ("certfile", "keyfile", "cafile")}
    resume = getattr(args, "resume_sessions", False)
    if not args.tls:
        given = [f"--{k}" for k, v in files.items() if v is not None]
        given += ["--resume-sessions"] if resume else []
        if given:
            raise UsageError(f"{' and '.join(given)} only make sense with --tls")
        return None
    tls = TlsSettings(**files, resume_sessions=resume)
    try:
        if args.command == "serve":
            server_context(tls)
        else:
            client_context(tls)
    except TlsConfigError as exc:
        raise UsageError(str(exc)) from None
    return tls


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m transports", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the registered transports")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", help="transport name (see `list`)")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, help="default: the transport's own port")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a shared setting, e.g. heartbeat_s=1 (see transports/settings.py), "
            "or one of the transport's options",
        )
        p.add_argument(
            "--settings-json",
            metavar="DOC",
            help='{"settings": {...}, "options": {...}} as one JSON document (see '
            "transports/config.py); --set applies on top",
        )
        p.add_argument("--tls", action="store_true", help="TLS around the connection")
        p.add_argument(
            "--loop",
            default=DEFAULT_LOOP,
            metavar="|".join(LOOPS),
            help=f"the event loop to run on (default: {DEFAULT_LOOP})",
        )

    serve = sub.add_parser("serve", help="publish the Bernoulli stream over one transport")
    common(serve)
    serve.add_argument("--rate", type=float, help="samples per second (0: as fast as read)")
    serve.add_argument("--p", type=float, default=0.72, help="success probability")
    serve.add_argument("--seed", type=int, default=0, help="seed of the source")
    serve.add_argument("--epoch", help="epoch name, 1-64 lowercase hex digits (default: random)")
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages from ORIGIN read the stream (scheme://host[:port], "
        "scheme://host:* or *; repeatable); the server's own page and loopback pages always may",
    )
    serve.add_argument("--certfile", metavar="F", help="with --tls: the server's certificate (PEM)")
    serve.add_argument("--keyfile", metavar="F", help="with --tls: its private key (PEM)")
    serve.add_argument(
        "--gc",
        default=DEFAULT_GC,
        metavar="|".join(GCS),
        help=f"the garbage collector's policy once started up (default: {DEFAULT_GC})",
    )
    serve.add_argument(
        "--clock-port",
        type=int,
        metavar="PORT",
        help="also answer clock probes on this UDP port (0: any free one), so clients on "
        "other hosts can read latencies on the server's clock",
    )
    serve.add_argument(
        "--ready-json",
        action="store_true",
        help='also print {"ready": {...}} as one JSON line once listening (for programs)',
    )

    listen = sub.add_parser("listen", help="receive the stream and print the posterior")
    common(listen)
    listen.add_argument(
        "--cafile", metavar="F", help="with --tls: the CA to trust (default: the system's)"
    )
    listen.add_argument(
        "--resume-sessions",
        action="store_true",
        help="with --tls: offer the previous connection's TLS session when reconnecting",
    )
    listen.add_argument("--count", type=int, help="exit 0 after this many samples")
    listen.add_argument("--json", action="store_true", help="one JSON object per line")
    listen.add_argument(
        "--wait", type=float, default=30.0, help="give up after this long without a server"
    )
    return parser


def _list() -> int:
    width = max(map(len, TRANSPORTS))
    for t in TRANSPORTS.values():
        print(f"{t.name:<{width}}  {t.url('127.0.0.1', t.default_port):<34}  {t.summary}")
    return 0


async def _serve(
    transport: Transport, args: argparse.Namespace, settings: Settings, options: Options
) -> int:
    source = BernoulliSource(args.p, args.seed)
    epoch = args.epoch or secrets.token_hex(4)
    # Every connection is a file descriptor: take what the hard limit allows, and promise
    # no more connections than that leaves room for.
    fds = raise_fd_limit()
    settings, warning = fit_connections(settings, fds)
    if warning is not None:
        print(f"python -m transports: warning: {warning}", file=sys.stderr, flush=True)
    hub = Hub(epoch, settings)
    port = transport.default_port if args.port is None else args.port
    server = transport.serve(hub, args.host, port, settings, options)
    try:
        await server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {args.host} is in use") from None
        raise UsageError(f"cannot listen on {args.host}:{port}: {exc.strerror or exc}") from None
    clock: ClockEndpoint | None = None
    if args.clock_port is not None:
        try:
            clock = await start_clock_endpoint(args.host, args.clock_port)
        except OSError as exc:
            await server.stop()
            where = f"UDP port {args.clock_port} on {args.host}"
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"--clock-port: {where} is in use") from None
            raise UsageError(f"--clock-port: cannot bind {where}: {exc.strerror or exc}") from None
    stopped_by: list[signal.Signals] = []
    stop = asyncio.Event()

    def stop_on(signum: signal.Signals) -> None:
        stopped_by.append(signum)
        stop.set()

    # Installed before the readiness line: whoever reads it may signal at once. SIGINT too,
    # and over an inherited SIG_IGN (a server started in the background from a script).
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop_on, signum)
    rate = transport.default_rate_hz if args.rate is None else args.rate
    loop_name = running_loop_name()
    collector = apply_gc(args.gc)  # after start-up, as every process of a step does
    print(
        f"serving {transport.name} on {url_host(args.host)}:{server.port} "
        f"url={transport.url(args.host, server.port, tls=settings.tls is not None)} "
        f"epoch={epoch} rate={rate:g}/s "
        f"p={args.p} seed={args.seed} fds={fds if fds is not None else 'unlimited'} "
        f"max_connections={settings.max_connections} {collector.describe()} loop={loop_name}"
        + ("" if clock is None else f" clock_port={clock.port}"),
        flush=True,
    )
    if args.ready_json:
        clock_port = None if clock is None else clock.port
        ready = Ready(
            transport.name, args.host, server.port, epoch, os.getpid(), loop_name, clock_port
        )
        print(Announcement(ready).encode(), flush=True)
    publisher = asyncio.create_task(publish_forever(hub, source, rate))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({publisher, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if publisher.done():
            publisher.result()  # surface a publisher failure
    finally:
        publisher.cancel()
        stopping.cancel()
        if clock is not None:
            clock.close()
        await server.stop()
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    # Ctrl-C ends serve as it ends listen (130); SIGTERM is a plain stop.
    return EXIT_INTERRUPTED if signal.SIGINT in stopped_by else 0


def _format(sample_seq: int, value: int, post: BetaBinomial, as_json: bool, epoch: str) -> str:
    est = post.estimate()
    if as_json:
        return json.dumps(
            {
                "epoch": epoch,
                "seq": sample_seq,
                "value": value,
                "alpha": est.alpha,
                "beta": est.beta,
                "mean": est.mean,
                "ci_low": est.ci_low,
                "ci_high": est.ci_high,
            },
            separators=(",", ":"),
        )
    return (
        f"{epoch}:{sample_seq:<6} value={value}  α={est.alpha:g} β={est.beta:g}  "
        f"mean={est.mean:.4f}  95% CI [{est.ci_low:.4f}, {est.ci_high:.4f}]"
    )


async def _listen(
    transport: Transport, args: argparse.Namespace, settings: Settings, options: Options
) -> int:
    port = transport.default_port if args.port is None else args.port
    url = transport.url(args.host, port, tls=settings.tls is not None)
    # What stderr last said about a failure: each kind is said once, not once per attempt
    # (a server that refuses would otherwise print a line every backoff).
    said: FailureKind | None = None
    offered: ResumeToken | None = None
    recovering = False

    def report(event: ClientEvent) -> None:
        nonlocal said, offered, recovering
        if isinstance(event, Connected):
            offered = event.token
            return
        if client.received:
            recovering = True
        if isinstance(event, Disconnected) and event.samples:
            said = None  # a stream that ran: what fails next is news again
            print(f"connection lost ({printable(event.reason)}); reconnecting", file=sys.stderr)
            return
        if event.kind == said or event.kind in ("not-this-protocol", "certificate"):
            return  # the same news again, or a failure that ends listen (said there)
            return
        said = event.kind
        within = "" if client.received else f" for up to {args.wait:g} s"
        trouble = _TROUBLE[event.kind].format(url=url)
        print(f"{trouble} ({printable(event.reason)}); retrying{within}", file=sys.stderr)

    client = StreamClient(
        transport, args.host, port, settings, options, on_event=report, initial_wait_s=args.wait
    )
    posterior = BetaBinomial()
    received = 0
    try:
        # Closed here, not left to asyncio.run's shutdown, which would close the generators
        # of an open connection all at once and out of order.
        async with contextlib.aclosing(client.__aiter__()) as samples:
            async for sample in samples:
                if recovering:
                    recovering, said = False, None
                    resumed = f" from {offered.epoch}:{offered.since}" if offered else ""
                    print(f"reconnected{resumed}", file=sys.stderr)
                posterior.update(sample)
                line = _format(sample.seq, sample.value, posterior, args.json, sample.epoch)
                print(line, flush=True)
                received += 1
                if args.count is not None and received >= args.count:
                    break
    except WaitExpired as exc:
        last = exc.__cause__
        why = ""
        if isinstance(last, StreamError):
            why = f" (last failure, {failure_kind(last)}: {printable(str(last))})"
        raise UsageError(f"no sample from {url} within {args.wait:g} s{why}") from None
    except NotThisProtocol as exc:
        message = f"{url} does not speak {transport.name}: {printable(str(exc))}"
        raise UsageError(message) from None
    except CertificateInvalid as exc:  # final: retrying would refuse the same certificate
        message = f"the certificate of {url} does not verify: {printable(str(exc))}"
        raise UsageError(message) from None
    return 0


#: How ``listen`` names each kind of failure (see :mod:`transports.failures`).
_TROUBLE: dict[FailureKind, str] = {
    "unavailable": "no server at {url}",
    "refused": "the server at {url} refuses the connection",
    "not-this-protocol": "{url} does not speak this protocol",
    "certificate": "the certificate of {url} does not verify",
    "lost": "the server at {url} closed the connection before any sample",
}


def _check_serve_arguments(args: argparse.Namespace) -> None:
    if args.rate is not None:
        try:
            check_rate(args.rate)
        except ValueError as exc:
            raise UsageError(f"--{exc}") from None
    if not 0.0 <= args.p <= 1.0:
        raise UsageError(f"--p must lie in [0, 1], got {args.p}")
    if args.epoch is not None and not is_epoch(args.epoch):
        raise UsageError(f"--epoch must be 1-64 lowercase hex digits, got {args.epoch!r}")
    if args.clock_port is not None and not 0 <= args.clock_port <= 65535:
        raise UsageError(f"--clock-port must be 0-65535, got {args.clock_port}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        if args.loop not in LOOPS:
            raise UnknownLoop(args.loop)
        transport = get(args.name)
        settings, options = _configuration(transport, args)
        if args.port is not None and not 0 <= args.port <= 65535:
            raise UsageError(f"--port must be 0-65535, got {args.port}")
        if args.command == "serve":
            parse_gcs(args.gc)
            _check_serve_arguments(args)
            return run_on_loop(_serve(transport, args, settings, options), args.loop)
        if args.count is not None and args.count < 1:
            raise UsageError(f"--count must be >= 1, got {args.count}")
        if not (math.isfinite(args.wait) and args.wait >= 0):
            raise UsageError(f"--wait must be a number of seconds >= 0, got {args.wait}")
        return run_on_loop(_listen(transport, args, settings, options), args.loop)
    except SettingsError as exc:
        print(f"python -m transports: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, UnknownTransport, UnknownLoop, UnknownGc) as exc:
        message = exc.args[0] if exc.args else str(exc)
        print(f"python -m transports: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
