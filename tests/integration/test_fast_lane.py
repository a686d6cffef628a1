"""The fast lane through the real Envoy, the real authz workers and the real IdP.

Whether a request reached authz is read from Envoy itself (the authz cluster's request counter on
the admin socket), so "without a Check" means no gRPC call left Envoy.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from authgate.config.load import load_settings
from authgate.config.runtime import build_runtime, generate_signing_key_b64
from authgate.fast_pass import PASS_ISSUER, FastLane
from tests.support.certs import TestPKI, make_pki
from tests.support.idp import TestIdP, authgate_client
from tests.support.idp_login import is_idp_login_page, submit_idp_login
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

HOSTS = ["jenkins.test", "other.test", "authenticate.test"]
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SESSION = "__Host-_pomerium"
CHECKS = "cluster.authgate_authz.upstream_rq_total"


@dataclass
class Lane:
    port: int
    pki: TestPKI
    stack: AuthgateStack
    app: SampleUpstream
    lane: FastLane  # the same config's passes, as authz and Envoy see them

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def client(self, *, http2: bool = False, follow: bool = True) -> httpx.Client:
        return httpx.Client(
            verify=self.pki.client_ssl_context(),
            http2=http2,
            follow_redirects=follow,
            timeout=20,
            headers={"accept": BROWSER},
        )

    def checks(self) -> int:
        """Check calls Envoy has sent to authz so far (read from Envoy's admin socket)."""
        transport = httpx.HTTPTransport(uds=str(self.stack.runtime_dir / "admin.sock"))
        with httpx.Client(transport=transport, timeout=10) as admin:
            text = admin.get("http://admin/stats", params={"filter": f"^{CHECKS}$"}).text
        return int(text.split(":")[1])

    def login(self, client: httpx.Client, host: str, path: str = "/") -> httpx.Response:
        page = client.get(self.url(host, path))
        assert is_idp_login_page(page), f"expected the IdP login page, got {page.url}"
        return submit_idp_login(client, page, "alice@example.com", "alice-password")

    def pass_cookie(self, route_id: str) -> str:
        return self.lane.routes[route_id].cookie

    def forge(self, route_id: str, *, exp_in: float, audience: str | None = None,
              assertion: str = "") -> str:
        """A pass signed with the real pass key (what a worker would mint), with our choices."""
        now = int(time.time())
        headers = {"x-pomerium-jwt-assertion": assertion,
                   "x-pomerium-claim-email": "forged@example.com",
                   "x-pomerium-claim-user": "forged",
                   "x-pomerium-claim-name": "Forged", "x-pomerium-claim-groups": "admins"}
        claims = {"iss": PASS_ISSUER, "aud": audience or self.lane.routes[route_id].audience,
                  "iat": now, "exp": int(now + exp_in), "h": headers}
        return jwt.encode(claims, self.lane.key, algorithm="ES256", headers={"kid": self.lane.kid})


def _config(port: int, pki: TestPKI, idp: TestIdP, app: SampleUpstream) -> dict[str, Any]:
    to = f"http://127.0.0.1:{app.port}"
    jenkins = f"https://jenkins.test:{port}"
    return {
        "address": f"127.0.0.1:{port}",
        "certificate_file": str(pki.cert_file),
        "certificate_key_file": str(pki.key_file),
        "authenticate_service_url": f"https://authenticate.test:{port}",
        "idp_provider_url": idp.issuer,
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "idp_scopes": ["openid", "profile", "email", "groups"],
        "signing_key": generate_signing_key_b64(),
        "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "fast_lane": True,
        "fast_lane_ttl": "30s",
        "jwt_claims_headers": ["email", "user", "name", "groups"],  # Pomerium: none unless listed
        "routes": [
            # A stricter policy on a prefix of the same host: alice may not.
            {"id": "admin", "from": jenkins, "prefix": "/admin", "to": to,
             "pass_identity_headers": True, "allowed_users": ["root@example.com"]},
            # A policy with a time criterion never gets a pass.
            {"id": "timed", "from": jenkins, "prefix": "/timed", "to": to,
             "pass_identity_headers": True,
             "policy": [{"allow": {"and": [{"domain": {"is": "example.com"}},
                                           {"date": {"after": "2000-01-01T00:00:00Z"}}]}}]},
            {"id": "plain", "from": jenkins, "prefix": "/plain", "to": to, "fast_lane": False,
             "pass_identity_headers": True, "allow_any_authenticated_user": True},
            {"id": "jenkins", "from": jenkins, "to": to, "pass_identity_headers": True,
             "policy": [{"allow": {"and": [{"groups": {"has": "admins"}}]}}]},
            {"id": "other", "from": f"https://other.test:{port}", "to": to,
             "pass_identity_headers": True, "allow_any_authenticated_user": True},
        ],
    }


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lane]:
    tmp = tmp_path_factory.mktemp("fast-lane")
    port = free_port()
    pki = make_pki(tmp / "tls", HOSTS)
    with TestIdP(clients=[authgate_client(port)]) as idp:
        app = SampleUpstream(
            tcp_port=0, ca_file=pki.ca_file,
            jwks_url=f"https://jenkins.test:{port}/.well-known/pomerium/jwks.json",
            issuers=["authenticate.test"], audiences=["jenkins.test", "other.test"],
        )
        with app:
            config = _config(port, pki, idp, app)
            with AuthgateStack(tmp / "stack", config, workers=1, ca_file=pki.ca_file) as stack:
                runtime = build_runtime(load_settings(stack.config_path))
                yield Lane(port, pki, stack, app, FastLane(runtime))


