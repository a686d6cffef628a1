"""Cookie rules a browser enforces and an HTTP client does not, in Debian's Chromium through the
real stack (`authgate run`: Envoy + workers, the test IdP, a sample upstream that echoes what it
received): the `__Secure-` session cookie with `Domain=` (cookie_domain) and the sign-out landing
(signout_redirect_url); and the fast lane's `__Host-` pass cookie, after which a page load takes
no Check (read from Envoy's authz request counter on its admin socket)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authgate.config.load import load_settings
from authgate.config.runtime import build_runtime
from authgate.fast_pass import FastLane
from tests.integration.test_fast_lane import HOSTS, Lane, _config
from tests.support.browser import chromium_page
from tests.support.certs import TestPKI, make_pki
from tests.support.idp import TestIdP, authgate_client
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port
from tests.support.upstream import SampleUpstream

pytestmark = pytest.mark.browser

CORP_HOSTS = ["app.corp.test", "api.corp.test", "authenticate.test"]


def _idp_login(page: Any, issuer: str, email: str, lands_on: str) -> None:
    """On the IdP's real login page: type the user's credentials, wait to land on `lands_on`."""
    page.wait_for_selector("input[name=email]", timeout=15_000)
    assert page.url.startswith(issuer), page.url
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", email.split("@")[0] + "-password")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lands_on, timeout=15_000)


def _seen(page: Any) -> dict[str, Any]:
    """What the upstream received (it echoes it as JSON in the page body)."""
    seen: dict[str, Any] = json.loads(page.inner_text("body"))
    return seen


# ---------------------------------------------------------------------------- cookie_domain


@contextlib.contextmanager
def _corp_stack(tmp: Path, same_site: str) -> Iterator[tuple[AuthgateStack, TestIdP, str]]:
    """Two route hosts inside `cookie_domain: corp.test`, the authenticate host outside it;
    sign-out lands on a page of the sample upstream under a name of its own (no route)."""
    port = free_port()
    pki: TestPKI = make_pki(tmp / "tls", CORP_HOSTS)
    with TestIdP(clients=[authgate_client(port)]) as idp, SampleUpstream(tcp_port=0) as app:
        landing = f"http://signed-out.test:{app.port}/goodbye"
        config = {
            "address": f"127.0.0.1:{port}",
            "certificate_file": str(pki.cert_file),
            "certificate_key_file": str(pki.key_file),
            "authenticate_service_url": f"https://authenticate.test:{port}",
            "idp_provider_url": idp.issuer,
            "idp_client_id": "authgate",
            "idp_client_secret": "secret",
            "cookie_domain": "corp.test",
            "cookie_same_site": same_site,
            "signout_redirect_url": landing,
            "jwt_claims_headers": ["email"],
            "routes": [
                {"from": f"https://{host}:{port}", "to": f"http://127.0.0.1:{app.port}",
                 "pass_identity_headers": True, "allow_any_authenticated_user": True}
                for host in CORP_HOSTS[:2]
            ],
        }
        with AuthgateStack(tmp / "run", config, ca_file=pki.ca_file) as stack:
            yield stack, idp, landing


@pytest.fixture(scope="module")
def corp(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AuthgateStack, TestIdP, str]]:
    with _corp_stack(tmp_path_factory.mktemp("browser-cookie-domain"), "lax") as stack:
        yield stack


def test_cookie_domain_one_sign_in_in_chromium_and_the_sign_out_landing(
    corp: tuple[AuthgateStack, TestIdP, str],
) -> None:
    stack, idp, landing = corp
    port = stack.config["address"].rpartition(":")[2]

    def url(host: str, path: str = "/") -> str:
        return f"https://{host}:{port}{path}"

    with chromium_page() as page:
        first = url("app.corp.test", "/start")
        page.goto(first)
        _idp_login(page, idp.issuer, "alice@example.com", first)
        assert _seen(page)["headers"]["x-pomerium-claim-email"] == "alice@example.com"

        # Chromium kept the session cookie for the whole domain, with the configured flags.
        jar = page.context.cookies()
        sessions = [c for c in jar if c["name"] == "__Secure-_pomerium"]
        # (the authenticate host, outside the domain, keeps its own, host-only)
        inside = [c for c in sessions if c["domain"].endswith("corp.test")]
        assert [c["domain"] for c in inside] == [".corp.test"], sessions
        session = inside[0]
        assert session["path"] == "/" and session["secure"] and session["httpOnly"], session
        assert session["sameSite"] == "Lax", session
        assert not [c for c in jar if c["name"] == "__Host-_pomerium"], jar

        # The other host inside the domain: no IdP page, no hand-off; the app sees alice.
        hops: list[str] = []
        page.on("request", lambda r: hops.append(r.url) if r.is_navigation_request() else None)
        other = url("api.corp.test", "/data")
        answer = page.goto(other)
        assert answer is not None and answer.status == 200 and page.url == other
        assert hops == [other], hops  # not one redirect on the way
        seen = _seen(page)
        assert seen["path"] == "/data"
        assert seen["headers"]["x-pomerium-claim-email"] == "alice@example.com"
        assert "_pomerium" not in seen["headers"].get("cookie", "")

        # Sign out through the real sign-out form on host B: the IdP's logout page (it submits
        # itself), then signout_redirect_url.
        page.goto(url("api.corp.test", "/.pomerium/sign_out"))
        page.click("button[type=submit]")
        page.wait_for_url(landing, timeout=15_000)
        bye = _seen(page)
        assert bye["path"] == "/goodbye" and bye["host"] == landing.split("/")[2], bye
        assert "x-pomerium-jwt-assertion" not in bye["headers"]  # straight there, not via Envoy
        assert not [c for c in page.context.cookies() if c["name"] == "__Secure-_pomerium"]

        # Host A now asks for a sign-in again.
        page.goto(first)
        page.wait_for_selector("input[name=email]", timeout=15_000)
        assert page.url.startswith(idp.issuer), page.url


def test_cookie_same_site_strict_still_signs_in_in_chromium(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("browser-cookie-strict")
    with _corp_stack(tmp, "strict") as (stack, idp, _), chromium_page() as page:
        port = stack.config["address"].rpartition(":")[2]
        first = f"https://app.corp.test:{port}/start"
        page.goto(first)
        page.wait_for_selector("input[name=email]", timeout=15_000)
        assert page.url.startswith(idp.issuer), page.url
        page.fill("input[name=email]", "alice@example.com")
        page.fill("input[name=password]", "alice-password")
        page.click("button[type=submit], input[type=submit]")
        # The hand-off answers a page that moves on by itself (a same-site navigation, which
        # carries the Strict cookie); with a 302 this looped to ERR_TOO_MANY_REDIRECTS.
        page.wait_for_url(lambda u: u == first or u.startswith("chrome-error:"), timeout=15_000)
        assert page.url == first, page.url
        assert _seen(page)["headers"]["x-pomerium-claim-email"] == "alice@example.com"
        session = [c for c in page.context.cookies() if c["domain"] == ".corp.test"]
        assert [c["sameSite"] for c in session] == ["Strict"], session


# ---------------------------------------------------------------------------- fast lane


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lane]:
    tmp = tmp_path_factory.mktemp("browser-fast-lane")
    port = free_port()
    pki = make_pki(tmp / "tls", HOSTS)
    with map_hosts({"*.test": "127.0.0.1"}), TestIdP(clients=[authgate_client(port)]) as idp:
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
    """The sample upstream fetches the JWKS from a .test host (in this process)."""
    with map_hosts({"*.test": "127.0.0.1"}):
        yield


def _settled_checks(lane: Lane) -> int:
    """Envoy's Check count once no request of the last page load is still on its way."""
    count = lane.checks()
    while True:
        time.sleep(0.3)
        again = lane.checks()
        if again == count:
            return count
        count = again


