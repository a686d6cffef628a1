"""Tests of the test-support modules: certs, resolve (map_hosts) and upstream."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm

from tests.support.certs import TestPKI, make_pki
from tests.support.resolve import lookup, map_hosts, map_hosts_fixture
from tests.support.upstream import (
    ASSERTION_HEADER,
    AssertionRejected,
    SampleUpstream,
    UnknownKeyId,
    extract_token,
    groups_from_claim,
    verify_assertion,
)

ISSUER = "authenticate.test"
AUDIENCE = "jenkins.test"

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "use": "sig", "alg": "ES256"})
    return jwk


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "email": "alice@example.com",
        "groups": ["admins", "devs"],
        "iat": now,
        "exp": now + 300,
    }
    for name, value in overrides.items():
        if value is _DROP:
            base.pop(name, None)
        else:
            base[name] = value
    return base


_DROP = object()


def sign(payload: dict[str, Any], key: ec.EllipticCurvePrivateKey, kid: str = "k1") -> str:
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 token built by hand (pyjwt refuses asymmetric-looking HMAC secrets)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def jwks(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return {"keys": [public_jwk(key, "k1")]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    # explicit names: OpenSSL ignores a wildcard directly above a TLD ("*.test")
    return make_pki(tmp_path_factory.mktemp("pki"), ["jenkins.test", "jwks.test", "*.svc.test"])


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for AF_UNIX socket paths (108-byte limit)."""
    path = Path(tempfile.mkdtemp(prefix="ag-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# a small local TLS server (JWKS + echo of what it saw)
# --------------------------------------------------------------------------


class TLSServer:
    """Threaded HTTPS server recording SNI names; serves ``self.jwks`` at the
    Pomerium JWKS path and a JSON echo elsewhere.  ``gate`` (if cleared) makes
    JWKS responses wait."""

    def __init__(self, pki: TestPKI) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.sni: list[str | None] = []
        self.hits: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.path)
                if self.path == "/.well-known/pomerium/jwks.json":
                    outer.gate.wait(10)
                    body = json.dumps(outer.jwks).encode()
                else:
                    body = json.dumps({"path": self.path, "host": self.headers["Host"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ctx = pki.server_ssl_context()

        def on_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, c: Any) -> None:
            outer.sni.append(name)

        ctx.sni_callback = on_sni
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port: int = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def jwks_url(self, host: str = "jwks.test") -> str:
        return f"https://{host}:{self.port}/.well-known/pomerium/jwks.json"

    def __enter__(self) -> TLSServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tls_server(pki: TestPKI) -> Iterator[TLSServer]:
    with TLSServer(pki) as server:
        yield server


# --------------------------------------------------------------------------
# certs
# --------------------------------------------------------------------------


def test_make_pki_writes_files_with_sans(pki: TestPKI) -> None:
    from cryptography import x509

    assert pki.ca_file.read_bytes() == pki.ca_cert_pem
    assert pki.cert_file.name == "cert.pem" and pki.key_file.name == "key.pem"
    assert pki.ca_file.parent == pki.cert_file.parent == pki.key_file.parent
    cert = x509.load_pem_x509_certificate(pki.cert_file.read_bytes())
    assert pki.cert_file.read_bytes().count(b"BEGIN CERTIFICATE") == 1
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    assert {"jenkins.test", "jwks.test", "*.svc.test", "localhost"} <= set(dns)
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


# --------------------------------------------------------------------------
# verify_assertion
# --------------------------------------------------------------------------


def test_valid_token_accepted(key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any]) -> None:
    identity = verify_assertion(sign(claims(), key), jwks, [ISSUER], [AUDIENCE])
    assert identity["username"] == "alice@example.com"
    assert identity["email"] == "alice@example.com"
    assert identity["groups"] == ["admins", "devs"]
    assert identity["claims"]["sub"] == "user-123"


def test_audience_list_and_several_acceptable_values(
    key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any]
) -> None:
    token = sign(claims(aud=["other.test", AUDIENCE]), key)
    assert verify_assertion(token, jwks, ["x", ISSUER], ["y", AUDIENCE])["username"]


def test_empty_issuer_and_audience_lists_skip_those_checks(
    key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any]
) -> None:
    token = sign(claims(iss="whoever", aud="whatever"), key)
    assert verify_assertion(token, jwks, [], [])["username"] == "alice@example.com"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "evil.test"}, "issuer"),
        ({"iss": _DROP}, "issuer"),
        ({"iss": "https://" + ISSUER}, "issuer"),  # exact comparison
        ({"aud": "other.test"}, "audience"),
        ({"aud": _DROP}, "audience"),
        ({"aud": [AUDIENCE.upper()]}, "audience"),
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"groups": _DROP}, "groups"),
        ({"groups": None}, "groups"),
        ({"email": _DROP}, "email"),
    ],
)
def test_bad_claims_rejected(
    key: ec.EllipticCurvePrivateKey,
    jwks: dict[str, Any],
    overrides: dict[str, Any],
    reason: str,
) -> None:
    with pytest.raises(AssertionRejected, match=reason):
        verify_assertion(sign(claims(**overrides), key), jwks, [ISSUER], [AUDIENCE])


