"""A configurable `authgate run` for tests that need their own: its own IdP (with test control),
Jenkins-like app on a Unix socket, another app, and any extra config keys. Several runs of one
config make replicas (their routes name the first run's port, as behind a load balancer)."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from authgate.config.runtime import generate_signing_key_b64
from tests.support.certs import TestPKI, make_pki
from tests.support.idp import DEFAULT_USERS, TestIdP, authgate_client
from tests.support.idp_flow import REDIRECT_URI
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
HOSTS = ["jenkins.test", "other.test", "authenticate.test"]
SESSION_COOKIE = "__Host-_pomerium"
MANY = "many@example.com"
# `admins` opens the Jenkins route; the rest make the claims some 20 KB.
GROUPS_500 = ["admins", *(f"team-{i:03d}-with-a-longish-directory-name" for i in range(499))]


@dataclass
class Gate:
    """One `authgate run` and what a test needs to talk to it."""

    port: int  # where this run listens
    public_port: int  # the port in the routes' `from` (a load balancer's, for replicas)
    pki: TestPKI
    idp: TestIdP
    jenkins: SampleUpstream
    other: SampleUpstream
    stack: AuthgateStack

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def host(self, host: str) -> str:
        return f"{host}:{self.public_port}"

    def client(self, *, follow: bool = True, accept: str = BROWSER) -> httpx.Client:
        return httpx.Client(
            verify=self.pki.client_ssl_context(),
            follow_redirects=follow,
            timeout=15,
            headers={"accept": accept},
        )

    def get(
        self, host: str, path: str, cookie: str, accept: str = "application/json"
    ) -> httpx.Response:
        """One request to this run with the public Host (as a load balancer forwards it)."""
        with self.client(follow=False, accept=accept) as c:
            return c.get(
                self.url(host, path),
                headers={"host": self.host(host), "cookie": f"{SESSION_COOKIE}={cookie}"},
            )

    def login(self, client: httpx.Client, host: str, email: str, path: str = "/") -> httpx.Response:
        page = client.get(self.url(host, path))
        assert is_idp_login_page(page), f"expected the IdP login page, got {page.url}"
        user = next((u for u in users() if u["email"] == email), None)
        password = user["password"] if user else email.split("@")[0] + "-password"
        return submit_idp_login(client, page, email, password)


def users() -> list[dict[str, Any]]:
    return [*DEFAULT_USERS, {"email": MANY, "password": "many-password", "groups": GROUPS_500}]


def cookie_of(client: httpx.Client, host: str) -> str:
    for cookie in client.cookies.jar:
        if cookie.name == SESSION_COOKIE and cookie.domain.startswith(host):
            return str(cookie.value)
    raise AssertionError(f"no session cookie for {host}")


def gate_config(
    gate_port: int,
    public_port: int,
    pki: TestPKI,
    idp: TestIdP,
    jenkins: SampleUpstream,
    other: SampleUpstream,
    secrets_: dict[str, str],
    extra: dict[str, Any],
    route_extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`route_extra`: keys added to the `jenkins` or `other` route (a bearer_token_format...)."""
    per_route = route_extra or {}
    return {
        "address": f"127.0.0.1:{gate_port}",
        "certificate_file": str(pki.cert_file),
        "certificate_key_file": str(pki.key_file),
        "authenticate_service_url": f"https://authenticate.test:{public_port}",
        "idp_provider_url": idp.issuer,
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "idp_scopes": ["openid", "profile", "email", "groups", "offline_access"],
        # As in Pomerium, claim headers only for the claims listed (tests read these four).
        "jwt_claims_headers": ["email", "user", "name", "groups"],
        **secrets_,
        "routes": [
            {
                "from": f"https://jenkins.test:{public_port}",
                "to": f"unix://{jenkins.unix_path}",
                "pass_identity_headers": True,
                "policy": [{"allow": {"and": [{"groups": {"has": "admins"}}]}}],
                **per_route.get("jenkins", {}),
            },
            {
                "from": f"https://other.test:{public_port}",
                "to": f"http://127.0.0.1:{other.port}",
                "pass_identity_headers": True,
                "allow_any_authenticated_user": True,
                **per_route.get("other", {}),
            },
        ],
        **extra,
    }


@contextlib.contextmanager
def gates(
    tmp: Path,
    *,
    count: int = 1,
    workers: int = 2,
    extra: dict[str, Any] | None = None,
    route_extra: dict[str, dict[str, Any]] | None = None,
) -> Iterator[list[Gate]]:
    """`count` runs of the same config (replicas: the routes name the first run's port)."""
    ports = [free_port() for _ in range(count)]
    pki = make_pki(tmp / "tls", HOSTS)
    shared_secrets = {
        "signing_key": generate_signing_key_b64(),
        "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    client = authgate_client(ports[0])
    # A script's own code flow (tests/support/idp_flow.py) uses the same client.
    client["redirect_uris"] = [*client["redirect_uris"], REDIRECT_URI]  # type: ignore[misc]
    with TestIdP(clients=[client], users=users(), test_control=True) as idp:
        sock = Path(f"/tmp/ag-s-{os.getpid()}-{secrets.token_hex(3)}.sock")
        jwks = f"https://jenkins.test:{ports[0]}/.well-known/pomerium/jwks.json"
        jenkins = SampleUpstream(
            unix_path=sock, ca_file=pki.ca_file, jwks_url=jwks,
            issuers=["authenticate.test"], audiences=["jenkins.test"],
        )
        other = SampleUpstream(tcp_port=0)
        with jenkins, other, contextlib.ExitStack() as stacks:
            found = []
            for index, port in enumerate(ports):
                config = gate_config(
                    port, ports[0], pki, idp, jenkins, other, shared_secrets, extra or {},
                    route_extra,
                )
                stack = AuthgateStack(
                    tmp / f"run-{index}", config, workers=workers, ca_file=pki.ca_file
                )
                stacks.enter_context(stack)
                gate = Gate(port, ports[0], pki, idp, jenkins, other, stack)
                # A replica's readiness check above asked the first run's port: ask its own.
                eventually(lambda g=gate: _answers(g), within=30.0, step=0.2)  # type: ignore[misc]
                found.append(gate)
            yield found


def _answers(gate: Gate) -> bool:
    try:
        # Also from a module-scoped fixture, before the per-test name mapping is on.
        with map_hosts({"*.test": "127.0.0.1"}), gate.client(follow=False) as c:
            jwks = c.get(
                gate.url("authenticate.test", "/.well-known/pomerium/jwks.json"),
                headers={"host": gate.host("authenticate.test")},
            )
        return jwks.status_code == 200
    except httpx.HTTPError:
        return False


def eventually(check: Callable[[], bool], within: float, step: float = 0.05) -> float:
    """Seconds until `check()` held; fails after `within`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s")
        time.sleep(step)
    return time.monotonic() - start


def refused(answer: httpx.Response) -> bool:
    return answer.status_code == 401 or (
        answer.status_code == 302 and "/.pomerium/sign_in?" in answer.headers.get("location", "")
    )


