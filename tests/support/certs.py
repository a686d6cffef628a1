"""Throw-away PKI for tests: one CA and one EC P-256 leaf certificate.

Built on `trustme` (ECDSA P-256 keys by default).  The leaf's subjectAltName
covers every requested hostname (wildcards such as ``*.svc.test`` are
allowed, but see ``make_pki`` about ``*.test``) plus ``localhost`` and
``127.0.0.1``, so one certificate can serve Envoy's listener, a local JWKS
server, etc.

Files written into ``directory``:

* ``ca.pem``   - the CA certificate (trust anchor for clients),
* ``cert.pem`` - the leaf certificate only (no chain: the CA is the direct issuer),
* ``key.pem``  - the leaf's private key (PEM, unencrypted).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

#: Names always added to the leaf certificate's SANs.
DEFAULT_IDENTITIES: tuple[str, ...] = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TestPKI:
    """Paths and PEM bytes of a CA and a leaf certificate issued by it."""

    __test__ = False  # not a pytest test class, despite the name

    ca_cert_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    ca_file: Path
    cert_file: Path
    key_file: Path
    hostnames: tuple[str, ...]

    def server_ssl_context(self) -> ssl.SSLContext:
        """A TLS server context presenting the leaf certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certfile=str(self.cert_file), keyfile=str(self.key_file))
        return ctx

    def client_ssl_context(self) -> ssl.SSLContext:
        """A TLS client context trusting only this CA (hostname checking on)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_pki(directory: Path, hostnames: list[str]) -> TestPKI:
    """Create a CA and a leaf certificate valid for ``hostnames``.

    ``directory`` is created if needed; existing ``ca.pem``/``cert.pem``/
    ``key.pem`` in it are overwritten.

    Note: OpenSSL (hence Python's ssl, httpx, curl) does not honour a wildcard
    directly under a top-level label: a ``*.test`` SAN does NOT match
    ``jenkins.test``.  List such names explicitly (``*.svc.test`` is fine).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    identities: list[str] = []
    for name in [*hostnames, *DEFAULT_IDENTITIES]:
        if name not in identities:
            identities.append(name)

    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    leaf = ca.issue_cert(*identities, key_type=trustme.KeyType.ECDSA)

    ca_cert_pem = ca.cert_pem.bytes()
    cert_pem = leaf.cert_chain_pems[0].bytes()
    key_pem = leaf.private_key_pem.bytes()

    ca_file = directory / "ca.pem"
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    ca_file.write_bytes(ca_cert_pem)
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)

    return TestPKI(
        ca_cert_pem=ca_cert_pem,
        cert_pem=cert_pem,
        key_pem=key_pem,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        hostnames=tuple(identities),
    )