def test_leeway_tolerates_small_clock_skew(
    key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any]
) -> None:
    token = sign(claims(exp=int(time.time()) - 5), key)
    with pytest.raises(AssertionRejected):
        verify_assertion(token, jwks, [ISSUER], [AUDIENCE])
    assert verify_assertion(token, jwks, [ISSUER], [AUDIENCE], leeway=60)["username"]


def test_other_key_same_kid_rejected(jwks: dict[str, Any]) -> None:
    token = sign(claims(), new_key(), kid="k1")
    with pytest.raises(AssertionRejected, match="signature"):
        verify_assertion(token, jwks, [ISSUER], [AUDIENCE])


def test_unknown_kid_raises_unknown_key_id(jwks: dict[str, Any]) -> None:
    token = sign(claims(), new_key(), kid="k2")
    with pytest.raises(UnknownKeyId):
        verify_assertion(token, jwks, [ISSUER], [AUDIENCE])


def test_hs256_rejected_even_with_public_key_as_secret(
    key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any]
) -> None:
    # classic key-confusion attempt: HMAC keyed with the public JWK / PEM
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    for secret in [b"x" * 32, json.dumps(jwks["keys"][0]).encode(), pem]:
        token = hs256_token(claims(), secret, kid="k1")
        with pytest.raises(AssertionRejected, match="HS256"):
            verify_assertion(token, jwks, [ISSUER], [AUDIENCE])


def test_alg_none_rejected(jwks: dict[str, Any]) -> None:
    token = jwt.encode(claims(), "", algorithm="none", headers={"kid": "k1"})
    with pytest.raises(AssertionRejected, match="none"):
        verify_assertion(token, jwks, [ISSUER], [AUDIENCE])


def test_malformed_token_rejected(jwks: dict[str, Any]) -> None:
    with pytest.raises(AssertionRejected, match="malformed"):
        verify_assertion("not-a-jwt", jwks, [ISSUER], [AUDIENCE])


def test_groups_claim_shapes() -> None:
    assert groups_from_claim(["a", "b"]) == ["a", "b"]
    assert groups_from_claim([]) == []
    assert groups_from_claim("a,,b") == ["a", "b"]
    assert groups_from_claim("") == []
    for bad in (None, [1, 2], {"a": 1}):
        with pytest.raises(AssertionRejected):
            groups_from_claim(bad)


def test_group_string_is_split(key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any]) -> None:
    token = sign(claims(groups="ops,devs"), key)
    assert verify_assertion(token, jwks, [ISSUER], [AUDIENCE])["groups"] == ["ops", "devs"]


def test_extract_token_like_the_plugin() -> None:
    assert extract_token(None) is None
    assert extract_token("") is None
    assert extract_token("  Bearer  ") is None
    assert extract_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert extract_token("bearer abc.def.ghi ") == "abc.def.ghi"
    assert extract_token("abc.def.ghi") == "abc.def.ghi"


# --------------------------------------------------------------------------
# map_hosts
# --------------------------------------------------------------------------


def _addresses(host: str | bytes, port: int = 443) -> set[str]:
    return {str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}


def test_map_hosts_overrides_and_restores() -> None:
    original = socket.getaddrinfo
    localhost_before = _addresses("localhost")
    with map_hosts({"jenkins.test": "127.0.0.1", "*.test": "127.0.0.2", "*.b.test": "127.0.0.3"}):
        assert socket.getaddrinfo is not original
        assert _addresses("jenkins.test") == {"127.0.0.1"}
        assert _addresses("JENKINS.test.") == {"127.0.0.1"}
        assert _addresses(b"jenkins.test") == {"127.0.0.1"}
        assert _addresses("foo.test") == {"127.0.0.2"}
        assert _addresses("x.y.test") == {"127.0.0.2"}
        assert _addresses("a.b.test") == {"127.0.0.3"}  # longer wildcard wins
        assert lookup("test") is None  # "*.test" needs at least one label
        assert _addresses("localhost") == localhost_before  # untouched
        assert _addresses("10.1.2.3") == {"10.1.2.3"}
        with map_hosts({"foo.test": "127.0.0.9"}):  # nesting: innermost wins
            assert _addresses("foo.test") == {"127.0.0.9"}
            assert _addresses("jenkins.test") == {"127.0.0.1"}
        assert _addresses("foo.test") == {"127.0.0.2"}
    assert socket.getaddrinfo is original
    assert lookup("jenkins.test") is None


