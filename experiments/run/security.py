"""The ``--security plain,tls`` dimension: which runs go over TLS, with which certificate.

``plain``: TCP as it comes. ``tls``: TLS around every connection, as ``serve --tls --certfile
F --keyfile F`` and ``listen --tls --cafile F`` do it (:mod:`transports.tls`): the harness
starts each server through exactly those options (:class:`~experiments.run.processes.
ServerProcess` ``tls=``), and gives the clients' job the settings ``listen --tls --cafile``
would build (``Settings.tls`` holding the CA). The certificate is made once per run
(:func:`run_certificate`): a throwaway trustme CA and a server certificate for the loopback
names and the emulated paths' server address, in a private temporary directory removed when
the run ends (no key is ever written to the results).

What the records say (``params["security"]``) is the security actually in force:

- WebTransport is QUIC, and QUIC has no plaintext: it always runs TLS 1.3. Its records say
  ``tls`` in every run. In a run that has ``tls`` too, its ``plain`` step would only repeat
  the ``tls`` one, so that step is one "not applicable" record ("QUIC is always TLS 1.3");
  in a plain-only run it runs as ever (with the throwaway certificate its server issues
  itself from the local CA) and says ``tls``.
- ``tls`` through nginx (``--via nginx*``): nginx terminates TLS with the run's certificate
  (:class:`experiments.via.Tls` on its site) and speaks plain HTTP to the server behind it, as
  a production proxy does; the client's side of the path is TLS, which is what the records'
  ``security`` says.
- ``tls`` with browser clients: not applicable. The pages would need Chromium to trust the
  run's CA (an SPKI pin or ``ignore_https_errors``) and an ``https`` server URL.
- ``tls`` in ``bad-input`` and ``interop``: not applicable. Their hostile peers and
  third-party readers speak the protocol in cleartext on sockets of their own, so under TLS
  they would measure the TLS handshake's refusal, not the transport.

Throughput's baseline pushers have no TLS: under ``tls`` a transport is still compared with
its plaintext library ceiling, so ``overhead_fraction`` then includes what TLS costs.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transports.certs import DEFAULT_HOSTS, authority_certificate
from transports.contract import Transport
from transports.tls import TlsSettings

__all__ = [
    "DEFAULT_SECURITY",
    "PLAINTEXT_SCENARIOS",
    "SECURITIES",
    "TLS_SCENARIOS",
    "RunCertificate",
    "Security",
    "UnknownSecurity",
    "always_tls",
    "parse_securities",
    "run_certificate",
    "security_in_force",
    "security_not_applicable",
]

Security = Literal["plain", "tls"]
SECURITIES: tuple[Security, ...] = ("plain", "tls")
DEFAULT_SECURITY: Security = "plain"

#: Scenarios whose own peers speak cleartext: why each cannot run under ``tls``.
PLAINTEXT_SCENARIOS: dict[str, str] = {
    "bad-input": "its hostile peers send cleartext protocol bytes, which TLS would refuse "
    "before the transport sees them",
    "interop": "its third-party readers open cleartext connections of their own",
}


#: Scenarios about what TLS costs: a run's default scenarios include them only when the run
#: has ``tls`` (``--scenarios`` names them in any run). ``reconnect-cost`` compares plain,
#: TLS full and TLS resumed reconnects; 30 reconnects a transport and path.
TLS_SCENARIOS: tuple[str, ...] = ("reconnect-cost",)


class UnknownSecurity(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown --security {name!r}; known: {', '.join(SECURITIES)}")


def parse_securities(text: str) -> tuple[Security, ...]:
    """``"plain,tls"`` -> ``("plain", "tls")``, each once; :class:`UnknownSecurity` otherwise."""
    out: list[Security] = []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownSecurity(text)
    for name in names:
        security = next((s for s in SECURITIES if s == name), None)
        if security is None:
            raise UnknownSecurity(name)
        if security not in out:
            out.append(security)
    return tuple(out)


def always_tls(transport: Transport) -> bool:
    """Whether ``transport`` has no plaintext form: QUIC (UDP) carries TLS 1.3 itself."""
    return transport.features.transport_protocol == "udp"


def security_in_force(security: str, transport: Transport) -> Security:
    """What ``transport`` really runs under when the run asks for ``security``."""
    return "tls" if always_tls(transport) or security == "tls" else "plain"


def security_not_applicable(
    security: str,
    transport: Transport,
    *,
    scenario: str,
    client_kind: str,
    securities: Sequence[str],
) -> str | None:
    """Why ``transport`` does not run ``scenario`` under ``security`` in this step (None: it
    does). ``securities``: every value the run has (a plain step of an always-TLS transport
    only repeats its tls step when the run has one)."""
    if security == "plain":
        if always_tls(transport) and "tls" in securities:
            return (
                f"not applicable: QUIC is always TLS 1.3, so {transport.name}'s records "
                "are under security tls"
            )
        return None
    if client_kind == "browser":
        return (
            "not applicable: browser clients under TLS would need Chromium to trust the "
            "run's throwaway CA, which the pages are not given"
        )
    why = PLAINTEXT_SCENARIOS.get(scenario)
    return None if why is None else f"not applicable under TLS: {why}"


@dataclass(frozen=True, slots=True)
class RunCertificate:
    """The run's certificate: what servers and clients get under ``tls``."""

    certfile: Path
    keyfile: Path
    cafile: Path

    @property
    def server_tls(self) -> TlsSettings:
        """What ``serve --tls --certfile F --keyfile F`` builds."""
        return TlsSettings(certfile=str(self.certfile), keyfile=str(self.keyfile))

    @property
    def client_tls(self) -> TlsSettings:
        """What ``listen --tls --cafile F`` builds."""
        return TlsSettings(cafile=str(self.cafile))


@contextlib.contextmanager
def run_certificate(extra_hosts: Sequence[str] = ()) -> Iterator[RunCertificate]:
    """A throwaway CA and a server certificate for the loopback names and ``extra_hosts``,
    in a private temporary directory that is removed (keys and all) when the block ends."""
    with tempfile.TemporaryDirectory(prefix="transport-bench-tls-") as directory:
        made = authority_certificate(
            Path(directory), tuple(dict.fromkeys((*DEFAULT_HOSTS, *extra_hosts)))
        )
        yield RunCertificate(made.certfile, made.keyfile, made.cafile)
