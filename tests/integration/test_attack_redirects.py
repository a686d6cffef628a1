"""Open redirects through real Envoy + authgate + IdP: every corpus line, after login and after
sign-out, ends on a URL of the route (or, for sign-out, the IdP's end-session page).

The corpus (`shared/corpora/open-redirects.txt`, 559 payloads from oauth2-proxy's test data) is
tried once as written and once with its stand-in allowed host `www.whitelisteddomain.tld`
replaced by the real route host, which makes `https://route@evil/`-style payloads sharper.

Post-login: the only part of the login target a visitor chooses is the URL first asked for, so
each payload is sent as that request's target (as a path, and verbatim as the request-target),
and the login is walked hop by hop with the authenticate host's existing session (no IdP round
trip per payload); the sign-in and callback URLs also get the payload as `pomerium_redirect_uri`,
`redirect_uri` and `rd` parameters, which must be ignored.

Post-sign-out: `GET /.pomerium/sign_out?pomerium_redirect_uri=<payload>` (the payload once
decoded by the query parser) -> the form -> POST (the form's own action, and the same token
with the payload itself in the action) -> the authenticate host -> the IdP's end-session URL ->
back at `/.pomerium/signed_out` with the IdP's `state`.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest

from tests.integration.attack_kit import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    as_request_target,
    attack_client,
    query_param,
    same_origin,
    where_a_browser_goes,
)
from tests.integration.conftest import Env
from tests.security_summary import hostile
from tests.support.idp_login import is_idp_logout_page, submit_idp_logout
from tests.support.resolve import map_hosts

pytestmark = pytest.mark.usefixtures("env_stays_healthy")

_SHARED = Path(__file__).resolve().parents[3] / "shared/corpora/open-redirects.txt"
_COPY = Path(__file__).resolve().parents[1] / "data/open-redirects.txt"
CORPUS_FILE = _SHARED if _SHARED.is_file() else _COPY


def corpus() -> list[str]:
    lines = CORPUS_FILE.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


PAYLOADS = corpus()
EXTRA_PARAMS = ("pomerium_redirect_uri", "redirect_uri", "rd")


def payloads_for(netloc: str) -> list[str]:
    sharpened = [p.replace("www.whitelisteddomain.tld", netloc) for p in PAYLOADS]
    return PAYLOADS + [p for p in sharpened if p not in PAYLOADS]


def test_corpus_is_all_there() -> None:
    assert len(PAYLOADS) >= 559
    assert sum("whitelisteddomain" in p for p in PAYLOADS) > 100


def _cookie(response: httpx.Response, name: str) -> str | None:
    for value in response.headers.get_list("set-cookie"):
        key, _, rest = value.partition("=")
        if key == name:
            return rest.partition(";")[0]
    return None


def _hop_is_safe(location: str, base: str, allowed: tuple[str, ...]) -> bool:
    return any(same_origin(location, base, origin) for origin in allowed)


@pytest.fixture(scope="module")
def authn_session(env: Env) -> str:
    """The authenticate host's session cookie of a browser that signed in once."""
    with map_hosts({"*.test": "127.0.0.1"}), env.browser() as browser:
        env.login(browser, env.url("jenkins.test", "/"))
        for cookie in browser.cookies.jar:
            if cookie.name == SESSION_COOKIE and cookie.domain.lstrip(".") == "authenticate.test":
                return cookie.value
    raise AssertionError("no session cookie on the authenticate host after login")


@pytest.fixture
def walker(env: Env) -> Iterator[httpx.Client]:
    with attack_client(
        env.pki.client_ssl_context(),
        follow_redirects=False,
        timeout=15,
        headers={"accept": "text/html"},
    ) as client:
        yield client


def _login_walk(
    env: Env, client: httpx.Client, authn: str, target: bytes, payload: str
) -> tuple[bool, str]:
    """Start at `target` on the route host without a session; walk to the end of the login.

    Returns (refused, where it ended). Refused means: every hop stayed on the route or the
    authenticate host, nothing answered 5xx, and if the walk ended with a redirect its target
    is a URL of the route.
    """
    route, authn_origin = env.url("jenkins.test", ""), env.url("authenticate.test", "")
    route, authn_origin = route.rstrip("/"), authn_origin.rstrip("/")
    client.cookies.clear()
    first = client.get(f"{route}/", extensions={"target": target})
    if first.status_code != 302:
        return first.status_code < 500, f"{first.status_code} at the route"
    sign_in = first.headers["location"]
    if not _hop_is_safe(sign_in, f"{route}/", (authn_origin,)):
        return False, f"sign-in hop to {sign_in!r}"
    nonce = _cookie(first, LOGIN_COOKIE)
    extra = "&" + urlencode({name: payload for name in EXTRA_PARAMS})
    client.cookies.clear()
    handoff = client.get(sign_in + extra, headers={"cookie": f"{SESSION_COOKIE}={authn}"})
    if handoff.status_code != 302:
        return handoff.status_code < 500, f"{handoff.status_code} at sign-in"
    callback = handoff.headers["location"]
    if not _hop_is_safe(callback, sign_in, (route,)):
        return False, f"hand-off hop to {callback!r}"
    client.cookies.clear()
    landed = client.get(callback + extra, headers={"cookie": f"{LOGIN_COOKIE}={nonce}"})
    if landed.status_code != 302:
        return landed.status_code < 500, f"{landed.status_code} at the callback"
    final = landed.headers["location"]
    return _hop_is_safe(final, callback, (route,)), final


