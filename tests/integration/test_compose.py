"""The docker-compose stack end to end: Envoy + authgate + Jenkins (JWT Auth plugin) + the IdP.

Needs a Docker engine with Compose v2 and skips itself (with the reason) when none answers.
`docker compose up -d --build` with a temporary certificate and fresh secrets, a login as alice
through the IdP with httpx, then Jenkins' own `/whoAmI/api/json` through the proxy must name her
with her groups: the real JWT Auth plugin accepted authgate's assertion. `docker compose down -v`
at the end, whatever happened.

Every behaviour checked here is also covered without Docker by test_vertical_slice.py (real
Envoy, real IdP, a Jenkins-like upstream verifying the assertion as the plugin does).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from authgate.config.runtime import generate_cookie_secret, generate_signing_key_b64
from tests.support.certs import TestPKI, make_pki
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.resolve import map_hosts

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
PROJECT = "authgate-compose-test"
JENKINS = "https://jenkins.localhost:8443"
ENVOY_ADMIN = "http://127.0.0.1:9901"
PUBLISHED_PORTS = (8443, 9400, 9901)  # fixed by deploy/compose/config.yaml and the IdP issuer
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
DOCKER_INFO_TIMEOUT_S = 5
BUILD_AND_START_TIMEOUT_S = 1500
ENVOY_READY_TIMEOUT_S = 120
JENKINS_READY_TIMEOUT_S = 420
# pytest-timeout counts the module fixture (image builds, start) in the first test that uses it.
TEST_TIMEOUT_S = BUILD_AND_START_TIMEOUT_S + ENVOY_READY_TIMEOUT_S + JENKINS_READY_TIMEOUT_S + 300

pytestmark = [pytest.mark.docker, pytest.mark.timeout(TEST_TIMEOUT_S)]


def _docker_skip_reason() -> str | None:
    """Why this machine cannot run the stack, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=DOCKER_INFO_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"no Docker engine answered `docker info` within {DOCKER_INFO_TIMEOUT_S} s"
    except OSError as exc:
        return f"cannot run docker: {exc}"
    if info.returncode != 0:
        detail = (info.stderr or info.stdout).strip().splitlines()
        return "no Docker engine answers `docker info`" + (f": {detail[-1]}" if detail else "")
    try:
        compose = subprocess.run(
            ["docker", "compose", "version"],
            capture_output=True,
            text=True,
            timeout=DOCKER_INFO_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "`docker compose version` did not answer"
    if compose.returncode != 0:
        return "the Docker Compose v2 plugin (`docker compose`) is not installed"
    return None


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ComposeStack:
    pki: TestPKI
    environ: dict[str, str]

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", PROJECT, *args],
            cwd=REPO_ROOT,
            env=self.environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`docker compose {' '.join(args)}` failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n{self.logs()}"
            )
        return result

    def logs(self) -> str:
        try:
            result = subprocess.run(
                ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", PROJECT,
                 "logs", "--no-color", "--tail", "80"],
                cwd=REPO_ROOT,
                env=self.environ,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return "(docker compose logs timed out)"
        return f"--- docker compose logs ---\n{result.stdout[-12000:]}{result.stderr[-2000:]}"

    def browser(self) -> httpx.Client:
        return httpx.Client(
            verify=self.pki.client_ssl_context(),
            follow_redirects=True,
            timeout=20,
            headers={"accept": BROWSER_ACCEPT},
        )