@pytest.fixture(autouse=True)
def _resolve_test_hosts() -> Iterator[None]:
    with map_hosts({"*.test": "127.0.0.1"}):
        yield


def _pass_set(answer: httpx.Response, name: str) -> str | None:
    for value in answer.headers.get_list("set-cookie"):
        if value.startswith(f"{name}="):
            return value
    return None


def _session(client: httpx.Client) -> str:
    return next(c.value for c in client.cookies.jar if c.name == SESSION and c.value)


def _get(lane: Lane, host: str, path: str, cookies: dict[str, str],
         headers: dict[str, str] | None = None, http2: bool = False) -> tuple[httpx.Response, int]:
    """One request with exactly these cookies; the number of Checks it caused."""
    before = lane.checks()
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    with lane.client(follow=False, http2=http2) as c:
        answer = c.get(lane.url(host, path),
                       headers={"cookie": cookie, "accept": "application/json", **(headers or {})})
    return answer, lane.checks() - before


@pytest.fixture(scope="module")
def signed_in(lane: Lane) -> dict[str, str]:
    """alice's session cookie and the jenkins route's pass the login's last answer set."""
    with map_hosts({"*.test": "127.0.0.1"}), lane.client() as browser:
        landed = lane.login(browser, "jenkins.test", "/start")
        assert landed.status_code == 200
        assert landed.json()["user"]["username"] == "alice@example.com"
        name = lane.pass_cookie("jenkins")
        minted = _pass_set(landed, name)
        assert minted is not None, landed.headers.get_list("set-cookie")
        attrs = {a.strip().split("=")[0].lower() for a in minted.split(";")[1:]}
        assert name.startswith("__Host-") and {"httponly", "secure", "samesite", "path"} <= attrs
        assert "domain" not in attrs and "Max-Age=30" in minted
        return {SESSION: _session(browser), name: minted.split(";")[0].split("=", 1)[1]}


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_pass_is_used_without_a_check_and_headers_are_ours(
    lane: Lane, signed_in: dict[str, str], http2: bool
) -> None:
    # Without a pass: a Check, whose OK answer sets one (Set-Cookie through ext_authz's OK).
    session_only = {SESSION: signed_in[SESSION]}
    answer, checks = _get(lane, "jenkins.test", "/job/x", session_only, http2=http2)
    assert answer.status_code == 200 and checks >= 1
    assert _pass_set(answer, lane.pass_cookie("jenkins")) is not None
    cookies = {"JSESSIONID": "app-own", **signed_in, "theme": "dark"}
    spoofed = {"x-pomerium-claim-email": "evil@example.com", "X-Pomerium-Jwt-Assertion": "forged",
               "x-pomerium-anything": "1", "x-pomerium-authgate-strip-cookies": "0"}
    answer, checks = _get(lane, "jenkins.test", "/job/x", cookies, spoofed, http2=http2)
    assert answer.status_code == 200 and checks == 0
    assert answer.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    seen = answer.json()
    assert seen["user"]["username"] == "alice@example.com", seen["auth_error"]
    headers = seen["headers"]
    assert headers["x-pomerium-claim-email"] == "alice@example.com"
    assert headers["x-pomerium-claim-groups"] == "admins,devs"
    assert "x-pomerium-anything" not in headers
    assert "x-pomerium-authgate-strip-cookies" not in headers
    assert headers["cookie"] == "JSESSIONID=app-own; theme=dark"  # authgate's cookies cut
    assert _pass_set(answer, lane.pass_cookie("jenkins")) is None  # no new pass


def test_a_request_with_a_token_takes_the_check(lane: Lane, signed_in: dict[str, str]) -> None:
    answer, checks = _get(lane, "jenkins.test", "/t", signed_in,
                          {"authorization": "Bearer not-a-real-token"})
    assert checks >= 1 and answer.status_code == 200