def test_map_hosts_rejects_odd_wildcards() -> None:
    with pytest.raises(ValueError), map_hosts({"jen*.test": "127.0.0.1"}):
        pass
    assert lookup("jenkins.test") is None


mapped_hosts = map_hosts_fixture({"*.fixture.test": "127.0.0.1"})


def test_map_hosts_fixture(mapped_hosts: dict[str, str]) -> None:
    assert mapped_hosts == {"*.fixture.test": "127.0.0.1"}
    assert _addresses("a.fixture.test") == {"127.0.0.1"}


def test_map_hosts_visible_from_other_threads() -> None:
    result: list[set[str]] = []
    with map_hosts({"thread.test": "127.0.0.1"}):
        t = threading.Thread(target=lambda: result.append(_addresses("thread.test")))
        t.start()
        t.join()
    assert result == [{"127.0.0.1"}]


def test_sync_httpx_tls_with_sni(pki: TestPKI, tls_server: TLSServer) -> None:
    with (
        map_hosts({"*.test": "127.0.0.1"}),
        httpx.Client(verify=pki.client_ssl_context(), trust_env=False) as client,
    ):
        r = client.get(f"https://jwks.test:{tls_server.port}/hello?x=1")
        assert r.status_code == 200
        assert r.json() == {"path": "/hello?x=1", "host": f"jwks.test:{tls_server.port}"}
        r = client.get(f"https://a.svc.test:{tls_server.port}/wild")  # wildcard SAN
        assert r.json()["host"] == f"a.svc.test:{tls_server.port}"
    assert tls_server.sni == ["jwks.test", "a.svc.test"]


def test_wildcard_directly_under_tld_is_not_honoured(tmp_path: Path) -> None:
    """Documents a trap: a ``*.test`` SAN does not cover ``x.test`` for OpenSSL."""
    pki = make_pki(tmp_path, ["*.test"])
    with (
        TLSServer(pki) as server,
        map_hosts({"x.test": "127.0.0.1"}),
        httpx.Client(verify=pki.client_ssl_context(), trust_env=False) as client,
        pytest.raises(httpx.ConnectError, match="Hostname mismatch"),
    ):
        client.get(f"https://x.test:{server.port}/")


async def test_async_httpx_tls_with_sni(pki: TestPKI, tls_server: TLSServer) -> None:
    with map_hosts({"jenkins.test": "127.0.0.1"}):
        async with httpx.AsyncClient(verify=pki.client_ssl_context(), trust_env=False) as client:
            r = await client.get(f"https://jenkins.test:{tls_server.port}/async")
    assert r.json()["host"] == f"jenkins.test:{tls_server.port}"
    assert tls_server.sni == ["jenkins.test"]


def test_certificate_checked_against_the_mapped_name(pki: TestPKI, tls_server: TLSServer) -> None:
    with (
        map_hosts({"not-in-cert.example": "127.0.0.1"}),
        httpx.Client(verify=pki.client_ssl_context(), trust_env=False) as client,
        pytest.raises(httpx.ConnectError, match="certificate verify failed"),
    ):
        client.get(f"https://not-in-cert.example:{tls_server.port}/")
    assert tls_server.sni == ["not-in-cert.example"]


# --------------------------------------------------------------------------
# SampleUpstream
# --------------------------------------------------------------------------


def uds_client(path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), trust_env=False)


