"""Client certificates through real Envoy: `downstream_mtls` (default enforcement,
policy_with_default_deny) with the PPL `client_certificate` criterion, and upstream mTLS
(`tls_client_cert_file`/`tls_client_key_file`, inline `tls_custom_ca`) to an upstream that
requires a client certificate."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authgate.config.runtime import generate_signing_key_b64
from tests.support.certs import TestPKI, make_pki
from tests.support.mtls_upstream import MtlsUpstream
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port


@dataclass
class ClientCert:
    cert: Path
    key: Path
    pem: bytes


@dataclass
class Mtls:
    port: int
    pki: TestPKI
    alice: ClientCert
    bob: ClientCert
    stranger: ClientCert  # issued by a CA authgate does not trust
    clients_ca: Path  # the CA of alice's and bob's certificates

    def get(self, host: str, path: str, who: ClientCert | None) -> httpx.Response:
        context = self.pki.client_ssl_context()
        if who is not None:
            context.load_cert_chain(str(who.cert), str(who.key))
        with map_hosts({"*.test": "127.0.0.1"}), httpx.Client(
            verify=context, timeout=20, follow_redirects=False
        ) as client:
            return client.get(
                f"https://{host}:{self.port}{path}", headers={"accept": "application/json"}
            )


def _issue(ca: trustme.CA, directory: Path, name: str, email: str) -> ClientCert:
    leaf = ca.issue_cert(email, common_name=name)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return ClientCert(cert, key, leaf.cert_chain_pems[0].bytes())


def _fingerprint(pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())  # openssl's long form


def _spki_hash(pem: bytes) -> str:
    key = x509.load_pem_x509_certificate(pem).public_key()
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mtls]:
    workdir = tmp_path_factory.mktemp("mtls")
    pki = make_pki(workdir / "tls", ["app.test", "up.test", "mail.test", "authenticate.test"])
    clients_ca, other_ca, upstream_clients_ca = trustme.CA(), trustme.CA(), trustme.CA()
    clients_ca.cert_pem.write_to_path(str(workdir / "clients-ca.pem"))
    alice = _issue(clients_ca, workdir, "alice", "alice@example.com")
    bob = _issue(clients_ca, workdir, "bob", "bob@corp.example")
    stranger = _issue(other_ca, workdir, "stranger", "alice@example.com")
    # authgate's own certificate for the upstream, from the CA the upstream trusts.
    gate_client = _issue(upstream_clients_ca, workdir, "authgate-proxy", "proxy@example.com")
    upstream_clients_ca.cert_pem.write_to_path(str(workdir / "upstream-clients-ca.pem"))
    port = free_port()
    with MtlsUpstream(pki.cert_file, pki.key_file, workdir / "upstream-clients-ca.pem") as up:
        config = {
            "address": f"127.0.0.1:{port}",
            "certificate_file": str(pki.cert_file),
            "certificate_key_file": str(pki.key_file),
            "downstream_mtls": {"ca_file": str(workdir / "clients-ca.pem")},
            "authenticate_service_url": f"https://authenticate.test:{port}",
            "idp_provider_url": "http://127.0.0.1:9",  # never reached: nobody signs in here
            "idp_client_id": "authgate",
            "idp_client_secret": "secret",
            "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
            "signing_key": generate_signing_key_b64(),
            "routes": [
                {"from": f"https://app.test:{port}", "response": {"status": 200, "body": "hi"},
                 "policy": {"allow": {"and": [
                     {"client_certificate": {"fingerprint": _fingerprint(alice.pem)}}]}}},
                {"from": f"https://mail.test:{port}", "response": {"status": 200, "body": "hi"},
                 "policy": {"allow": {"and": [
                     {"client_certificate": {"san_email": {"ends_with": "@corp.example"}}}]}}},
                {"from": f"https://up.test:{port}", "to": f"https://127.0.0.1:{up.port}",
                 "tls_custom_ca": base64.b64encode(pki.ca_cert_pem).decode(),
                 "tls_client_cert_file": str(gate_client.cert),
                 "tls_client_key_file": str(gate_client.key),
                 "policy": {"allow": {"and": [
                     {"client_certificate": {"spki_hash": [_spki_hash(alice.pem)]}}]}}},
            ],
        }
        with AuthgateStack(workdir / "gate", config, ca_file=pki.ca_file):
            yield Mtls(port, pki, alice, bob, stranger, workdir / "clients-ca.pem")


def _refused_handshake(mtls: Mtls, who: ClientCert | None) -> bool:
    try:
        mtls.get("app.test", "/", who)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError):
        return True
    return False


def test_the_right_fingerprint_is_allowed_and_another_certificate_refused(mtls: Mtls) -> None:
    allowed = mtls.get("app.test", "/", mtls.alice)
    assert (allowed.status_code, allowed.text) == (200, "hi")
    refused = mtls.get("app.test", "/", mtls.bob)
    assert refused.status_code == 401  # a valid certificate, but not the one the policy names


def test_san_email_matcher(mtls: Mtls) -> None:
    assert mtls.get("mail.test", "/", mtls.bob).status_code == 200
    assert mtls.get("mail.test", "/", mtls.alice).status_code == 401


def test_no_certificate_is_refused_by_default(mtls: Mtls) -> None:
    answer = mtls.get("app.test", "/", None)
    assert answer.status_code == 495
    assert answer.json()["error"] == "client_certificate_required"


def test_a_certificate_from_another_ca_ends_the_handshake(mtls: Mtls) -> None:
    assert _refused_handshake(mtls, mtls.stranger)
    assert not _refused_handshake(mtls, mtls.alice)


def test_upstream_mtls_presents_authgates_certificate(mtls: Mtls) -> None:
    answer = mtls.get("up.test", "/build", mtls.alice)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"path": "/build", "client_cn": "authgate-proxy"}
    assert mtls.get("up.test", "/build", mtls.bob).status_code == 401


@pytest.mark.parametrize("enforcement", ["policy", "reject_connection"])
def test_enforcement_modes(mtls: Mtls, tmp_path: Path, enforcement: str) -> None:
    """`policy`: a request without a certificate is up to the route's policy (a public route
    lets it in); `reject_connection`: no certificate, no TLS connection."""
    port = free_port()
    config = {
        "address": f"127.0.0.1:{port}",
        "certificate_file": str(mtls.pki.cert_file),
        "certificate_key_file": str(mtls.pki.key_file),
        "downstream_mtls": {"ca_file": str(mtls.clients_ca), "enforcement": enforcement},
        "authenticate_service_url": f"https://authenticate.test:{port}",
        "idp_provider_url": "http://127.0.0.1:9",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "routes": [{"from": f"https://app.test:{port}", "response": {"body": "open"},
                    "allow_public_unauthenticated_access": True}],
    }
    alice = (mtls.alice.cert, mtls.alice.key)
    with AuthgateStack(tmp_path / "gate", config, ca_file=mtls.pki.ca_file, client_cert=alice):
        other = Mtls(port, mtls.pki, mtls.alice, mtls.bob, mtls.stranger, mtls.clients_ca)
        assert other.get("app.test", "/", mtls.alice).text == "open"
        if enforcement == "policy":
            assert other.get("app.test", "/", None).text == "open"
        else:
            with pytest.raises(httpx.HTTPError):
                other.get("app.test", "/", None)