def test_tampered_or_forged_passes_take_the_check(lane: Lane, signed_in: dict[str, str]) -> None:
    name = lane.pass_cookie("jenkins")
    good = signed_in[name]
    head, body, sig = good.split(".")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    other_key = jwt.encode({"iss": PASS_ISSUER, "aud": lane.lane.routes["jenkins"].audience,
                            "exp": int(time.time()) + 20, "iat": int(time.time())},
                           jwt.api_jwk.PyJWK.from_dict({"kty": "EC", "crv": "P-256", **_new_ec()})
                           .key, algorithm="ES256", headers={"kid": lane.lane.kid})
    for bad in (f"{head}.{body}.{flipped}", f"{head}.{body}x.{sig}", other_key, "garbage"):
        answer, checks = _get(lane, "jenkins.test", "/t", {**signed_in, name: bad})
        assert checks >= 1 and answer.status_code == 200  # the session still lets alice in
        assert _pass_set(answer, name) is not None  # and she gets a good pass again
        # Without the session, a bad pass is no way in.
        answer, checks = _get(lane, "jenkins.test", "/t", {name: bad})
        assert checks >= 1 and answer.status_code in (302, 401)


def _new_ec() -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric import ec

    from authgate.assertion.signer import public_jwk

    key = ec.generate_private_key(ec.SECP256R1())
    number = key.private_numbers().private_value
    d = base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()
    return {**public_jwk(key), "d": d}


def test_a_pass_for_another_route_is_no_pass(lane: Lane, signed_in: dict[str, str]) -> None:
    jenkins_pass = signed_in[lane.pass_cookie("jenkins")]
    # Other host, under its own cookie name and under jenkins's: no session -> refused.
    for name in (lane.pass_cookie("other"), lane.pass_cookie("jenkins")):
        answer, checks = _get(lane, "other.test", "/", {name: jenkins_pass})
        assert checks >= 1 and answer.status_code in (302, 401)
    # Same host, a stricter policy on another prefix: alice is refused even with the pass.
    for name in (lane.pass_cookie("admin"), lane.pass_cookie("jenkins")):
        answer, checks = _get(lane, "jenkins.test", "/admin/x", {**signed_in, name: jenkins_pass})
        assert checks >= 1 and answer.status_code == 403


def test_expired_or_old_version_passes_take_the_check(lane: Lane) -> None:
    name = lane.pass_cookie("jenkins")
    short = lane.forge("jenkins", exp_in=2)
    answer, checks = _get(lane, "jenkins.test", "/soon", {name: short})
    assert checks == 0 and answer.status_code == 200  # (the forged pass is honoured while valid)
    assert answer.json()["headers"]["x-pomerium-claim-email"] == "forged@example.com"
    time.sleep(2 + 1 + 1.5)  # its exp, Envoy's 1 s skew, and a margin
    answer, checks = _get(lane, "jenkins.test", "/soon", {name: short})
    assert checks >= 1 and answer.status_code in (302, 401)
    before_reload = f"{PASS_ISSUER}:jenkins:0123456789abcdef01234567"
    old = lane.forge("jenkins", exp_in=20, audience=before_reload)
    answer, checks = _get(lane, "jenkins.test", "/old", {name: old})
    assert checks >= 1 and answer.status_code in (302, 401)
    too_long = lane.forge("jenkins", exp_in=3600)  # longer than fast_lane_ttl: refused by Envoy
    answer, checks = _get(lane, "jenkins.test", "/long", {name: too_long})
    assert checks >= 1 and answer.status_code in (302, 401)


@pytest.mark.parametrize("path, route", [("/timed/x", "timed"), ("/plain/x", "plain")])
def test_routes_without_the_fast_lane_never_get_a_pass(
    lane: Lane, signed_in: dict[str, str], path: str, route: str
) -> None:
    assert route not in lane.lane.routes
    for _ in range(2):
        answer, checks = _get(lane, "jenkins.test", path, {SESSION: signed_in[SESSION]})
        assert answer.status_code == 200 and checks >= 1
        assert not any("_fl_" in c for c in answer.headers.get_list("set-cookie"))


def test_sign_out_clears_the_pass(lane: Lane) -> None:
    with lane.client() as browser:
        lane.login(browser, "jenkins.test", "/first")
        name = lane.pass_cookie("jenkins")
        assert any(c.name == name for c in browser.cookies.jar)
        page = browser.get(lane.url("jenkins.test", "/.pomerium/sign_out"))
        action = page.text.split('action="')[1].split('"')[0].replace("&amp;", "&")
        with lane.client(follow=False) as raw:
            raw.cookies = browser.cookies
            done = raw.post(lane.url("jenkins.test", action),
                            headers={"origin": lane.url("jenkins.test", "").rstrip("/")})
        cleared = _pass_set(done, name)
        assert done.status_code == 302 and cleared is not None and "Max-Age=0" in cleared
        for route_id in ("admin", "jenkins"):  # every pass of this host
            assert _pass_set(done, lane.pass_cookie(route_id)) is not None


def test_authz_workers_agree_with_envoy_on_pass_audiences(lane: Lane) -> None:
    transport = httpx.HTTPTransport(uds=str(lane.stack.runtime_dir / "admin.sock"))
    with httpx.Client(transport=transport, timeout=10) as admin:
        loaded = admin.get("http://admin/config_dump").text
    assert set(lane.lane.routes) == {"admin", "jenkins", "other"}
    for route in lane.lane.routes.values():
        assert route.audience in loaded