def _write_tls(directory: Path) -> TestPKI:
    """cert.pem + key.pem for the stack's hosts, readable by the containers' uid 1000."""
    pki = make_pki(directory, ["jenkins.localhost", "authenticate.localhost"])
    directory.chmod(0o755)
    for path in (pki.cert_file, pki.key_file, pki.ca_file):
        path.chmod(0o644)
    return pki


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    reason = _docker_skip_reason()
    if reason is not None:
        pytest.skip(f"docker-compose stack test skipped: {reason}")
    busy = [port for port in PUBLISHED_PORTS if _port_in_use(port)]
    if busy:
        pytest.fail(
            f"127.0.0.1 ports {busy} are in use; the stack publishes {list(PUBLISHED_PORTS)} "
            "(stop your own `docker compose` stack first)"
        )
    pki = _write_tls(tmp_path_factory.mktemp("compose-tls"))
    environ = {
        **os.environ,
        "COOKIE_SECRET": generate_cookie_secret(),
        "SIGNING_KEY": generate_signing_key_b64(),
        "IDP_CLIENT_SECRET": "compose-test-" + os.urandom(12).hex(),
        "AUTHGATE_TLS_DIR": str(pki.cert_file.parent),
    }
    running = ComposeStack(pki, environ)
    try:
        running.compose("up", "-d", "--build", timeout=BUILD_AND_START_TIMEOUT_S)
        _wait_for_envoy(running)
        yield running
    finally:
        running.compose("down", "-v", "--remove-orphans", timeout=300, check=False)


def _wait_for_envoy(stack: ComposeStack) -> None:
    deadline = time.monotonic() + ENVOY_READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{ENVOY_ADMIN}/ready", timeout=2)
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                return
            last = f"/ready answered {response.status_code}"
        time.sleep(1)
    raise AssertionError(
        f"Envoy was not ready after {ENVOY_READY_TIMEOUT_S} s ({last})\n{stack.logs()}"
    )


def _who_am_i(stack: ComposeStack, client: httpx.Client) -> dict[str, object]:
    """Jenkins' /whoAmI/api/json through the proxy, once Jenkins has started (503 until then)."""
    deadline = time.monotonic() + JENKINS_READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = client.get(
                f"{JENKINS}/whoAmI/api/json", headers={"accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            is_json = response.headers.get("content-type", "").startswith("application/json")
            if response.status_code == 200 and is_json:
                data: dict[str, object] = response.json()
                return data
            last = f"{response.status_code} {response.url} {response.text[:300]!r}"
        time.sleep(3)
    raise AssertionError(
        f"Jenkins' /whoAmI/api/json did not answer after {JENKINS_READY_TIMEOUT_S} s "
        f"(last: {last})\n{stack.logs()}"
    )


def test_alice_signs_in_and_jenkins_knows_her_with_her_groups(stack: ComposeStack) -> None:
    # Browsers resolve *.localhost to the loopback by themselves; Python's resolver needs help.
    with map_hosts({"*.localhost": "127.0.0.1"}), stack.browser() as client:
        page = client.get(f"{JENKINS}/whoAmI/api/json")
        assert is_idp_login_page(page), (
            f"expected the IdP login page, got {page.status_code} {page.url}\n{stack.logs()}"
        )
        assert page.url.host == "idp.localhost" and page.url.port == 9400
        landed = submit_idp_login(client, page, "alice@example.com", "alice-password")
        # Back on the URL first asked for (Jenkins itself may still be starting: then Envoy or
        # Jenkins answers 503, and _who_am_i waits).
        assert str(landed.url) == f"{JENKINS}/whoAmI/api/json", (
            f"{landed.status_code} {landed.url} {landed.text[:500]}"
        )

        who = _who_am_i(stack, client)
        assert who.get("name") == "alice@example.com", who
        assert who.get("anonymous") is False, who
        authorities = who.get("authorities")
        assert isinstance(authorities, list), who
        assert {"admins", "devs"} <= set(authorities), who


def test_the_jwks_jenkins_uses_is_served_through_the_proxy(stack: ComposeStack) -> None:
    with map_hosts({"*.localhost": "127.0.0.1"}), stack.browser() as client:
        jwks = client.get(f"{JENKINS}/.well-known/pomerium/jwks.json")
        assert jwks.status_code == 200, jwks.text
        (key,) = jwks.json()["keys"]
        assert key["kty"] == "EC" and key["crv"] == "P-256"
