"""`insecure_server: true` with https:// routes behind a TLS-terminating balancer (a real Envoy
written here) with `xff_num_trusted_hops: 1`: authgate's Envoy listens plain HTTP, yet its
redirects and cookies stay https and Secure, the app reads X-Forwarded-Proto https, and
`source_ip` sees the client's address as the balancer saw it, whatever X-Forwarded-For the
client sends.

Clients connect from different loopback addresses (127.0.0.2, 127.0.0.3) to tell them apart.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

from authgate.config.runtime import generate_signing_key_b64
from tests.support.certs import TestPKI, make_pki
from tests.support.front_envoy import FrontEnvoy
from tests.support.idp import TestIdP, authgate_client
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

ALLOWED_CLIENT = "127.0.0.2"
OTHER_CLIENT = "127.0.0.3"


@dataclass
class Balanced:
    front_port: int
    gate_port: int
    pki: TestPKI
    app: SampleUpstream
    stack: AuthgateStack

    def client(self, source: str = ALLOWED_CLIENT, follow: bool = False) -> httpx.Client:
        """A client of the balancer (https) connecting from the loopback address `source`."""
        transport = httpx.HTTPTransport(
            local_address=source, verify=self.pki.client_ssl_context()
        )
        return httpx.Client(transport=transport, timeout=20, follow_redirects=follow)

    def get(self, path: str, *, source: str = ALLOWED_CLIENT, **headers: str) -> httpx.Response:
        with map_hosts({"*.test": "127.0.0.1"}), self.client(source) as client:
            return client.get(
                f"https://app.test:{self.front_port}{path}",
                headers={"accept": "application/json", **headers},
            )


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balanced]:
    workdir = tmp_path_factory.mktemp("balancer")
    pki = make_pki(workdir / "tls", ["app.test", "authenticate.test"])
    front_port, gate_port = free_port(), free_port()
    public = f"https://app.test:{front_port}"
    with (
        TestIdP(clients=[authgate_client(front_port)]) as idp,
        SampleUpstream(tcp_port=0) as app,
    ):
        config = {
            "address": f"127.0.0.1:{gate_port}",
            "insecure_server": True,
            "xff_num_trusted_hops": 1,
            "jwt_claims_headers": ["email"],
            "authenticate_service_url": f"https://authenticate.test:{front_port}",
            "idp_provider_url": idp.issuer,
            "idp_client_id": "authgate",
            "idp_client_secret": "secret",
            "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
            "signing_key": generate_signing_key_b64(),
            "routes": [
                {"from": public, "prefix": "/office", "to": app.url,
                 "policy": {"allow": {"and": [{"source_ip": f"{ALLOWED_CLIENT}/32"}]}}},
                {"from": public, "prefix": "/public", "to": app.url,
                 "allow_public_unauthenticated_access": True},
                {"from": public, "to": app.url, "allow_any_authenticated_user": True,
                 "pass_identity_headers": True},
            ],
        }
        with (
            FrontEnvoy(workdir / "front", front_port, gate_port, pki),
            AuthgateStack(workdir / "gate", config, ca_file=pki.ca_file) as stack,
        ):
            yield Balanced(front_port, gate_port, pki, app, stack)


def test_source_ip_sees_the_client_behind_the_balancer(balanced: Balanced) -> None:
    allowed = balanced.get("/office/report")
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["path"] == "/office/report"
    # Another client is refused (no session: "sign in first").
    refused = balanced.get("/office/report", source=OTHER_CLIENT)
    assert refused.status_code == 401


def test_a_spoofed_x_forwarded_for_does_not_change_the_decision(balanced: Balanced) -> None:
    spoofed = balanced.get(
        "/office/report", source=OTHER_CLIENT, **{"x-forwarded-for": ALLOWED_CLIENT}
    )
    assert spoofed.status_code == 401
    forged = balanced.get(
        "/office/report", source=OTHER_CLIENT, **{"x-authgate-client-address": ALLOWED_CLIENT}
    )
    assert forged.status_code == 401
    # ...and the allowed client stays allowed whatever it claims to be.
    claimed = balanced.get("/office/report", **{"x-forwarded-for": "203.0.113.9"})
    assert claimed.status_code == 200


def test_the_app_reads_https_and_the_client_address(balanced: Balanced) -> None:
    balanced.app.clear()
    answer = balanced.get("/public/page", **{"x-forwarded-proto": "http"})
    assert answer.status_code == 200
    seen = balanced.app.requests.wait_for(lambda r: r.path == "/public/page", timeout=10)
    assert seen.header("x-forwarded-proto") == "https"
    assert seen.header("x-envoy-external-address") == ALLOWED_CLIENT
    # The balancer's entry first; Envoy appends its own hop (for a loopback peer, its own
    # local address).
    chain = [hop.strip() for hop in (seen.header("x-forwarded-for") or "").split(",")]
    assert chain[0] == ALLOWED_CLIENT and len(chain) == 2, chain
    assert seen.header("x-authgate-client-address") is None


def test_sign_in_redirects_and_cookies_stay_https_and_secure(balanced: Balanced) -> None:
    answer = balanced.get("/jobs", accept="text/html")
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert (location.scheme, location.netloc) == (
        "https", f"authenticate.test:{balanced.front_port}"
    )
    cookies = answer.headers.get_list("set-cookie")
    assert cookies, "the sign-in sets its login cookie on the route host"
    for cookie in cookies:
        assert cookie.startswith("__Host-"), cookie
        assert "Secure" in cookie.split("; "), cookie


def test_the_plain_listener_serves_only_http(balanced: Balanced) -> None:
    with pytest.raises(httpx.HTTPError), httpx.Client(verify=False, timeout=10) as client:
        client.get(f"https://127.0.0.1:{balanced.gate_port}/")
    # Plain HTTP straight to authgate (no balancer) still gets https redirects.
    with httpx.Client(timeout=10) as client:
        direct = client.get(
            f"http://127.0.0.1:{balanced.gate_port}/jobs",
            headers={"host": f"app.test:{balanced.front_port}", "accept": "text/html"},
        )
    assert direct.status_code == 302
    assert direct.headers["location"].startswith(
        f"https://authenticate.test:{balanced.front_port}/"
    )


def test_signing_in_through_the_balancer(balanced: Balanced) -> None:
    """The whole sign-in over the balancer: https callbacks, a Secure `__Host-` session."""
    with map_hosts({"*.test": "127.0.0.1"}), balanced.client(follow=True) as client:
        client.headers["accept"] = "text/html"
        page = client.get(f"https://app.test:{balanced.front_port}/jobs/1")
        assert is_idp_login_page(page), page.url
        done = submit_idp_login(client, page, "alice@example.com", "alice-password")
        assert done.status_code == 200, done.text
        assert str(done.url) == f"https://app.test:{balanced.front_port}/jobs/1"
        seen = balanced.app.requests.wait_for(lambda r: r.path == "/jobs/1", timeout=10)
        assert seen.header("x-pomerium-claim-email") == "alice@example.com"
        sessions = [c for c in client.cookies.jar if c.name == "__Host-_pomerium"]
        assert sessions and all(c.secure for c in sessions)