def test_upstream_answers_over_unix_socket(
    short_dir: Path, key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any]
) -> None:
    sock = short_dir / "up.sock"
    up = SampleUpstream(unix_path=sock, issuers=[ISSUER], audiences=[AUDIENCE], jwks=jwks)
    with up, uds_client(sock) as client:
        token = sign(claims(), key)
        r = client.get(
            "http://jenkins.test/whoami?a=1&b=2",
            headers=[
                (ASSERTION_HEADER, f"Bearer {token}"),
                ("X-Dup", "one"),
                ("X-Dup", "two"),
            ],
        )
        assert r.status_code == 200
        body = r.json()
        assert body["path"] == "/whoami?a=1&b=2"
        assert body["listener"] == "unix"
        assert body["headers"]["x-dup"] == "one, two"
        assert body["user"]["username"] == "alice@example.com"
        assert body["user"]["groups"] == ["admins", "devs"]
        assert body["user"]["email"] == "alice@example.com"
        assert body["user"]["claims"]["iss"] == ISSUER
        assert body["auth_error"] is None

        rec = up.requests[-1]
        assert (rec.method, rec.path, rec.host) == ("GET", "/whoami?a=1&b=2", "jenkins.test")
        assert rec.header_values("x-dup") == ["one", "two"]
        assert [v for k, v in rec.headers if k.lower() == "x-dup"] == ["one", "two"]
        assert rec.user is not None and rec.user["username"] == "alice@example.com"

        r = client.post("http://jenkins.test/job/x/build", content=b"payload")
        assert r.json()["user"] is None
        assert "no x-pomerium-jwt-assertion" in r.json()["auth_error"]
        assert len(up.requests) == 2
        assert up.requests[-1].body == b"payload"

        bad = sign(claims(groups=_DROP), key)
        r = client.get("http://jenkins.test/", headers={ASSERTION_HEADER: bad})
        assert r.json()["user"] is None and "groups" in r.json()["auth_error"]

        up.requests.clear()
        assert len(up.requests) == 0
    assert not sock.exists()


def test_upstream_unix_and_tcp_listeners(short_dir: Path) -> None:
    with SampleUpstream(unix_path=short_dir / "u.sock", tcp_port=0) as up:
        assert up.url.startswith("http://127.0.0.1:")
        with httpx.Client(trust_env=False) as client:
            assert client.get(up.url + "/tcp").json()["listener"] == "tcp"
        with uds_client(short_dir / "u.sock") as client:
            assert client.get("http://x/unix").json()["listener"] == "unix"
        assert [(r.listener, r.path) for r in up.requests] == [("tcp", "/tcp"), ("unix", "/unix")]


