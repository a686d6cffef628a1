"""authgate.verify against a real JWKS served over HTTP on 127.0.0.1 (no mocked transport)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2 under its TestClient
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from werkzeug.test import Client
from werkzeug.wrappers import Response

from authgate.verify import (
    IDENTITY_KEY,
    AssertionMiddleware,
    AssertionVerifier,
    Identity,
    InvalidAssertion,
    KeysUnavailable,
    WSGIAssertionMiddleware,
)

ISS = "authenticate.example.com"
AUD = "app.example.com"


class JwksServer:
    """A JWKS (and an OpenID discovery document) on 127.0.0.1, counting the JWKS hits."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.hits = 0
        self.status = 200
        self.discovery: dict[str, Any] | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/jwks.json":
                    with server._lock:
                        server.hits += 1
                        status, body = server.status, json.dumps({"keys": server.keys})
                elif self.path == "/.well-known/openid-configuration" and server.discovery:
                    status, body = 200, json.dumps(server.discovery)
                else:
                    status, body = 404, "{}"
                data = body.encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.jwks_url = f"{self.url}/jwks.json"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Signer:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = ec.generate_private_key(ec.SECP256R1())

    @property
    def jwk(self) -> dict[str, Any]:
        jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "ES256"}

    def sign(self, **overrides: Any) -> str:
        return jwt.encode(
            claims(**overrides), self.key, algorithm="ES256", headers={"kid": self.kid}
        )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "j1",
        "sub": "alice",
        "user": "alice",
        "email": "alice@example.com",
        "name": "Alice",
        "groups": ["admins", "dev"],
        "sid": "s1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer()
    yield srv
    srv.close()


@pytest.fixture
def signer(server: JwksServer) -> Signer:
    s = Signer("k1")
    server.keys.append(s.jwk)
    return s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(server: JwksServer, signer: Signer, clock: Clock) -> Iterator[AssertionVerifier]:
    v = AssertionVerifier(server.jwks_url, issuer=ISS, audience=AUD, clock=clock)
    yield v
    v.close()


def reason(v: AssertionVerifier, token: str | bytes) -> str:
    with pytest.raises(InvalidAssertion) as info:
        v.verify(token)
    return info.value.reason


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/jwks.json"


# --- the verifier ------------------------------------------------------------------------


def test_good_token(verifier: AssertionVerifier, signer: Signer) -> None:
    ident = verifier.verify(signer.sign())
    assert ident == Identity("alice", "alice@example.com", "Alice", ("admins", "dev"), {})
    assert ident.claims["sid"] == "s1"
    assert verifier.verify(signer.sign().encode()).user == "alice"


def test_sub_when_no_user_claim_and_no_groups(verifier: AssertionVerifier, signer: Signer) -> None:
    ident = verifier.verify(signer.sign(user=None, groups=None))
    assert (ident.user, ident.groups) == ("alice", ())


def test_several_issuers_and_audiences(server: JwksServer, signer: Signer) -> None:
    with AssertionVerifier(
        server.jwks_url, issuer=[ISS, f"https://{ISS}/"], audience=["other", AUD]
    ) as v:
        assert v.verify(signer.sign(iss=f"https://{ISS}/")).email == "alice@example.com"
        assert v.verify(signer.sign(aud=["x", AUD])).user == "alice"
        assert reason(v, signer.sign(iss=f"https://{ISS}")) == "wrong issuer"


def test_wrong_key_same_kid(verifier: AssertionVerifier) -> None:
    assert reason(verifier, Signer("k1").sign()) == "bad signature"


def test_tampered_payload(verifier: AssertionVerifier, signer: Signer) -> None:
    head, _, sig = signer.sign().split(".")
    other = b64(json.dumps(claims(groups=["root"])).encode())
    assert reason(verifier, f"{head}.{other}.{sig}") == "bad signature"


def test_alg_none(verifier: AssertionVerifier) -> None:
    token = jwt.encode(claims(), "", algorithm="none", headers={"kid": "k1"})
    assert reason(verifier, token) == "algorithm not allowed"
    head = b64(json.dumps({"alg": "none", "kid": "k1"}).encode())
    body = b64(json.dumps(claims()).encode())
    assert reason(verifier, f"{head}.{body}.") == "algorithm not allowed"


def test_hs256_with_the_public_key_as_secret(verifier: AssertionVerifier, signer: Signer) -> None:
    pem = signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = signer.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, der, json.dumps(signer.jwk).encode()):
        for alg in ("HS256", "hs256", "ES256 "):
            token = hs256({"alg": alg, "typ": "JWT", "kid": "k1"}, claims(), secret)
            assert reason(verifier, token) == "algorithm not allowed"


