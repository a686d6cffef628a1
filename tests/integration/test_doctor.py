"""`authgate doctor` against upstreams that answer: the Jenkins stand-in (tests/support/
jenkins_standin.py) trusting any assertion or verifying it as the JWT Auth plugin does, a TCP
upstream listening on a non-loopback address, a plain app, and (with Docker) the compose stack's
real Jenkins.

The doctor runs in a subprocess as a user runs it (`python -c "from authgate.doctor import
main; ..."`: the `authgate doctor` subcommand is wired in cli.py separately); the stand-ins run
in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.assertion.signer import AssertionSigner
from authgate.config import Settings
from authgate.config.runtime import generate_cookie_secret, generate_signing_key_b64
from authgate.config.schema import decode_base64, parse_signing_key
from tests.integration.test_compose import ComposeStack, _docker_skip_reason
from tests.integration.test_compose import stack as stack
from tests.support.jenkins_standin import JenkinsStandIn

SIGNING_KEY = generate_signing_key_b64()
ROUTE_HOST = "jenkins.doctor.test"
AUTHN_HOST = "authenticate.doctor.test"


def _config(tmp: Path, to: str, **route: Any) -> Path:
    raw = {
        "insecure_server": True,
        "address": "127.0.0.1:8080",
        "authenticate_service_url": f"http://{AUTHN_HOST}:8080",
        "idp_provider": "oidc",
        "idp_provider_url": "http://127.0.0.1:9400",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "signing_key": SIGNING_KEY,
        "cookie_secret": generate_cookie_secret(),
        "routes": [
            {
                "from": f"http://{ROUTE_HOST}:8080",
                "to": to,
                "pass_identity_headers": True,
                "allowed_domains": ["example.com"],
                **route,
            }
        ],
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _jwks() -> dict[str, Any]:
    key = parse_signing_key(decode_base64(SIGNING_KEY))
    return AssertionSigner(key, "unused").jwks


def _env() -> dict[str, str]:
    """This environment minus anything that would override config keys."""
    return {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}


def run_doctor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["-c", str(config), "--timeout", "3", *args]
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from authgate.doctor import main; sys.exit(main({argv!r}))",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # A short path: Unix socket paths are limited to ~100 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="agdoc") as name:
        yield Path(name)


def test_trusting_jenkins_fails_naming_the_route(sock_dir: Path) -> None:
    sock = sock_dir / "jenkins.sock"
    with JenkinsStandIn("trusting", socket_path=sock) as jenkins:
        result = run_doctor(_config(sock_dir, f"unix://{sock}"))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert errors, result.stdout
    for line in errors:
        assert f"routes[0] http://{ROUTE_HOST}:8080" in line, line
        assert "acceptable audience" in line and "jwks.json" in line, line
    text = result.stdout
    assert "signed by a key authgate does not hold" in text
    assert "another audience" in text and "expired" in text
    # What the doctor sent: /, then whoAmI five times (once without an assertion).
    assert [p for p, _ in jenkins.requests] == ["/"] + ["/whoAmI/api/json"] * 5
    assert sum(a is None for _, a in jenkins.requests) == 2


def test_verifying_jenkins_passes(sock_dir: Path) -> None:
    sock = sock_dir / "jenkins.sock"
    issuer = AUTHN_HOST  # jwt_issuer_format: host (the default)
    with JenkinsStandIn(
        "verifying", socket_path=sock, jwks=_jwks(), issuers=[issuer], audiences=[ROUTE_HOST]
    ):
        config = _config(sock_dir, f"unix://{sock}")
        result = run_doctor(config)
        as_json = run_doctor(config, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("info: routes[0]"), result.stdout
    assert "authgate-doctor@invalid" in result.stdout
    findings = json.loads(as_json.stdout)
    assert as_json.returncode == 0
    assert [f["severity"] for f in findings] == ["info"], findings
    assert set(findings[0]) == {"severity", "key", "message", "fix"}


def test_verifying_jenkins_with_another_audience_fails_the_valid_probe(sock_dir: Path) -> None:
    sock = sock_dir / "jenkins.sock"
    with JenkinsStandIn(
        "verifying", socket_path=sock, jwks=_jwks(), issuers=[AUTHN_HOST], audiences=["other"]
    ):
        result = run_doctor(_config(sock_dir, f"unix://{sock}"))
    assert result.returncode == 1, result.stdout
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("error:")]
    assert "answered anonymous to a valid assertion" in line, line
    assert f"acceptable audience `{ROUTE_HOST}`" in line


def test_unreachable_upstream_is_a_warning(sock_dir: Path) -> None:
    result = run_doctor(_config(sock_dir, f"unix://{sock_dir}/nobody.sock"))
    assert result.returncode == 1, result.stdout
    assert result.stdout.startswith("warning: routes[0]") and "cannot reach" in result.stdout


def test_a_config_error_exits_2(sock_dir: Path) -> None:
    path = sock_dir / "config.yaml"
    path.write_text("routes: 3\n")
    result = run_doctor(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "config error" in result.stderr


def _non_loopback_ipv4() -> str | None:
    """An address of this machine other than the loopback, None when there is none."""
    candidates = []
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    try:  # the address of the interface a datagram would leave by (nothing is sent)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            candidates.append(probe.getsockname()[0])
    except OSError:
        pass
    return next((a for a in candidates if not a.startswith("127.") and a != "0.0.0.0"), None)


def test_tcp_upstream_on_a_non_loopback_address_is_reachable_around_the_gate(
    sock_dir: Path,
) -> None:
    address = _non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    with JenkinsStandIn(
        "verifying", tcp=(address, 0), jwks=_jwks(), issuers=[AUTHN_HOST], audiences=[ROUTE_HOST]
    ) as jenkins:
        host, port = jenkins.address
        result = run_doctor(_config(sock_dir, f"http://{host}:{port}"))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("warning: routes[0]"), lines
    assert f"anyone who can reach {host}:{port} skips authgate" in lines[0]
    assert "127.0.0.1 or a Unix socket" in lines[0]
    # Jenkins itself is fine.
    assert not [x for x in lines if x.startswith("error:")], lines


def test_loopback_tcp_upstream_is_not_reported(sock_dir: Path) -> None:
    with JenkinsStandIn(
        "verifying",
        tcp=("127.0.0.1", 0),
        jwks=_jwks(),
        issuers=[AUTHN_HOST],
        audiences=[ROUTE_HOST],
    ) as jenkins:
        _, port = jenkins.address
        result = run_doctor(_config(sock_dir, f"http://127.0.0.1:{port}"))
    assert result.returncode == 0, result.stdout


def test_an_app_that_is_not_jenkins_is_information(sock_dir: Path) -> None:
    import socketserver

    class Plain(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"hello": "world"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    import threading

    sock = sock_dir / "app.sock"
    server = Server(str(sock), Plain)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run_doctor(_config(sock_dir, f"unix://{sock}"))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout
    (line,) = result.stdout.splitlines()
    assert line.startswith("info: routes[0]") and "is not Jenkins" in line
    assert "valid 200 (application/json" in line


# ---- the compose stack's real Jenkins (Docker) -----------------------------------------------

DOCTOR_IN_COMPOSE = (
    "import sys; from authgate.doctor import main; "
    "sys.exit(main(['-c', '/config/config.yaml', '--format', 'json', '--timeout', '10']))"
)


def _jenkins_healthy(stack: ComposeStack) -> bool:
    result = stack.compose("ps", "--format", "json", "jenkins", check=False, timeout=60)
    text = result.stdout.strip()
    try:
        parsed = json.loads(text) if text.startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()
        ]
    except ValueError:
        return False
    return any(isinstance(c, dict) and c.get("Health") == "healthy" for c in parsed)


@pytest.mark.docker
@pytest.mark.timeout(3600)
def test_doctor_against_the_compose_stacks_real_jenkins(stack: ComposeStack) -> None:
    """Needs Docker (skipped with the reason otherwise, by test_compose's `stack` fixture).

    The doctor runs in a one-off container of the authgate image (it has the code and the
    config, SIGNING_KEY from the stack's environment) with the Jenkins socket volume mounted,
    as Jenkins' uid: the real JWT Auth plugin, set up by deploy/compose/jenkins/casc.yaml,
    must answer anonymous to the four bad assertions and the doctor's user to the valid one
    (Jenkins fetches the JWKS through Envoy from the running authgate)."""
    reason = _docker_skip_reason()
    if reason is not None:  # the fixture skipped already; kept for readers
        pytest.skip(reason)
    deadline = time.monotonic() + 600
    while not _jenkins_healthy(stack):
        if time.monotonic() > deadline:
            raise AssertionError(f"Jenkins never became healthy\n{stack.logs()}")
        time.sleep(5)
    result = stack.compose(
        "run", "--rm", "--no-deps",
        "--user", "1000:1000",
        "-v", "authgate-compose-test_jenkins-socket:/var/run/jenkins",
        "--entrypoint", "python",
        "authgate", "-c", DOCTOR_IN_COMPOSE,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{stack.logs()}"
    findings = json.loads(result.stdout)
    assert [f["severity"] for f in findings] == ["info"], findings
    assert "authgate-doctor@invalid" in findings[0]["message"]