def test_post_login_target_never_leaves_the_route(
    env: Env, authn_session: str, walker: httpx.Client
) -> None:
    accepted: list[tuple[str, str, str]] = []
    landed_home = 0
    started = time.monotonic()
    for payload in payloads_for(f"jenkins.test:{env.port}"):
        path_target = as_request_target(payload if payload.startswith("/") else "/" + payload)
        channels = {"as path": path_target}
        if payload:
            channels["as request-target"] = as_request_target(payload)
        for channel, target in channels.items():
            refused, where = _login_walk(env, walker, authn_session, target, payload)
            landed_home += where.startswith(env.url("jenkins.test", "/"))
            if not hostile(f"open redirect: post-login target {channel}", refused):
                accepted.append((channel, payload, where))
    assert not accepted, accepted[:20]
    # Most walks got all the way through the login (Envoy itself refuses a few targets).
    assert landed_home > len(PAYLOADS)
    assert env_still_healthy(env)
    print(f"post-login walks: {time.monotonic() - started:.1f}s")


def test_post_login_lands_on_the_first_url_asked(
    env: Env, authn_session: str, walker: httpx.Client
) -> None:
    """The walk above is meaningful: a normal target comes back exactly, and works."""
    refused, where = _login_walk(
        env, walker, authn_session, b"/job/x/?a=1&b=%2F", "https://evil.test/"
    )
    assert refused
    assert where == env.url("jenkins.test", "/job/x/?a=1&b=%2F")


def _sign_out_form(client: httpx.Client, route: str, query: str) -> tuple[int, str | None]:
    client.cookies.clear()
    page = client.get(f"{route}/.pomerium/sign_out?{query}")
    if page.status_code != 200:
        return page.status_code, None
    match = re.search(r'<form method="post" action="([^"]+)"', page.text)
    return 200, html.unescape(match.group(1)) if match else None


def _sign_out_walk(
    env: Env, client: httpx.Client, action: str, end_session: str
) -> tuple[bool, str]:
    """POST the sign-out form's action and follow to the end; (refused, where it ended)."""
    route = env.url("jenkins.test", "").rstrip("/")
    authn = env.url("authenticate.test", "").rstrip("/")
    client.cookies.clear()
    posted = client.post(f"{route}{action}", headers={"origin": route})
    if posted.status_code != 302:
        return posted.status_code < 500, f"{posted.status_code} at the sign-out POST"
    to_authn = posted.headers["location"]
    if not _hop_is_safe(to_authn, f"{route}/", (authn,)):
        return False, f"sign-out hop to {to_authn!r}"
    client.cookies.clear()
    at_authn = client.get(to_authn)
    if at_authn.status_code != 302:
        return at_authn.status_code < 500, f"{at_authn.status_code} at the authenticate host"
    to_idp = at_authn.headers["location"]
    if not to_idp.startswith(end_session + "?"):
        return False, f"authenticate host sent the browser to {to_idp!r}"
    if query_param(to_idp, "post_logout_redirect_uri") != f"{authn}/.pomerium/signed_out":
        return False, f"IdP asked to return to {query_param(to_idp, 'post_logout_redirect_uri')}"
    state = query_param(to_idp, "state") or ""
    # What the IdP does after its logout: back to post_logout_redirect_uri with the state.
    client.cookies.clear()
    back = client.get(f"{authn}/.pomerium/signed_out?{urlencode({'state': state})}")
    if back.status_code == 200:
        return "You are signed out" in back.text, "signed-out page"
    if back.status_code != 302:
        return back.status_code < 500, f"{back.status_code} at signed_out"
    final = back.headers["location"]
    return _hop_is_safe(final, f"{authn}/", (route,)), final