def test_rs256_and_other_algorithms(server: JwksServer, verifier: AssertionVerifier) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server.keys.append({**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "r1"})
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "r1"})
    assert reason(verifier, token) == "algorithm not allowed"
    p384 = ec.generate_private_key(ec.SECP384R1())
    token = jwt.encode(claims(), p384, algorithm="ES384", headers={"kid": "k1"})
    assert reason(verifier, token) == "algorithm not allowed"
    # an ES256 header naming the RSA key: that key is not an ES256 key, so never trusted
    p256 = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), p256, algorithm="ES256", headers={"kid": "r1"})
    assert reason(verifier, token) == "unknown signing key"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"iss": "evil.example.com"}, "wrong issuer"),
        ({"iss": f"https://{ISS}/"}, "wrong issuer"),
        ({"aud": "other.example.com"}, "wrong audience"),
        ({"aud": ["other.example.com"]}, "wrong audience"),
        # computed when the tests are collected: far enough that a long run cannot catch up
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"iat": int(time.time()) + 3600}, "not yet valid"),
        ({"exp": None}, "missing claim exp"),
        ({"iat": None}, "missing claim iat"),
        ({"iss": None}, "missing claim iss"),
        ({"aud": None}, "missing claim aud"),
        ({"exp": "tomorrow"}, "malformed token"),
        ({"groups": "admins"}, "malformed claim groups"),
        ({"groups": [1]}, "malformed claim groups"),
        ({"email": ["a@b"]}, "malformed claim email"),
    ],
)
def test_refused_claims(
    verifier: AssertionVerifier, signer: Signer, overrides: dict[str, Any], expected: str
) -> None:
    assert reason(verifier, signer.sign(**overrides)) == expected


def test_leeway(server: JwksServer, signer: Signer) -> None:
    now = int(time.time())
    with AssertionVerifier(server.jwks_url, issuer=ISS, audience=AUD, leeway_s=30) as v:
        assert v.verify(signer.sign(exp=now - 10)).user == "alice"
        assert v.verify(signer.sign(nbf=now + 10, iat=now + 10)).user == "alice"
        assert reason(v, signer.sign(exp=now - 40)) == "expired"
    with pytest.raises(ValueError, match="leeway"):
        AssertionVerifier(server.jwks_url, issuer=ISS, audience=AUD, leeway_s=121)
    with pytest.raises(ValueError, match="leeway"):
        AssertionVerifier(server.jwks_url, issuer=ISS, audience=AUD, leeway_s=-1)


@pytest.mark.parametrize(
    "token",
    ["", "   ", "abc", "a.b.c", "a.b", "é.b.c", "x" * 20000, b"\xff\xfe", "..", "e30.e30.e30"],
)
def test_malformed(verifier: AssertionVerifier, token: str | bytes) -> None:
    assert reason(verifier, token) in {"no token", "malformed token", "algorithm not allowed"}


def test_constructor_refusals() -> None:
    with pytest.raises(ValueError, match="https"):
        AssertionVerifier("http://app.example.com/jwks.json", issuer=ISS, audience=AUD)
    with pytest.raises(ValueError):
        AssertionVerifier("file:///etc/passwd", issuer=ISS, audience=AUD)
    with pytest.raises(ValueError, match="issuer"):
        AssertionVerifier("https://a.example.com/j", issuer=[], audience=AUD)
    with pytest.raises(ValueError, match="audience"):
        AssertionVerifier("https://a.example.com/j", issuer=ISS, audience="")
    AssertionVerifier("http://app.internal/j", issuer=ISS, audience=AUD, allow_http=True).close()


# --- keys: cache and refetch ---------------------------------------------------------------


def test_unknown_kid_refetches_once(
    server: JwksServer, verifier: AssertionVerifier, signer: Signer, clock: Clock
) -> None:
    verifier.verify(signer.sign())
    assert server.hits == 1
    verifier.verify(signer.sign())
    assert server.hits == 1  # cached
    clock.now += 11  # past min_refetch_s since the first fetch
    rotated = Signer("k2")
    server.keys.append(rotated.jwk)
    assert verifier.verify(rotated.sign()).user == "alice"
    assert server.hits == 2
    verifier.verify(rotated.sign())
    verifier.verify(signer.sign())
    assert server.hits == 2


