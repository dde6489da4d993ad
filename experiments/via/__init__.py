"""nginx in the path (issue 11, part 2): the ``--via direct,nginx,nginx-defaults`` dimension.

Modules, one concern each:

- ``paths`` — the paths (:data:`VIAS`), ``--via`` parsing, and which transports nginx can
  carry (pure);
- ``render`` — nginx configs from the shipped templates, ``nginx-main.conf`` around
  ``nginx-recommended.conf`` or ``nginx-defaults.conf`` (pure);
- ``nginx`` — :class:`NginxProcess`: nginx as an ordinary child process in a directory of
  its own, started on a free port, probed, stopped and cleaned up;
- ``fronted`` — :class:`FrontedServer`: a transport server with nginx in front, what a
  scenario's ``ctx.server()`` gives on an nginx path;
- ``__main__`` — ``python -m experiments.via render nginx``: the site config to deploy.
"""

from __future__ import annotations

from experiments.via.fronted import FrontedServer, front, recommended_read_timeout_s
from experiments.via.nginx import (
    DEBIAN_PACKAGE,
    NginxError,
    NginxMissing,
    NginxProcess,
    check_config,
    nginx_version,
    require_nginx,
)
from experiments.via.paths import (
    PROXIED,
    VIA_SCENARIOS,
    VIAS,
    UnknownVia,
    Via,
    not_applicable,
    parse_vias,
)
from experiments.via.render import Site, Tls, read_timeout_s, render

__all__ = [
    "DEBIAN_PACKAGE",
    "PROXIED",
    "VIAS",
    "VIA_SCENARIOS",
    "FrontedServer",
    "NginxError",
    "NginxMissing",
    "NginxProcess",
    "Site",
    "Tls",
    "UnknownVia",
    "Via",
    "check_config",
    "front",
    "nginx_version",
    "not_applicable",
    "parse_vias",
    "read_timeout_s",
    "recommended_read_timeout_s",
    "render",
    "require_nginx",
]
