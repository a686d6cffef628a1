"""`authgate verify` against a real JWKS on 127.0.0.1 (plain HTTP, and HTTPS with a test CA)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from authgate.verify.cli import main

AUD = "app.example.com"
ISS = "authenticate.example.com"


class JwksServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "ES256"}]}
        self.discovery: dict[str, Any] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                doc: Any = {
                    "/.well-known/pomerium/jwks.json": server.jwks,
                    "/.well-known/openid-configuration": server.discovery or None,
                }.get(self.path)
                data = json.dumps(doc or {}).encode()
                self.send_response(200 if doc else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.jwks_url = f"{self.url}/.well-known/pomerium/jwks.json"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def sign(self, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISS,
            "aud": AUD,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "sub": "alice",
            "user": "alice",
            "email": "alice@example.com",
            "name": "Alice",
            "groups": ["admins"],
            "jti": "j",
            "sid": "s",
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "k1"})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer()
    yield srv
    srv.close()


def args(server: JwksServer, *extra: str) -> list[str]:
    return ["--jwks", server.jwks_url, "--issuer", ISS, "--audience", AUD, *extra]


def run_main(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    code = f"from authgate.verify.cli import main; raise SystemExit(main({argv!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=60
    )


# --- in process --------------------------------------------------------------------------


def test_valid_token_prints_the_claims(
    server: JwksServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = server.sign()
    assert main(args(server, token)) == 0
    out, err = capsys.readouterr()
    claims = json.loads(out)
    assert (claims["email"], claims["groups"], claims["aud"]) == (
        "alice@example.com",
        ["admins"],
        AUD,
    )
    assert err == ""


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "other.example.com"}, "wrong audience"),
        ({"iss": "evil.example.com"}, "wrong issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
    ],
)
def test_invalid_token_exit_1(
    server: JwksServer, capsys: pytest.CaptureFixture[str], overrides: dict[str, Any], reason: str
) -> None:
    assert main(args(server, server.sign(**overrides))) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"authgate verify: invalid: {reason}"


def test_several_issuers_and_leeway(server: JwksServer) -> None:
    token = server.sign(exp=int(time.time()) - 50)
    assert main(args(server, token)) == 1
    assert main(args(server, "--leeway", "90", "--issuer", "other", token)) == 0
    assert main(args(server, "--leeway", "500", token)) == 2


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--issuer", ISS, "--audience", AUD, "tok"],  # neither --jwks nor --issuer-discovery
        ["--jwks", "https://a.example.com/j", "--audience", AUD, "tok"],  # no --issuer
        ["--jwks", "https://a.example.com/j", "--issuer", ISS, "tok"],  # no --audience
        ["--jwks", "https://a.example.com/j", "--issuer", ISS, "--audience", AUD],  # no token
        ["--jwks", "https://a/j", "--issuer-discovery", "--issuer", ISS, "--audience", AUD, "t"],
        ["--issuer-discovery", "--issuer", ISS, "--audience", AUD, "tok"],  # issuer not a URL
        ["--jwks", "ftp://a.example.com/j", "--issuer", ISS, "--audience", AUD, "tok"],
        ["--jwks", "http://a.example.com/j", "--issuer", ISS, "--audience", AUD, "tok"],
        ["--jwks", "https://a/j", "--issuer", ISS, "--audience", AUD, "--ca-file", "/nope", "t"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--issuer-discovery" in capsys.readouterr().out


def test_issuer_discovery(server: JwksServer, capsys: pytest.CaptureFixture[str]) -> None:
    issuer = server.url + "/"
    server.discovery = {"issuer": issuer, "jwks_uri": server.jwks_url}
    token = server.sign(iss=issuer)
    argv = ["--issuer-discovery", "--issuer", issuer, "--audience", AUD, token]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["iss"] == issuer
    assert main([*argv[:-1], server.sign()]) == 1
    assert "wrong issuer" in capsys.readouterr().err
    server.discovery = {}
    assert main(argv) == 1
    assert "discovery" in capsys.readouterr().err


def test_unreachable_jwks_exit_1(server: JwksServer, capsys: pytest.CaptureFixture[str]) -> None:
    token = server.sign()
    url = server.jwks_url
    server.close()
    argv = ["--jwks", url, "--issuer", ISS, "--audience", AUD, token]
    assert main(argv) == 1
    assert "JWKS unreachable" in capsys.readouterr().err


def test_https_jwks_with_ca_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    srv = JwksServer(tls=ctx)
    try:
        pem = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(pem))
        token = srv.sign()
        assert main(args(srv, token)) == 1  # the test CA is not trusted by default
        assert "JWKS unreachable" in capsys.readouterr().err
        assert main(args(srv, "--ca-file", str(pem), token)) == 0
        assert json.loads(capsys.readouterr().out)["user"] == "alice"
    finally:
        srv.close()


# --- in a subprocess -----------------------------------------------------------------------


def test_subprocess_token_from_stdin(server: JwksServer) -> None:
    out = run_main(args(server, "-"), stdin=server.sign() + "\n")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["email"] == "alice@example.com"
    out = run_main(args(server, "-"), stdin=server.sign(aud="x"))
    assert (out.returncode, out.stdout) == (1, "")
    assert "wrong audience" in out.stderr
    out = run_main(args(server, "-"), stdin="")
    assert out.returncode == 2
    assert "no token" in out.stderr
    out = run_main(args(server, "-"), stdin="jwt\u00e9")
    assert out.returncode == 2
    out = run_main(["--issuer", ISS, "-"])
    assert out.returncode == 2


def test_python_m_authgate_verify(server: JwksServer) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "authgate.verify", *args(server, server.sign())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sub"] == "alice"


def _wired() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "authgate", "verify", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.returncode == 0


@pytest.mark.skipif(not _wired(), reason="`authgate verify` not wired into authgate.cli yet")
def test_authgate_verify_subcommand(server: JwksServer) -> None:
    base = [sys.executable, "-m", "authgate", "verify"]
    out = subprocess.run(
        [*base, *args(server, "-")], input=server.sign(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["groups"] == ["admins"]
    out = subprocess.run(
        [*base, *args(server, server.sign(iss="x"))], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "wrong issuer" in out.stderr
    out = subprocess.run([*base, "--issuer", ISS], capture_output=True, text=True)
    assert out.returncode == 2