def test_unknown_kid_flood_is_rate_limited(
    server: JwksServer, verifier: AssertionVerifier, signer: Signer, clock: Clock
) -> None:
    verifier.verify(signer.sign())
    clock.now += 11
    for i in range(200):
        assert reason(verifier, Signer(f"x{i}").sign()) == "unknown signing key"
        clock.now += 0.01  # 2 s in all: still within one min_refetch_s
    assert server.hits == 2
    clock.now += 10
    stranger = Signer("late")
    server.keys.append(stranger.jwk)
    assert verifier.verify(stranger.sign()).user == "alice"
    assert server.hits == 3
    for i in range(100):
        reason(verifier, Signer(f"y{i}").sign())
    assert server.hits == 3


def test_cache_expiry_and_stale_keys_when_jwks_fails(
    server: JwksServer, verifier: AssertionVerifier, signer: Signer, clock: Clock
) -> None:
    verifier.verify(signer.sign())
    clock.now += 301
    verifier.verify(signer.sign())
    assert server.hits == 2
    server.status = 500
    clock.now += 301
    assert verifier.verify(signer.sign()).user == "alice"  # the keys held stay in use
    assert server.hits == 3
    verifier.verify(signer.sign())
    assert server.hits == 3  # and the failing JWKS is asked no more than min_refetch_s allows


def test_removed_key_refused_after_refresh(
    server: JwksServer, verifier: AssertionVerifier, signer: Signer, clock: Clock
) -> None:
    verifier.verify(signer.sign())
    server.keys.clear()
    clock.now += 301
    assert reason(verifier, signer.sign()) == "unknown signing key"


def test_jwks_unavailable() -> None:
    with AssertionVerifier(dead_url(), issuer=ISS, audience=AUD) as v:
        with pytest.raises(KeysUnavailable):
            v.verify(Signer("k1").sign())
        with pytest.raises(KeysUnavailable):
            v.verify(Signer("k1").sign())  # rate-limited, still "unavailable", not "unknown"


