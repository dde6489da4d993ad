"""TLS for every transport: the settings, the two ``ssl`` contexts, and one clear error each.

TLS wraps a transport; the wire form inside is unchanged. Servers and clients take the same
:class:`TlsSettings` (in the shared settings, so the harness hands one document to both):
``certfile`` and ``keyfile`` for a server, ``cafile`` for a client (``None``: the system's
trust store, plus the suite's local CA when one exists, see :mod:`transports.certs`).

Everything that can be wrong with the files is found when the context is built, and said in
one line (:class:`TlsConfigError`): a missing or unreadable file, a file that is not a PEM
certificate or key, a key that does not belong to the certificate, a CA file with no
certificate in it. A server refuses to start on it (the CLI exits 2); a client never retries
it. A certificate the client does not trust is found at the handshake instead:
:func:`transports.failures.unreachable` finds it anywhere in an exception's chain, so every
transport raises :class:`~model.errors.CertificateInvalid`, which the shared client treats as
final, like a peer that does not speak the protocol (a certificate error is not a network
fault, and retrying it forever would hide it).

Contexts are cached per settings: a reconnecting client reuses its context. No client library
here hands Python's ``ssl`` a session to resume, so by default every reconnect is a full
handshake; with ``resume_sessions`` (``listen --tls --resume-sessions``) the client context
is a :class:`~transports.tls_sessions.ResumingContext`, which offers each new connection the
newest session it saw for the same host (gRPC uses grpcio's own session cache instead, see
:mod:`transports.grpc_stream`). The ``reconnect-cost`` experiment measures both.
"""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path

import msgspec

from transports.tls_sessions import resuming_client_context

__all__ = [
    "HTTP1",
    "TlsConfigError",
    "TlsSettings",
    "client_context",
    "client_ssl",
    "server_context",
    "server_ssl",
    "uvicorn_tls",
]

#: Protocols the HTTP/1.1 transports offer in ALPN (TCP offers none; gRPC and HTTP/3 their own).
HTTP1 = ("http/1.1",)


class TlsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the certificate, its key and the CA a client trusts are (paths as given)."""

    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    #: A client offers the session of its previous connection to the same host (resumption).
    resume_sessions: bool = False


class TlsConfigError(ValueError):
    """A certificate, key or CA file that cannot be used, in one line."""


def _readable(path: str | None, what: str) -> Path:
    if not path:
        raise TlsConfigError(f"TLS needs {what}")
    p = Path(path)
    if not p.is_file():
        raise TlsConfigError(f"{what} {path}: no such file")
    if not os.access(p, os.R_OK):
        raise TlsConfigError(f"{what} {path}: not readable")
    return p


def _reason(exc: ssl.SSLError | OSError) -> str:
    return getattr(exc, "reason", None) or exc.strerror or str(exc)


@functools.lru_cache(maxsize=16)
def server_context(tls: TlsSettings, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A server context holding ``certfile`` and ``keyfile`` (TLS 1.2 and newer)."""
    cert = _readable(tls.certfile, "--certfile")
    key = _readable(tls.keyfile, "--keyfile")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = _reason(exc)
        if "KEY_VALUES_MISMATCH" in reason or "key values mismatch" in str(exc):
            raise TlsConfigError(f"--keyfile {key} does not match --certfile {cert}") from None
        if "PEM" in reason or "NO_START_LINE" in reason or "pem" in str(exc).lower():
            raise TlsConfigError(
                f"--certfile {cert} or --keyfile {key} is not a PEM certificate/key ({reason})"
            ) from None
        raise TlsConfigError(f"--certfile {cert} / --keyfile {key}: {reason}") from None
    except OSError as exc:
        raise TlsConfigError(f"--certfile {cert} / --keyfile {key}: {_reason(exc)}") from None
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


@functools.lru_cache(maxsize=16)
def client_context(tls: TlsSettings, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A client context that verifies the server against ``cafile`` (None: the system's
    store and the suite's local CA), host names included; with ``resume_sessions`` a
    :class:`~transports.tls_sessions.ResumingContext` set up the same way."""
    if tls.resume_sessions:
        ctx: ssl.SSLContext = resuming_client_context()
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.cafile is not None:
        ca = _readable(tls.cafile, "--cafile")
        try:
            ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise TlsConfigError(f"--cafile {ca}: no certificate in it ({_reason(exc)})") from None
    else:
        from transports.certs import local_ca_file

        local = local_ca_file()
        if local is not None:
            ctx.load_verify_locations(cafile=local)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def server_ssl(tls: TlsSettings | None, alpn: tuple[str, ...] = ()) -> ssl.SSLContext | None:
    """The server context for ``settings.tls`` (None: plain)."""
    return None if tls is None else server_context(tls, alpn)


def client_ssl(tls: TlsSettings | None, alpn: tuple[str, ...] = ()) -> ssl.SSLContext | None:
    """The client context for ``settings.tls`` (None: plain)."""
    return None if tls is None else client_context(tls, alpn)


def uvicorn_tls(tls: TlsSettings | None) -> tuple[str | None, str | None]:
    """``uvicorn.Config``'s ``ssl_certfile`` and ``ssl_keyfile`` for ``settings.tls`` (uvicorn
    builds its context from files; :func:`server_context` checks them first, for one clear
    error)."""
    if tls is None:
        return None, None
    server_context(tls)
    return tls.certfile, tls.keyfile
