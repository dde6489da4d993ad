"""``python -m experiments.via render nginx|nginx-defaults``: print a site config to deploy.

``[--listen HOST:PORT] [--upstream HOST:PORT] [--read-timeout SECONDS]
[--certfile F --keyfile F]``: the shipped template filled in (what goes into the ``http``
block of your nginx). The read timeout defaults to the recommended one for the transports'
default settings (heartbeat, dead-after, the long-poll hold). A bad argument is one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from experiments.via.nginx import site_template
from experiments.via.paths import PROXIED, Via, not_applicable
from experiments.via.render import Site, TemplateError, Tls, read_timeout_s, render_site
from transports.contract import Transport
from transports.registry import TRANSPORTS
from transports.settings import Settings

__all__ = ["default_read_timeout_s", "deployable_site", "main"]

PROG = "python -m experiments.via"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def default_read_timeout_s() -> float:
    """The recommended read timeout for every HTTP transport that resumes (the seed design,
    which does not, is left out), run with default settings."""
    settings = Settings()
    return max(
        read_timeout_s(t.settings(settings), _hold(t, settings))
        for t in TRANSPORTS.values()
        if t.features.resume and not_applicable("nginx", t) is None
    )


def _hold(transport: Transport, settings: Settings) -> float:
    return transport.keepalive_in_force(settings).get("long_poll_wait_s") or 0.0


def deployable_site(
    via: Via,
    listen: tuple[str, int] = ("0.0.0.0", 80),
    upstream: tuple[str, int] = ("127.0.0.1", 8888),
    *,
    read_timeout_s: float | None = None,
    tls: Tls | None = None,
) -> Site:
    """The site to deploy in front of a server run with default settings: the recommended
    read timeout (``nginx``; nginx's own for ``nginx-defaults`` unless given) and the
    servers' own connect and request-head timeouts."""
    settings = Settings()
    if read_timeout_s is None and via == "nginx":
        read_timeout_s = default_read_timeout_s()
    return Site(
        listen_host=listen[0],
        listen_port=listen[1],
        upstream_host=upstream[0],
        upstream_port=upstream[1],
        read_timeout_s=read_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        header_timeout_s=settings.header_timeout_s,
        tls=tls,
    )


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    p = _Parser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    commands = p.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="print a site config")
    render.add_argument("via", choices=PROXIED)
    render.add_argument("--listen", type=_address, default=("0.0.0.0", 80))
    render.add_argument("--upstream", type=_address, default=("127.0.0.1", 8888))
    render.add_argument("--read-timeout", type=float, metavar="SECONDS")
    render.add_argument("--certfile")
    render.add_argument("--keyfile")
    args = p.parse_args(argv)
    if (args.certfile is None) != (args.keyfile is None):
        p.error("--certfile and --keyfile go together")
    via: Via = args.via
    try:
        site = deployable_site(
            via,
            args.listen,
            args.upstream,
            read_timeout_s=args.read_timeout,
            tls=Tls(args.certfile, args.keyfile) if args.certfile else None,
        )
        sys.stdout.write(render_site(site_template(via), site))
    except TemplateError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
