"""Why a connection attempt failed, in the few kinds a user can act on (pure).

Each transport's ``connect`` converts its library's exceptions into the classes of
:mod:`model.errors`; the shared client sorts those into kinds with :func:`failure_kind`:

- ``unavailable``: nobody there (connection refused, unreachable, no answer in time);
- ``refused``: a server answered and said no (HTTP 4xx/5xx, WebSocket 1008/1013, an error line);
- ``not-this-protocol``: the peer speaks something else (retrying cannot fix it);
- ``certificate``: the server's TLS certificate did not verify;
- ``lost``: a connection that was up ended (closed, reset, silent, a malformed message).

Text a server chose (close reasons, error lines, HTTP bodies and reasons) ends up in these
errors' messages; :func:`printable` makes it safe to print on a terminal.
"""

from __future__ import annotations

import ssl
import unicodedata
from typing import Literal

from model.errors import (
    CertificateInvalid,
    NotThisProtocol,
    ServerRefused,
    ServerUnavailable,
    StreamError,
)

__all__ = ["FailureKind", "failure_kind", "printable", "unreachable"]

FailureKind = Literal["unavailable", "refused", "not-this-protocol", "certificate", "lost"]

#: Most characters of a server's text shown on a terminal: an error line may be 1 MiB.
PRINTABLE_LIMIT = 300


def failure_kind(error: StreamError) -> FailureKind:
    """The kind of ``error``, most specific class first."""
    if isinstance(error, NotThisProtocol):
        return "not-this-protocol"
    if isinstance(error, ServerRefused):
        return "refused"
    if isinstance(error, CertificateInvalid):
        return "certificate"
    if isinstance(error, ServerUnavailable):
        return "unavailable"
    return "lost"


def unreachable(message: str, exc: BaseException) -> StreamError:
    """The error for a connect that failed with ``exc``: a certificate that did not verify
    (libraries wrap ``ssl.SSLCertVerificationError`` in their own errors, so the whole chain is
    searched) or else nobody there. The caller raises it ``from exc``."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            # aiohttp's subclass has no verify_message of its own
            reason = getattr(cause, "verify_message", None) or cause
            return CertificateInvalid(f"{message}: {reason}")
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return ServerUnavailable(f"{message}: {exc!r}" if not str(exc) else f"{message}: {exc}")


def printable(text: str, limit: int = PRINTABLE_LIMIT) -> str:
    """``text`` with every control and format character escaped, cut to ``limit`` characters.

    Escape sequences (ESC, CSI), carriage returns, backspaces and bidi overrides from a server
    would otherwise rewrite the user's terminal or hide what is printed around them.
    """
    if len(text) > limit:
        text = text[:limit] + "…"
    out: list[str] = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")  # so an escaped byte and a literal backslash read differently
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
