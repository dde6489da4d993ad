"""Throwaway TLS certificates for servers under test, and the hash a browser pins.

Nothing here is for production: every certificate is made on the spot, for loopback names.

- :func:`authority_certificate`: a fresh ``trustme`` CA and a server certificate it signed,
  written to a directory (``certfile``, ``keyfile``, ``cafile`` for the client). Every TLS
  server of the suite can be given it (``ssl.SSLContext.load_cert_chain``, aioquic's
  ``QuicConfiguration.load_cert_chain``), every client the CA.
- :func:`pinnable_certificate`: a self-signed ECDSA P-256 certificate valid for at most
  :data:`MAX_PINNED_VALIDITY` (14 days), written the same way, with its SHA-256: what
  Chromium accepts through ``WebTransport(url, {serverCertificateHashes: [...]})`` without
  any CA (the certificate must be ECDSA and live two weeks at most).
- :class:`LocalAuthority`: one CA per user, kept in a private directory (mkcert's idea), so
  that a server started without a certificate and a client started without a CA file, in
  different processes, still agree: the server issues itself a throwaway certificate (in
  memory, ECDSA, pinnable) from the local CA, and a client trusts that CA besides the usual
  ones. :func:`local_ca_file` says where it is, once it exists.

Each certificate is described by one :class:`ServerCertificate` (paths and hash).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import ipaddress
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "DEFAULT_HOSTS",
    "MAX_PINNED_VALIDITY",
    "PINNED_VALIDITY",
    "IssuedCertificate",
    "LocalAuthority",
    "LocalAuthorityError",
    "ServerCertificate",
    "authority_certificate",
    "certificate_sha256",
    "local_authority",
    "local_ca_file",
    "pinnable_certificate",
]

#: The names a loopback server answers to.
DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")
#: The longest validity Chromium accepts for a certificate pinned by its hash.
MAX_PINNED_VALIDITY = datetime.timedelta(days=14)
#: What the pinnable certificates here get: under the cap, with an hour of clock skew.
PINNED_VALIDITY = datetime.timedelta(days=13)
_SKEW = datetime.timedelta(hours=1)
#: The local CA is made anew once it is this old (its certificates never outlive it).
_AUTHORITY_LIFETIME = datetime.timedelta(days=30)


class LocalAuthorityError(OSError):
    """The local CA's directory cannot be trusted (not ours, or open to others)."""


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A certificate and key on disk, the CA file that verifies it, and its SHA-256."""

    certfile: Path
    keyfile: Path
    #: What a client loads to trust it (the certificate itself when it is self-signed).
    cafile: Path
    #: SHA-256 of the certificate (DER), lowercase hex.
    sha256: str

    @property
    def sha256_base64(self) -> str:
        """The same hash, base64 (handy for a page's ``serverCertificateHashes``)."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate made in memory: the objects a TLS library takes, and its SHA-256."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    sha256: str
    not_after: datetime.datetime


def certificate_sha256(certificate: x509.Certificate | bytes) -> str:
    """SHA-256 over the certificate's DER encoding (a PEM or DER blob, or the object)."""
    if isinstance(certificate, bytes):
        if certificate.lstrip().startswith(b"-----BEGIN"):
            certificate = x509.load_pem_x509_certificate(certificate)
        else:
            certificate = x509.load_der_x509_certificate(certificate)
    return certificate.fingerprint(hashes.SHA256()).hex()


def authority_certificate(
    directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS
) -> ServerCertificate:
    """A new trustme CA and a certificate it issued for ``hosts``, written to ``directory``
    (``server.pem``: certificate then chain, ``server.key``, ``ca.pem``)."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*hosts)
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile, cafile = (
        directory / "server.pem",
        directory / "server.key",
        directory / "ca.pem",
    )
    leaf.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in leaf.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    _write_private(keyfile, leaf.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(cafile))
    return ServerCertificate(
        certfile, keyfile, cafile, certificate_sha256(leaf.cert_chain_pems[0].bytes())
    )


def pinnable_certificate(
    directory: Path,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    valid_for: datetime.timedelta = PINNED_VALIDITY,
) -> ServerCertificate:
    """A self-signed ECDSA P-256 certificate for ``hosts``, valid ``valid_for`` (at most
    14 days, as Chromium requires of a hash-pinned one), written to ``directory``."""
    issued = _self_signed(hosts, valid_for)
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / "pinned.pem", directory / "pinned.key"
    certfile.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(keyfile, _key_pem(issued.private_key))
    return ServerCertificate(certfile, keyfile, certfile, issued.sha256)


class LocalAuthority:
    """This user's local CA: a trustme CA whose files live in a private directory.

    Made on first use (under a file lock, so concurrent processes agree on one) and again
    once older than 30 days. :meth:`issue` makes server certificates in memory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cafile = directory / "ca.pem"
        self._keyfile = directory / "ca.key"
        _private_directory(directory)
        with _locked(directory / ".lock"):
            if not self._fresh():
                ca = trustme.CA(organization_name="transport-bench local CA")
                _write_private(self._keyfile, ca.private_key_pem.bytes())
                # Written last and atomically: whoever sees ca.pem sees its key too.
                staged = directory / "ca.pem.new"
                ca.cert_pem.write_to_path(str(staged))
                staged.replace(self.cafile)
            self._ca = trustme.CA.from_pem(self.cafile.read_bytes(), self._keyfile.read_bytes())

    def _fresh(self) -> bool:
        try:
            age_s = datetime.datetime.now().timestamp() - self.cafile.stat().st_mtime
        except FileNotFoundError:
            return False
        return self._keyfile.exists() and age_s < _AUTHORITY_LIFETIME.total_seconds()

    def issue(
        self, hosts: Sequence[str] = DEFAULT_HOSTS, valid_for: datetime.timedelta = PINNED_VALIDITY
    ) -> IssuedCertificate:
        """An ECDSA P-256 certificate for ``hosts`` signed by this CA, valid ``valid_for``
        (default 13 days: a browser may pin it by its hash as well)."""
        now = datetime.datetime.now(datetime.UTC)
        not_after = now + valid_for - _SKEW
        leaf = self._ca.issue_cert(
            *hosts, not_before=now - _SKEW, not_after=not_after, key_type=trustme.KeyType.ECDSA
        )
        certificate = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):  # trustme's ECDSA is P-256
            raise TypeError(f"expected an ECDSA key, got {type(key).__name__}")
        return IssuedCertificate(certificate, key, certificate_sha256(certificate), not_after)


