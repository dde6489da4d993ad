"""Throwaway certificates: what TLS libraries load, what Chromium pins, the local CA."""

from __future__ import annotations

import datetime
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from transports.certs import (
    MAX_PINNED_VALIDITY,
    LocalAuthority,
    LocalAuthorityError,
    authority_certificate,
    certificate_sha256,
    local_authority,
    local_ca_file,
    pinnable_certificate,
)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_an_authority_certificate_loads_into_ssl_and_verifies_with_its_ca(tmp_path: Path) -> None:
    cert = authority_certificate(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert.certfile, cert.keyfile)
    client = ssl.create_default_context(cafile=str(cert.cafile))
    assert client.get_ca_certs()  # the CA is what the client trusts
    assert stat.S_IMODE(cert.keyfile.stat().st_mode) == 0o600
    assert certificate_sha256(cert.certfile.read_bytes()) == cert.sha256
    names = _load(cert.certfile).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "localhost" in names.value.get_values_for_type(x509.DNSName)


def test_a_pinnable_certificate_is_what_chromium_accepts_by_hash(tmp_path: Path) -> None:
    cert = pinnable_certificate(tmp_path)
    loaded = _load(cert.certfile)
    key = loaded.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    lifetime = loaded.not_valid_after_utc - loaded.not_valid_before_utc
    assert lifetime <= MAX_PINNED_VALIDITY
    assert loaded.not_valid_before_utc <= datetime.datetime.now(datetime.UTC)
    assert cert.sha256 == certificate_sha256(loaded) and len(bytes.fromhex(cert.sha256)) == 32
    assert cert.cafile == cert.certfile  # self-signed: its own trust anchor
    with pytest.raises(ValueError, match="14 days"):
        pinnable_certificate(tmp_path / "long", valid_for=datetime.timedelta(days=15))


def test_the_local_authority_is_private_shared_and_issues_pinnable_certificates(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "user" / "ca"
    assert local_ca_file(directory) is None  # nothing made by asking
    authority = local_authority(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert local_ca_file(directory) == authority.cafile
    issued = authority.issue()
    assert issued.certificate.issuer == _load(authority.cafile).subject
    lifetime = issued.certificate.not_valid_after_utc - issued.certificate.not_valid_before_utc
    assert lifetime <= MAX_PINNED_VALIDITY
    # A second process (here: a fresh object) finds the same CA rather than making another.
    assert LocalAuthority(directory).cafile.read_bytes() == authority.cafile.read_bytes()


def test_a_local_authority_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "open" / "ca"
    directory.mkdir(parents=True, mode=0o700)
    os.chmod(directory.parent, 0o700)
    os.chmod(directory, 0o777)
    with pytest.raises(LocalAuthorityError, match="open to other users"):
        local_authority(directory)
    assert local_ca_file(directory) is None