def test_upstream_records_header_bytes_exactly(short_dir: Path) -> None:
    """Bytes that are not UTF-8 are kept as received: in the log (raw_headers, and Latin-1 code
    points in headers) and in the JSON answer (raw_headers: [name, base64(value)])."""
    sock_path = short_dir / "raw.sock"
    with SampleUpstream(unix_path=sock_path) as up:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(sock_path))
            sock.sendall(
                b"GET /raw HTTP/1.1\r\nHost: x\r\nCookie: x=\xff\xfe; y=\x80z\r\n"
                b"Cookie: b=2\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        body = json.loads(data.split(b"\r\n\r\n", 1)[1])
        rec = up.requests[-1]
    assert rec.raw_header_values("COOKIE") == [b"x=\xff\xfe; y=\x80z", b"b=2"]
    assert rec.raw_headers[0] == (b"Host", b"x")
    assert rec.header_values("cookie") == ["x=\xff\xfe; y=\x80z", "b=2"]
    raw = [(name, base64.b64decode(value)) for name, value in body["raw_headers"]]
    assert [v for k, v in raw if k.lower() == "cookie"] == [b"x=\xff\xfe; y=\x80z", b"b=2"]
    assert body["headers"]["cookie"] == "x=\xff\xfe; y=\x80z, b=2"


def test_upstream_fetches_jwks_over_tls_caches_and_refetches_on_unknown_kid(
    short_dir: Path, pki: TestPKI, tls_server: TLSServer, key: ec.EllipticCurvePrivateKey
) -> None:
    tls_server.jwks = {"keys": [public_jwk(key, "k1")]}
    sock = short_dir / "up.sock"
    up = SampleUpstream(
        unix_path=sock,
        jwks_url=tls_server.jwks_url("jenkins.test"),
        ca_file=pki.ca_file,
        issuers=[ISSUER],
        audiences=[AUDIENCE],
    )
    with map_hosts({"*.test": "127.0.0.1"}), up, uds_client(sock) as client:

        def whoami(token: str) -> dict[str, Any]:
            r = client.get("http://jenkins.test/whoami", headers={ASSERTION_HEADER: token})
            result: dict[str, Any] = r.json()
            return result

        assert whoami(sign(claims(), key))["user"]["username"] == "alice@example.com"
        assert whoami(sign(claims(email="bob@example.com"), key))["user"]["username"] == (
            "bob@example.com"
        )
        assert up.jwks_fetch_count == 1  # cached
        assert tls_server.sni == ["jenkins.test"]

        # key rotation: the new kid is unknown to the cache -> one refetch
        key2 = new_key()
        tls_server.jwks = {"keys": [public_jwk(key, "k1"), public_jwk(key2, "k2")]}
        assert whoami(sign(claims(), key2, kid="k2"))["user"]["username"] == "alice@example.com"
        assert up.jwks_fetch_count == 2

        # a kid nobody knows: exactly one refetch, then anonymous
        body = whoami(sign(claims(), new_key(), kid="k3"))
        assert body["user"] is None and "k3" in body["auth_error"]
        assert up.jwks_fetch_count == 3


def test_jwks_fetch_failure_is_reported(short_dir: Path, key: ec.EllipticCurvePrivateKey) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sock = short_dir / "up.sock"
    up = SampleUpstream(unix_path=sock, jwks_url=f"https://127.0.0.1:{port}/jwks.json")
    with up, uds_client(sock) as client:
        body = client.get("http://x/", headers={ASSERTION_HEADER: sign(claims(), key)}).json()
    assert body["user"] is None and "JWKS fetch" in body["auth_error"]


def test_upstream_stays_responsive_while_fetching_jwks(
    short_dir: Path, pki: TestPKI, tls_server: TLSServer, key: ec.EllipticCurvePrivateKey
) -> None:
    """A slow JWKS fetch must not block the upstream's loop (no deadlock when
    the fetch goes through the proxy back to services in this process)."""
    tls_server.jwks = {"keys": [public_jwk(key, "k1")]}
    tls_server.gate.clear()
    sock = short_dir / "up.sock"
    up = SampleUpstream(unix_path=sock, jwks_url=tls_server.jwks_url(), ca_file=pki.ca_file)
    results: list[dict[str, Any]] = []

    def slow_request() -> None:
        with uds_client(sock) as c:
            headers = {ASSERTION_HEADER: sign(claims(), key)}
            results.append(c.get("http://x/slow", headers=headers).json())

    with map_hosts({"*.test": "127.0.0.1"}), up:
        t = threading.Thread(target=slow_request)
        t.start()
        deadline = time.monotonic() + 5
        while "/.well-known/pomerium/jwks.json" not in tls_server.hits:
            assert time.monotonic() < deadline, "JWKS never requested"
            time.sleep(0.01)
        with uds_client(sock) as client:  # answered while the JWKS fetch hangs
            assert client.get("http://x/fast", timeout=2).json()["path"] == "/fast"
        assert not results
        tls_server.gate.set()
        t.join(10)
    assert results and results[0]["user"]["username"] == "alice@example.com"


async def test_websocket_echo_over_unix_socket(
    short_dir: Path, key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any]
) -> None:
    sock = short_dir / "ws.sock"
    with SampleUpstream(unix_path=sock, jwks=jwks, issuers=[ISSUER], audiences=[AUDIENCE]) as up:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as s:
            headers = {ASSERTION_HEADER: sign(claims(), key)}
            async with s.ws_connect("http://jenkins.test/ws", headers=headers) as ws:
                await ws.send_str("hello")
                assert await ws.receive_str(timeout=5) == "alice@example.com: hello"
                await ws.send_bytes(b"\x00\x01")
                assert await ws.receive_bytes(timeout=5) == b"\x00\x01"
            async with s.ws_connect("http://jenkins.test/ws") as ws:
                await ws.send_str("hi")
                assert await ws.receive_str(timeout=5) == "anonymous: hi"
            async with s.get("http://jenkins.test/ws") as r:  # not an upgrade: plain JSON
                assert (await r.json())["path"] == "/ws"
        recs = up.requests.snapshot()
        assert [r.websocket for r in recs] == [True, True, False]
        assert recs[0].header("upgrade") == "websocket"


def test_upstream_stop_closes_open_websocket(short_dir: Path) -> None:
    import asyncio

    sock = short_dir / "ws.sock"
    up = SampleUpstream(unix_path=sock).start()

    async def run() -> aiohttp.WSMessage:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as s,
            s.ws_connect("http://x/ws") as ws,
        ):
            await ws.send_str("x")
            await ws.receive_str(timeout=5)
            await asyncio.get_running_loop().run_in_executor(None, up.stop)
            return await ws.receive(timeout=5)

    msg = asyncio.run(run())
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert not up.running