_authorities: dict[Path, LocalAuthority] = {}


def _default_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"transport-bench-{os.getuid()}" / "local-ca"


def local_authority(directory: Path | None = None) -> LocalAuthority:
    """This user's local CA (made if need be), one object per directory and process."""
    directory = directory or _default_directory()
    authority = _authorities.get(directory)
    if authority is None or not authority._fresh():
        authority = _authorities[directory] = LocalAuthority(directory)
    return authority


def local_ca_file(directory: Path | None = None) -> Path | None:
    """The local CA's certificate if it exists in a directory only this user controls."""
    directory = directory or _default_directory()
    cafile = directory / "ca.pem"
    try:
        _check_private(directory)
    except (FileNotFoundError, LocalAuthorityError):
        return None
    return cafile if cafile.exists() else None


def _self_signed(hosts: Sequence[str], valid_for: datetime.timedelta) -> IssuedCertificate:
    if valid_for > MAX_PINNED_VALIDITY:
        raise ValueError(f"a pinned certificate lives {MAX_PINNED_VALIDITY.days} days at most")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + valid_for - _SKEW
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return IssuedCertificate(certificate, key, certificate_sha256(certificate), not_after)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only (created 0600, never briefly wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _private_directory(directory: Path) -> None:
    """Create ``directory`` (and its parent) 0700, or check that an existing one is ours."""
    for path in (directory.parent, directory):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        _check_private(path)


def _check_private(path: Path) -> None:
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise LocalAuthorityError(f"{path} is not a directory owned by this user")
    if info.st_mode & 0o077:
        raise LocalAuthorityError(f"{path} is open to other users (mode {info.st_mode & 0o777:o})")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
