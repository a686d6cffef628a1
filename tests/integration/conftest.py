"""The real stack: Envoy + authgate workers + the oidc-provider IdP + upstreams, over TLS.

Every test that uses the shared stacks (`env`, `fresh_env`, `hostile_stack`) runs twice, once per
way of sitting beside Envoy (DESIGN.md, "Two ways to sit beside Envoy"); the mode is in the test
id:

* `generated`: `authgate run` (tests/support/stack.py), Envoy from authgate's own bootstrap;
* `byo`: `authgate authz` workers behind an Envoy config written by hand
  (tests/support/byo_stack.py), which sends no context_extensions.

`@pytest.mark.generated_only("why")` skips a test for `byo` (it checks `authgate run` itself, or
the generated bootstrap); `@pytest.mark.byo_only("why")` the other way round.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from authgate.config.runtime import generate_signing_key_b64
from tests.support.byo_stack import (
    FAST_LANE_MODE,
    STACK_MODES,
    ByoStack,
    config_for_mode,
    stack_class,
)
from tests.support.certs import TestPKI, make_pki
from tests.support.idp import TestIdP, authgate_client
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

HOSTS = ["jenkins.test", "other.test", "status.test", "authenticate.test"]
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
Stack = AuthgateStack | ByoStack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "generated_only(reason): needs `authgate run` / the generated bootstrap; "
        "skipped for the byo stack mode",
    )
    config.addinivalue_line(
        "markers", "byo_only(reason): only meaningful behind a hand-written Envoy"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip (before any fixture starts a stack) the tests marked for the other mode; the
    fast-lane mode runs the attack suite only (its own tests are in test_fast_lane.py)."""
    fast_lane_elsewhere = [item for item in items if _fast_lane_outside_attacks(item)]
    if fast_lane_elsewhere:
        config.hook.pytest_deselected(items=fast_lane_elsewhere)
        items[:] = [item for item in items if not _fast_lane_outside_attacks(item)]
    for item in items:
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get("stack_mode") if callspec is not None else None
        if mode == FAST_LANE_MODE:
            mode = "generated"  # the generated bootstrap, with the fast lane on
        for marker, other in (("generated_only", "byo"), ("byo_only", "generated")):
            mark = item.get_closest_marker(marker)
            if mark is not None and mode == other:
                why = mark.args[0] if mark.args else mark.kwargs.get("reason", "")
                item.add_marker(pytest.mark.skip(reason=f"{marker.replace('_', ' ')}: {why}"))


def _fast_lane_outside_attacks(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    mode = callspec.params.get("stack_mode") if callspec is not None else None
    return mode == FAST_LANE_MODE and not item.path.name.startswith("test_attack_")


@pytest.fixture(scope="session", params=(*STACK_MODES, FAST_LANE_MODE))
def stack_mode(request: pytest.FixtureRequest) -> str:
    """`generated` or `byo`: which stack `env`, `fresh_env` and `hostile_stack` start;
    `fast-lane` (attack modules only): `generated` with `fast_lane: true`."""
    return str(request.param)


@dataclass
class Env:
    """What a test needs to know about the running stack."""

    port: int
    pki: TestPKI
    idp: TestIdP
    jenkins: SampleUpstream
    other: SampleUpstream
    status: SampleUpstream
    stack: Stack
    mode: str = "generated"

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def browser(self) -> httpx.Client:
        """An httpx client that behaves like a browser: cookies, redirects, Accept: text/html."""
        return httpx.Client(
            verify=self.pki.client_ssl_context(),
            follow_redirects=True,
            timeout=15,
            headers={"accept": BROWSER_ACCEPT},
        )

    def login(
        self,
        client: httpx.Client,
        url: str,
        email: str = "alice@example.com",
        password: str | None = None,
    ) -> httpx.Response:
        page = client.get(url)
        assert is_idp_login_page(page), f"expected the IdP login page, got {page.url}"
        return submit_idp_login(client, page, email, password or email.split("@")[0] + "-password")


def stack_config(
    port: int, pki: TestPKI, idp: TestIdP, jenkins_sock: Path, other_port: int, status_port: int
) -> dict[str, Any]:
    return {
        "address": f"127.0.0.1:{port}",
        "certificate_file": str(pki.cert_file),
        "certificate_key_file": str(pki.key_file),
        "authenticate_service_url": f"https://authenticate.test:{port}",
        "idp_provider": "oidc",
        "idp_provider_url": idp.issuer,
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "idp_scopes": ["openid", "profile", "email", "groups"],
        # As in Pomerium, claim headers only for the claims listed (tests read these four).
        "jwt_claims_headers": ["email", "user", "name", "groups"],
        "signing_key": generate_signing_key_b64(),
        "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "routes": [
            {
                "from": f"https://jenkins.test:{port}",
                "to": f"unix://{jenkins_sock}",
                "pass_identity_headers": True,
                "host_rewrite_header": True,
                "allow_websockets": True,
                "policy": [{"allow": {"and": [{"domain": {"is": "example.com"}}]}}],
            },
            {
                "from": f"https://other.test:{port}",
                "to": f"http://127.0.0.1:{other_port}",
                "pass_identity_headers": True,
                "allow_any_authenticated_user": True,
            },
            {
                "from": f"https://status.test:{port}",
                "to": f"http://127.0.0.1:{status_port}",
                "allow_public_unauthenticated_access": True,
            },
        ],
    }


def start_env(workdir: Path, workers: int = 1, mode: str = "generated") -> Iterator[Env]:
    port = free_port()
    pki = make_pki(workdir / "tls", HOSTS)
    idp = TestIdP(clients=[authgate_client(port)])
    sock = Path(f"/tmp/ag-{os.getpid()}-{secrets.token_hex(3)}.sock")
    with idp:  # name mapping is per test (autouse fixture), never left on for the session
        jenkins = SampleUpstream(
            unix_path=sock,
            ca_file=pki.ca_file,
            jwks_url=f"https://jenkins.test:{port}/.well-known/pomerium/jwks.json",
            issuers=["authenticate.test"],
            audiences=["jenkins.test"],
        )
        other = SampleUpstream(
            tcp_port=0,
            ca_file=pki.ca_file,
            jwks_url=f"https://other.test:{port}/.well-known/pomerium/jwks.json",
            issuers=["authenticate.test"],
            audiences=["other.test"],
        )
        status = SampleUpstream(tcp_port=0)
        with jenkins, other, status:
            assert other.port is not None and status.port is not None
            config = config_for_mode(
                stack_config(port, pki, idp, sock, other.port, status.port), mode
            )
            with stack_class(mode)(
                workdir / "stack", config, workers=workers, ca_file=pki.ca_file
            ) as stack:
                yield Env(port, pki, idp, jenkins, other, status, stack, mode)


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory, stack_mode: str) -> Iterator[Env]:
    """One shared stack (2 workers) per mode for the non-destructive tests."""
    yield from start_env(tmp_path_factory.mktemp(f"stack-{stack_mode}"), 2, stack_mode)


@pytest.fixture
def fresh_env(tmp_path: Path, stack_mode: str) -> Iterator[Env]:
    """A private stack for tests that break things (stopping workers)."""
    yield from start_env(tmp_path, 1, stack_mode)


@pytest.fixture(autouse=True)
def _resolve_test_hosts() -> Iterator[None]:
    with map_hosts({"*.test": "127.0.0.1"}):
        yield