def test_post_sign_out_target_never_leaves_the_route(env: Env, walker: httpx.Client) -> None:
    route = env.url("jenkins.test", "").rstrip("/")
    end_session = httpx.get(env.idp.discovery_url).json()["end_session_endpoint"]
    accepted: list[tuple[str, str, str]] = []
    started = time.monotonic()
    for payload in payloads_for(f"jenkins.test:{env.port}"):
        # 1. the payload as the query parser sees it after one decoding (as typed in a link)
        raw_query = "pomerium_redirect_uri=" + re.sub(
            r"[#&+]", lambda m: quote(m.group(0), safe=""), payload
        )
        raw_query = as_request_target(raw_query).decode()
        status, action = _sign_out_form(walker, route, raw_query)
        if action is None:
            refused, where = status < 500, f"{status} for the form"
        else:
            embedded = query_param(action, "pomerium_redirect_uri") or ""
            refused = embedded.startswith(route + "/") and bool(
                where_a_browser_goes(embedded, f"{route}/")
            )
            where = embedded
            if refused:
                refused, where = _sign_out_walk(env, walker, action, end_session)
        if not hostile("open redirect: post-sign-out target (link)", refused):
            accepted.append(("link", payload, where))
        # 2. the payload verbatim in the POST the form makes (a forged form on the site)
        if action is not None:
            csrf = query_param(action, "csrf") or ""
            forged = "/.pomerium/sign_out?" + urlencode(
                {"csrf": csrf, "pomerium_redirect_uri": payload}
            )
            refused, where = _sign_out_walk(env, walker, forged, end_session)
            if not hostile("open redirect: post-sign-out target (form post)", refused):
                accepted.append(("post", payload, where))
    assert not accepted, accepted[:20]
    assert env_still_healthy(env)
    print(f"post-sign-out walks: {time.monotonic() - started:.1f}s")


def test_sign_out_through_the_real_idp_returns_to_the_route(env: Env) -> None:
    """The full chain for a few payloads: signed in, form, IdP logout page, back on the route."""
    route = env.url("jenkins.test", "").rstrip("/")
    samples = ["/job/after-sign-out", "//evil.test/", "https://evil.test/", "javascript:alert(1)"]
    for payload in samples:
        with env.browser() as browser:
            env.login(browser, env.url("jenkins.test", "/"))
            page = browser.get(
                f"{route}/.pomerium/sign_out?{urlencode({'pomerium_redirect_uri': payload})}"
            )
            action = html.unescape(re.search(r'action="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
            done = browser.post(f"{route}{action}", headers={"origin": route})
            if is_idp_logout_page(done):
                done = submit_idp_logout(browser, done)
            hops = [*done.history, done]
            back = next(
                (i for i, r in enumerate(hops) if r.url.path == "/.pomerium/signed_out"), None
            )
            assert back is not None, [str(r.url) for r in hops]
            allowed = (route, env.url("authenticate.test", "").rstrip("/"), env.idp.issuer)
            final = hops[back].headers.get("location", "")
            refused = all(
                any(str(r.url).startswith(origin) for origin in allowed) for r in hops[: back + 1]
            ) and same_origin(final, str(hops[back].url), route)
            assert hostile("open redirect: post-sign-out through the IdP", refused), final
            want = route + payload if payload.startswith("/j") else route + "/"
            assert final == want
            # ... where the signed-out browser is asked to sign in again.
            assert hops[back + 1].url == want
            assert hops[back + 1].status_code == 302
            assert "/.pomerium/sign_in?" in hops[back + 1].headers["location"]


def env_still_healthy(env: Env) -> bool:
    with env.browser() as client:
        answer = client.get(env.url("status.test", "/__health__"))
    return answer.status_code == 200 and answer.json()["path"] == "/__health__"


@pytest.mark.parametrize(
    "location",
    [
        "https://evil.test/",
        "//evil.test/",
        "/\\evil.test/",
        "https://jenkins.test:8443@evil.test/",
        "https://jenkins.test:8443.evil.test/",
        "https://jenkins.test:8444/",
        "http://jenkins.test:8443/",
        "javascript:alert(1)//https://jenkins.test:8443/",
        "data:text/html,https://jenkins.test:8443/",
        " https://evil.test/",
        "https:evil.test",
        "\thttps://jenkins.test:8443\\@evil.test/",
    ],
)
def test_the_oracle_sees_an_open_redirect(location: str) -> None:
    """The check the walks rely on says no to what a browser would take elsewhere."""
    assert not same_origin(location, "https://jenkins.test:8443/x", "https://jenkins.test:8443")


def test_the_oracle_accepts_the_route() -> None:
    assert same_origin(
        "https://jenkins.test:8443/job/x?a=%2F",
        "https://jenkins.test:8443/",
        "https://jenkins.test:8443",
    )