def test_fast_lane_pass_in_chromium_and_a_page_load_without_a_check(lane: Lane) -> None:
    name = lane.pass_cookie("jenkins")
    assert name.startswith("__Host-_pomerium_fl_")
    issuer = lane.stack.config["idp_provider_url"]
    with chromium_page() as page:
        first = lane.url("jenkins.test", "/start")
        page.goto(first)
        _idp_login(page, issuer, "alice@example.com", first)
        assert _seen(page)["user"]["username"] == "alice@example.com"

        passes = [c for c in page.context.cookies() if c["name"] == name]
        assert len(passes) == 1, page.context.cookies()
        cookie = passes[0]
        # __Host-: host-only (no leading dot: no Domain attribute), Secure, Path=/.
        assert cookie["domain"] == "jenkins.test", cookie
        assert cookie["path"] == "/" and cookie["secure"] and cookie["httpOnly"], cookie
        assert 0 < cookie["expires"] - time.time() <= 31, cookie  # fast_lane_ttl: 30s

        before = _settled_checks(lane)
        answer = page.goto(lane.url("jenkins.test", "/job/again"))
        assert answer is not None and answer.status == 200
        after = _settled_checks(lane)
        assert after == before, f"{after - before} Check(s) for a page load with a pass"
        seen = _seen(page)
        assert seen["path"] == "/job/again"
        assert seen["user"]["username"] == "alice@example.com", seen.get("auth_error")
        assert seen["headers"]["x-pomerium-claim-email"] == "alice@example.com"
        assert seen["headers"]["x-pomerium-claim-groups"] == "admins,devs"
        assert "_pomerium" not in seen["headers"].get("cookie", "")

        # Without the pass (the browser still has the session) the same load takes a Check.
        page.context.clear_cookies(name=name)
        page.goto(lane.url("jenkins.test", "/job/again"))
        assert _seen(page)["user"]["username"] == "alice@example.com"
        assert _settled_checks(lane) > after