def test_bad_jwks_documents(server: JwksServer, clock: Clock) -> None:
    good = Signer("g")
    off_curve = {**good.jwk, "kid": "bad", "y": good.jwk["x"]}
    private = {**ECAlgorithm.to_jwk(good.key, as_dict=True), "kid": "g2", "alg": "ES256"}
    server.keys.extend([off_curve, {"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, "junk", private])
    with AssertionVerifier(server.jwks_url, issuer=ISS, audience=AUD, clock=clock) as v:
        assert reason(v, jwt.encode(claims(), good.key, "ES256", {"kid": "bad"})) == (
            "unknown signing key"
        )
        assert reason(v, hs256({"alg": "HS256", "kid": "h"}, claims(), b"secret")) == (
            "algorithm not allowed"
        )
        # a JWK with its private part: only the public part is taken
        assert v.verify(jwt.encode(claims(), good.key, "ES256", {"kid": "g2"})).user == "alice"


def test_token_without_kid_and_a_single_key(verifier: AssertionVerifier, signer: Signer) -> None:
    token = jwt.encode(claims(), signer.key, algorithm="ES256")
    assert verifier.verify(token).user == "alice"


def test_threads_share_one_fetch(server: JwksServer, signer: Signer) -> None:
    token = signer.sign()
    with AssertionVerifier(server.jwks_url, issuer=ISS, audience=AUD) as v:
        results: list[str] = []
        barrier = threading.Barrier(16)

        def work() -> None:
            barrier.wait()
            results.append(v.verify(token).user)

        threads = [threading.Thread(target=work) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == ["alice"] * 16
    assert server.hits == 1


def test_issuer_discovery(server: JwksServer, signer: Signer) -> None:
    issuer = f"{server.url}/"
    server.discovery = {"issuer": issuer, "jwks_uri": server.jwks_url}
    with AssertionVerifier.from_issuer_discovery(issuer, audience=AUD) as v:
        assert v.jwks_url == server.jwks_url
        assert v.verify(signer.sign(iss=issuer)).user == "alice"
        assert v.verify(signer.sign(iss=server.url)).user == "alice"
        assert reason(v, signer.sign()) == "wrong issuer"
    server.discovery = {"issuer": "https://elsewhere.example.com/", "jwks_uri": server.jwks_url}
    with pytest.raises(KeysUnavailable, match="another issuer"):
        AssertionVerifier.from_issuer_discovery(server.url, audience=AUD)
    server.discovery = {"issuer": issuer}
    with pytest.raises(KeysUnavailable, match="jwks_uri"):
        AssertionVerifier.from_issuer_discovery(server.url, audience=AUD)
    with pytest.raises(KeysUnavailable):
        AssertionVerifier.from_issuer_discovery(dead_url().rsplit("/", 1)[0], audience=AUD)


# --- middleware ---------------------------------------------------------------------------


def starlette_app(verifier: AssertionVerifier) -> AssertionMiddleware:
    async def whoami(request: Request) -> JSONResponse:
        ident: Identity = request.scope[IDENTITY_KEY]
        return JSONResponse({"user": ident.user, "email": ident.email, "groups": ident.groups})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok" if IDENTITY_KEY not in request.scope else "identified")

    calls: list[str] = []
    inner = Starlette(routes=[Route("/whoami", whoami), Route("/health", health)])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(scope["path"])
        await inner(scope, receive, send)

    mw = AssertionMiddleware(app, verifier, exempt_paths=["/health"])
    mw.calls = calls  # type: ignore[attr-defined]
    return mw


def test_asgi_middleware(verifier: AssertionVerifier, signer: Signer) -> None:
    mw = starlette_app(verifier)
    with TestClient(mw) as client:
        resp = client.get("/whoami")
        assert resp.status_code == 401
        assert resp.json() == {"error": "unauthorized", "reason": "no assertion"}
        resp = client.get("/whoami", headers={"X-Pomerium-Jwt-Assertion": Signer("k1").sign()})
        assert (resp.status_code, resp.json()["reason"]) == (401, "bad signature")
        resp = client.get("/whoami", headers={"x-pomerium-jwt-assertion": "garbage"})
        assert resp.status_code == 401
        resp = client.get(
            "/whoami",
            headers=[
                ("x-pomerium-jwt-assertion", signer.sign()),
                ("x-pomerium-jwt-assertion", signer.sign(sub="bob", user="bob")),
            ],
        )
        assert (resp.status_code, resp.json()["reason"]) == (401, "more than one assertion")
        assert mw.calls == []  # type: ignore[attr-defined]
        resp = client.get("/whoami", headers={"X-Pomerium-Jwt-Assertion": signer.sign()})
        assert resp.status_code == 200
        assert resp.json() == {
            "user": "alice",
            "email": "alice@example.com",
            "groups": ["admins", "dev"],
        }
        assert client.get("/health").text == "ok"
        assert client.get("/health/../whoami").status_code in (401, 404)
        assert client.get("/healthz").status_code == 401


def test_asgi_middleware_keys_unavailable(signer: Signer) -> None:
    with AssertionVerifier(dead_url(), issuer=ISS, audience=AUD) as v:
        mw = starlette_app(v)
        with TestClient(mw) as client:
            resp = client.get("/whoami", headers={"X-Pomerium-Jwt-Assertion": signer.sign()})
            assert resp.status_code == 503
        assert mw.calls == []  # type: ignore[attr-defined]


def test_wsgi_middleware(verifier: AssertionVerifier, signer: Signer) -> None:
    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        calls.append(environ["PATH_INFO"])
        ident = environ.get(IDENTITY_KEY)
        body = json.dumps({"user": ident.user if ident else None}).encode()
        start_response("200 OK", [("content-type", "application/json")])
        return [body]

    client = Client(WSGIAssertionMiddleware(app, verifier, exempt_paths=["/static/"]))
    resp = client.get("/")
    assert resp.status_code == 401
    assert resp.json == {"error": "unauthorized", "reason": "no assertion"}
    resp = client.get("/", headers={"X-Pomerium-Jwt-Assertion": signer.sign(aud="other")})
    assert resp.status_code == 401
    assert resp.json == {"error": "unauthorized", "reason": "wrong audience"}
    assert calls == []
    resp = client.get("/", headers={"X-Pomerium-Jwt-Assertion": signer.sign()})
    assert (resp.status_code, resp.json) == (200, {"user": "alice"})
    assert client.get("/static/app.css").json == {"user": None}
    assert client.get("/static/../admin").status_code == 401
    assert calls == ["/", "/static/app.css"]
    assert isinstance(Response, type)


# --- no server parts ----------------------------------------------------------------------


def test_imports_without_the_server_parts() -> None:
    code = (
        "import sys, authgate.verify, authgate.verify.cli\n"
        "mods = sorted(m for m in sys.modules if m.startswith('authgate'))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('grpc', 'pydantic', 'authlib', 'redis', 'yaml', 'structlog', 'envoy', 'uvloop')]\n"
        "print(mods, bad)\n"
        "assert set(mods) <= {'authgate', 'authgate.verify', 'authgate.verify.verifier',"
        " 'authgate.verify.middleware', 'authgate.verify.cli'}, mods\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
