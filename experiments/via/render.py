"""nginx configs from the shipped templates (pure: text in, text out).

Three templates live beside this module: ``nginx-main.conf`` (the process: pid, error log,
temp paths, all inside the run's directory) around one site config, ``nginx-recommended.conf``
(what the project recommends for production) or ``nginx-defaults.conf`` (nothing but
``proxy_pass``). A placeholder is ``{{name}}``; :func:`fill` replaces each one, indenting a
multi-line value like the line it stands on, and drops a line whose placeholder rendered
empty. Every placeholder must get a value (:class:`TemplateError` otherwise), and every value
that goes into a directive is checked first, so a host or path cannot smuggle in a ``;``.

TLS terminated at nginx is one more :class:`Site` field: with ``tls`` set the listen line
becomes ``listen HOST:PORT ssl;`` followed by ``ssl_certificate`` and ``ssl_certificate_key``
(the certificate paths are template values like any other).

:func:`read_timeout_s` is the recommended ``proxy_read_timeout``: above the longest silence
a healthy stream has (a heartbeat interval, a long-poll hold) by the dead-peer timeout, so
nginx gives up on a silent upstream about when a client would.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from transports.settings import Settings
from transports.sockets import url_host

__all__ = [
    "NGINX_DEFAULT_READ_TIMEOUT_S",
    "Process",
    "Site",
    "TemplateError",
    "Tls",
    "fill",
    "nginx_time",
    "placeholders",
    "read_timeout_s",
    "render",
    "render_site",
    "site_values",
]

#: nginx's own ``proxy_read_timeout`` when nothing sets it.
NGINX_DEFAULT_READ_TIMEOUT_S = 60.0

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
#: What a host or a path may hold in a rendered directive (no spaces, quotes, ``;``, braces;
#: ``_`` is in every temporary directory's alphabet).
_SAFE = re.compile(r"[A-Za-z0-9._/:+@=,%\[\]_-]+")


class TemplateError(ValueError):
    """A template placeholder without a value, or a value that would break the config."""


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS terminated at nginx: the server certificate (chain) and its key, as paths."""

    certfile: str
    keyfile: str


@dataclass(frozen=True, slots=True)
class Site:
    """What a site template is filled with: where nginx listens and where it forwards."""

    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int
    #: ``proxy_read_timeout`` (and send timeout) in seconds. The recommended config always
    #: states one; the defaults config only when a run shortens nginx's own 60 s.
    read_timeout_s: float | None = None
    connect_timeout_s: float = 5.0
    #: How long a client may take to send its request head (``client_header_timeout``).
    header_timeout_s: float = 10.0
    #: Idle keep-alive connections nginx holds to the upstream (recommended config).
    upstream_keepalive: int = 16
    tls: Tls | None = None


@dataclass(frozen=True, slots=True)
class Process:
    """What the process template is filled with: the run's directory and the limits."""

    directory: str
    worker_connections: int = 4096
    log_level: str = "warn"


def placeholders(template: str) -> list[str]:
    """The placeholder names of ``template``, in order of first use."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(template)))


def fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every ``{{name}}`` replaced by ``values[name]``.

    A multi-line value is indented like the line its placeholder stands on; a line that held
    only placeholders that rendered empty is dropped. Raises :class:`TemplateError` naming a
    placeholder that has no value.
    """
    missing = [name for name in placeholders(template) if name not in values]
    if missing:
        raise TemplateError(f"no value for {', '.join(missing)} in the nginx template")
    out: list[str] = []
    for line in template.splitlines():
        if not _PLACEHOLDER.search(line):
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]

        def value(match: re.Match[str], indent: str = indent) -> str:
            return values[match.group(1)].replace("\n", "\n" + indent)

        rendered = _PLACEHOLDER.sub(value, line)
        if rendered.strip():
            out.extend(part.rstrip() for part in rendered.split("\n"))
    return "\n".join(out) + "\n"


def nginx_time(seconds: float) -> str:
    """A duration as nginx reads it: whole seconds as ``3s``, anything finer in ``ms``."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise TemplateError(f"an nginx timeout must be a positive duration, got {seconds!r}")
    ms = math.ceil(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _safe(what: str, text: str) -> str:
    if not _SAFE.fullmatch(text):
        raise TemplateError(f"{what} {text!r} cannot go into an nginx directive as it is")
    return text


def _address(what: str, host: str, port: int) -> str:
    if not 0 < port < 65536:
        raise TemplateError(f"{what} port {port} is not a TCP port")
    return f"{_safe(what, url_host(host))}:{port}"


def _listen(site: Site) -> str:
    address = _address("listen", site.listen_host, site.listen_port)
    if site.tls is None:
        return f"listen {address};"
    return (
        f"listen {address} ssl;\n"
        f"ssl_certificate {_safe('certificate', site.tls.certfile)};\n"
        f"ssl_certificate_key {_safe('key', site.tls.keyfile)};"
    )


def site_values(site: Site) -> dict[str, str]:
    """The values of every placeholder the site templates use."""
    if site.upstream_keepalive < 1:
        raise TemplateError(f"upstream keepalive must be >= 1, got {site.upstream_keepalive}")
    read = site.read_timeout_s
    return {
        "listen": _listen(site),
        "upstream": _address("upstream", site.upstream_host, site.upstream_port),
        "upstream_keepalive": str(site.upstream_keepalive),
        "read_timeout": nginx_time(NGINX_DEFAULT_READ_TIMEOUT_S if read is None else read),
        "read_timeout_override": "" if read is None else f"proxy_read_timeout {nginx_time(read)};",
        "connect_timeout": nginx_time(site.connect_timeout_s),
        "header_timeout": nginx_time(site.header_timeout_s),
    }


def render_site(site_template: str, site: Site) -> str:
    """The site config alone (what goes into a production nginx's ``http`` block)."""
    return fill(site_template, site_values(site))


def render(main_template: str, site_template: str, site: Site, process: Process) -> str:
    """The whole ``nginx.conf``: the process template around the filled site template."""
    directory = _safe("directory", process.directory.rstrip("/") or "/")
    if process.worker_connections < 2:
        raise TemplateError("nginx needs at least 2 worker connections (one stream is two)")
    if process.log_level not in ("debug", "info", "notice", "warn", "error", "crit"):
        raise TemplateError(f"unknown nginx log level {process.log_level!r}")
    return fill(
        main_template,
        {
            "pid_file": f"{directory}/nginx.pid",
            "error_log": f"{directory}/error.log",
            "log_level": process.log_level,
            "worker_connections": str(process.worker_connections),
            "temp_dir": f"{directory}/temp",
            "site": render_site(site_template, site).rstrip("\n"),
        },
    )


def read_timeout_s(settings: Settings, longest_hold_s: float = 0.0) -> float:
    """The recommended ``proxy_read_timeout`` for a transport run with ``settings``.

    The longest silence of a healthy stream (the heartbeat interval, or a long poll's hold,
    ``longest_hold_s``) plus the dead-peer timeout; nginx's own 60 s when no dead-peer
    timeout is set (nothing then says how long a silence may be).
    """
    if settings.dead_after_s is None:
        return NGINX_DEFAULT_READ_TIMEOUT_S
    return max(settings.heartbeat_s, longest_hold_s) + settings.dead_after_s
