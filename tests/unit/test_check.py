"""`authgate check`: every finding with its severity, key path and fix; exit 0/1/2."""

import base64
import contextlib
import io
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.check import (
    Finding,
    check_config,
    exit_code,
    public_idp,
    resolve_names,
    secret_weakness,
    upstream_findings,
)
from authgate.cli import main
from authgate.config import Settings, build_runtime, settings_from_mapping
from authgate.config.runtime import generate_signing_key_b64

SIGNING_KEY = generate_signing_key_b64()
COOKIE = base64.b64encode(os.urandom(32)).decode()


def base(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "address": "127.0.0.1:8443",
        "insecure_server": True,
        "authenticate_service_url": "http://authenticate.test:8443",
        "idp_provider_url": "https://idp.example.com",
        "idp_client_id": "authgate",
        "idp_client_secret": "a-client-secret-from-the-idp",
        "cookie_secret": COOKIE,
        "signing_key": SIGNING_KEY,
        "routes": [],
    }
    raw.update(overrides)
    return raw


def app(policy: Any = None, **options: Any) -> dict[str, Any]:
    route = {"from": "http://app.test:8443", "to": "http://127.0.0.1:8080", **options}
    if policy is not None:
        route["policy"] = policy
    return route


GOOD = {"allow": {"and": [{"domain": {"is": "example.com"}}]}}
GROUP_SCOPES = ["openid", "profile", "email", "groups"]


@pytest.fixture(autouse=True)
def _no_config_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def findings_of(raw: dict[str, Any]) -> list[Finding]:
    return check_config(build_runtime(settings_from_mapping(raw, environ={}), warn=False))


def main_lines_of(raw: dict[str, Any]) -> list[str]:
    """The lines `authgate check` prints for `raw`, through the CLI."""
    with tempfile.TemporaryDirectory() as tmp:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(["check", "-c", write(Path(tmp), raw)])
    return out.getvalue().splitlines()


def summary(raw: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f.severity, f.key) for f in findings_of(raw) if f.severity != "info"]


def test_clean_config_has_no_findings() -> None:
    assert findings_of(base(routes=[app(GOOD)])) == []


# ---- who can get in ------------------------------------------------------------------------

POLICY_CASES = [
    # (name, route, idp, expected (severity, key) findings, a word the message must have)
    ("domain only", app(GOOD), None, [], ""),
    (
        "public Jenkins",
        {**app(), "from": "http://jenkins.test:8443", "pass_identity_headers": True,
         "allow_public_unauthenticated_access": True},
        None,
        [("error", "routes[0].allow_public_unauthenticated_access")],
        "anyone can do anything",
    ),
    (
        "public status page",
        app(allow_public_unauthenticated_access=True),
        None,
        [("warning", "routes[0].allow_public_unauthenticated_access")],
        "anyone can do anything",
    ),
    (
        "accept in a policy",
        app({"allow": {"or": [{"accept": True}]}}),
        None,
        [("warning", "routes[0].policy.allow")],
        "anyone can do anything",
    ),
    (
        "not over identity criteria lets signed-out visitors in",
        app({"allow": {"not": [{"email": {"is": "mallory@example.com"}}]}}),
        None,
        [("error", "routes[0].policy.allow")],
        "`not`/`nor` over identity criteria",
    ),
    (
        "nor over identity criteria",
        app({"allow": {"nor": [{"domain": "example.com"}, {"groups": {"has": "staff"}}]}}),
        None,
        [("error", "routes[0].policy.allow")],
        "signed-out visitors get in",
    ),
    (
        "not with authenticated_user is fine",
        app({"allow": {"and": [{"authenticated_user": True},
                               {"not": [{"email": {"is": "mallory@example.com"}}]}]}}),
        None,
        [],
        "",
    ),
    (
        "request-only rule",
        app({"allow": {"or": [{"http_method": "GET"}, GOOD["allow"]]}}),
        None,
        [("error", "routes[0].policy.allow")],
        "when http_method is GET",
    ),
    (
        "request-only rule on Jenkins",
        {**app({"allow": {"or": [{"http_path": {"starts_with": "/github-webhook/"}}]}}),
         "from": "http://jenkins.test:8443", "pass_identity_headers": True},
        None,
        [("error", "routes[0].policy.allow")],
        "when http_path starts_with /github-webhook/",
    ),
    (
        "a deny that only covers some requests leaves a way in",
        app([{"allow": {"or": [{"accept": True}]}},
             {"deny": {"or": [{"http_method": {"not": "GET"}}]}}]),
        None,
        [("warning", "routes[0].policy[0].allow")],
        "when not http_method not GET",
    ),
    (
        "deny of signed-out visitors closes accept",
        app([{"allow": {"or": [{"accept": True}]}},
             {"deny": {"or": [{"not": [{"authenticated_user": True}]}]}}]),
        None,
        [],
        "",
    ),
    (
        "source_ip only: a warning",
        app({"allow": {"or": [{"source_ip": ["10.0.0.0/8", "192.168.0.0/16"]}]}}),
        None,
        [("warning", "routes[0].policy.allow")],
        "source_ip in 10.0.0.0/8, 192.168.0.0/16",
    ),
    (
        "source_ip 0.0.0.0/0 is everyone",
        app({"allow": {"or": [{"source_ip": "0.0.0.0/0"}]}}),
        None,
        [("error", "routes[0].policy.allow")],
        "for every request",
    ),
    (
        "cors_preflight only: info",
        app({"allow": {"or": [{"cors_preflight": True}, GOOD["allow"]]}}),
        None,
        [],
        "",
    ),
    (
        "pomerium_routes never reaches the policy",
        app({"allow": {"or": [{"pomerium_routes": True}, GOOD["allow"]]}}),
        None,
        [],
        "",
    ),
    (
        "time alone opens the app at times",
        app({"allow": {"and": [{"time_of_day": {"timezone": "UTC", "after": "9:00"}}]}}),
        None,
        [("error", "routes[0].policy.allow")],
        "when time_of_day after 09:00 UTC",
    ),
    # identity providers where anyone can sign up
    (
        "any authenticated user at Google",
        app(allow_any_authenticated_user=True),
        "https://accounts.google.com",
        [("error", "routes[0].allow_any_authenticated_user")],
        "logged-in users can do anything",
    ),
    (
        "any authenticated user at a private IdP",
        app(allow_any_authenticated_user=True),
        None,
        [],
        "",
    ),
    (
        "authenticated_user in a policy at GitHub",
        app({"allow": {"and": [{"authenticated_user": True}, {"http_method": "GET"}]}}),
        "https://github.com",
        [("error", "routes[0].policy.allow")],
        "anyone who makes an account at GitHub",
    ),
    (
        "a domain anyone can have",
        app({"allow": {"or": [{"domain": "gmail.com"}]}}),
        "https://accounts.google.com",
        [("error", "routes[0].policy.allow")],
        "stranger@gmail.com",
    ),
    (
        "groups exclusion only, at Microsoft common",
        app({"allow": {"and": [{"authenticated_user": True},
                               {"groups": {"exclude": "contractors"}}]}}),
        "https://login.microsoftonline.com/common/v2.0",
        [("error", "routes[0].policy.allow")],
        "Microsoft",
    ),
    ("own domain at Google", app(GOOD), "https://accounts.google.com", [], ""),
    ("groups at GitLab", app({"allow": {"or": [{"groups": {"has": "staff"}}]}}),
     "https://gitlab.com", [], ""),
    ("single-tenant Microsoft", app(allow_any_authenticated_user=True),
     "https://login.microsoftonline.com/0a1b2c3d-0000-4000-8000-000000000000/v2.0", [], ""),
    # dead policies
    ("no policy at all", app(), None, [("warning", "routes[0]")], "nobody can get in"),
    (
        "reject",
        app({"allow": {"and": [GOOD["allow"]["and"][0], {"reject": True}]}}),
        None,
        [("warning", "routes[0].policy")],
        "nobody can get in",
    ),
    (
        "X and not X",
        app({"allow": {"and": [{"domain": "example.com"}, {"not": [{"domain": "example.com"}]}]}}),
        None,
        [("warning", "routes[0].policy")],
        "no request can ever match an allow rule",
    ),
    (
        "deny shadows every allow",
        app([GOOD, {"deny": {"or": [{"authenticated_user": True}]}}]),
        None,
        [("warning", "routes[0].policy[1].deny")],
        "this deny matches whenever an allow does",
    ),
    (
        "deny of one group does not shadow",
        app([GOOD, {"deny": {"or": [{"groups": {"has": "banned"}}]}}]),
        None,
        [],
        "",
    ),
    (
        "lower-case method",
        app({"allow": {"and": [GOOD["allow"]["and"][0], {"http_method": {"in": ["get"]}}]}}),
        None,
        [("warning", "routes[0].policy.allow.and[1].http_method")],
        "'get' never matches",
    ),
]


@pytest.mark.parametrize(
    ("route", "idp", "expected", "word"),
    [pytest.param(r, i, e, w, id=n) for n, r, i, e, w in POLICY_CASES],
)
def test_policy_findings(
    route: dict[str, Any], idp: str | None, expected: list[tuple[str, str]], word: str
) -> None:
    raw = base(routes=[route])
    if idp is not None:
        raw["idp_provider_url"] = idp
    found = [f for f in findings_of(raw) if f.key.startswith("routes[0]") and f.severity != "info"]
    found = [f for f in found if not f.key.endswith("pass_identity_headers")]
    assert [(f.severity, f.key) for f in found] == expected
    if word:
        assert any(word in f.message for f in found), [f.message for f in found]
    assert all(f.fix for f in found)


def test_signed_out_finding_names_the_rule_and_fix() -> None:
    (finding,) = findings_of(
        base(routes=[app({"allow": {"not": [{"email": {"is": "mallory@example.com"}}]}})])
    )
    assert finding.message == (
        "signed-out visitors get in for every request (`not`/`nor` over identity criteria is "
        "true without a session, as in Pomerium)"
    )
    assert finding.fix == (
        "add `- authenticated_user: true` to the same `and`, or move the negated criteria into "
        "a `deny` rule"
    )


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://accounts.google.com", True),
        ("https://github.com", True),
        ("https://gitlab.com", True),
        ("https://login.microsoftonline.com/common/v2.0", True),
        ("https://login.microsoftonline.com/consumers/v2.0", True),
        ("https://login.microsoftonline.com/organizations/v2.0", True),
        ("https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0", False),
        ("https://login.windows.net/common", True),
        ("https://login.microsoft.com/organizations/v2.0", True),
        ("https://login.windows.net/contoso.onmicrosoft.com", False),
        ("https://example.auth0.com", True),
        ("https://example.eu.auth0.com/", True),
        ("https://EXAMPLE.us.Auth0.com", True),
        ("https://auth0.com.example.net", False),
        ("https://notauth0.com", False),
        ("https://login.example.com", False),
        ("https://gitlab.example.com", False),
        ("https://keycloak.example.com/realms/corp", False),
        ("https://example.okta.com", False),
    ],
)
def test_public_idp(url: str, public: bool) -> None:
    assert (public_idp(url) is not None) is public


@pytest.mark.parametrize(
    ("idp", "why"),
    [
        ("https://example.auth0.com", "Auth0 tenants let anyone sign up"),
        ("https://example.eu.auth0.com", "Auth0 tenants let anyone sign up"),
        ("https://login.microsoftonline.com/common/v2.0", "multi-tenant endpoints"),
        ("https://login.microsoftonline.com/organizations/v2.0", "any organisation's tenant"),
        ("https://login.microsoftonline.com/consumers/v2.0", "personal Microsoft account"),
        ("https://github.com", "anyone can make a GitHub account"),
        ("https://gitlab.com", "anyone can make a GitLab.com account"),
    ],
)
def test_any_authenticated_user_at_an_idp_anyone_can_join(idp: str, why: str) -> None:
    bad = findings_of(base(routes=[app(allow_any_authenticated_user=True)], idp_provider_url=idp))
    (error,) = [f for f in bad if f.severity == "error"]
    assert error.key == "routes[0].allow_any_authenticated_user"
    assert "logged-in users can do anything" in error.message
    assert why in error.message, error.message
    assert "allowed_domains" in error.fix and "email" in error.fix and "groups" in error.fix
    # the fix: a rule only your people meet
    fixed = findings_of(base(routes=[app(GOOD)], idp_provider_url=idp))
    assert [f for f in fixed if f.severity == "error"] == []


def test_authenticated_user_policy_at_auth0_says_why() -> None:
    policy = {"allow": {"and": [{"authenticated_user": True}]}}
    bad = findings_of(base(routes=[app(policy)], idp_provider_url="https://corp.auth0.com"))
    (error,) = [f for f in bad if f.severity == "error"]
    assert error.key == "routes[0].policy.allow"
    assert "anyone who makes an account at Auth0" in error.message
    assert "unless sign-ups are disabled" in error.message


def test_single_tenant_microsoft_and_custom_auth0_domain_are_not_public() -> None:
    for idp in ("https://login.microsoftonline.com/0a1b2c3d-0000-4000-8000-000000000000/v2.0",
                "https://login.example.com"):
        found = findings_of(base(routes=[app(allow_any_authenticated_user=True)],
                                 idp_provider_url=idp))
        assert found == [], found


# ---- groups criteria without a groups claim ------------------------------------------------

GROUPS_ALLOW = {"allow": {"or": [{"groups": {"has": "jenkins-admins"}}]}}


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(app(GROUPS_ALLOW), id="policy"),
        pytest.param(app(allowed_groups=["jenkins-admins"]), id="allowed_groups"),
        pytest.param(app({"allow": {"or": [{"claim/groups": "jenkins-admins"}]}}), id="claim"),
    ],
)
def test_groups_without_a_groups_scope(route: dict[str, Any]) -> None:
    bad = findings_of(base(routes=[route]))
    (warning,) = [f for f in bad if f.key == "idp_scopes"]
    assert warning.severity == "warning"
    assert "openid profile email offline_access" in warning.message
    assert "routes[0]." in warning.message
    assert "`groups` claim is then most likely empty" in warning.message
    assert "allow rules on groups never match" in warning.message
    assert "add `groups` to idp_scopes" in warning.fix
    assert "http://app.test:8443/.pomerium/" in warning.fix
    fixed = findings_of(base(routes=[route], idp_scopes=GROUP_SCOPES))
    assert fixed == [], fixed


def test_groups_only_in_a_deny_rule_refuse_nobody() -> None:
    policy = [GOOD, {"deny": {"or": [{"groups": {"has": "contractors"}}]}}]
    (warning,) = [f for f in findings_of(base(routes=[app(policy)])) if f.key == "idp_scopes"]
    assert "routes[0].policy[1].deny" in warning.message
    assert "deny rules on groups never refuse anyone" in warning.message
    assert "allow rules" not in warning.message
    assert findings_of(base(routes=[app(policy)], idp_scopes="openid,email,groups")) == []


def test_groups_rules_are_one_finding_for_the_config() -> None:
    routes = [app(GROUPS_ALLOW, prefix=f"/p{i}") for i in range(5)]
    bad = [f for f in findings_of(base(routes=routes)) if f.key == "idp_scopes"]
    assert len(bad) == 1
    assert "and 2 more" in bad[0].message


def test_no_groups_rules_no_groups_finding() -> None:
    assert findings_of(base(routes=[app(GOOD)], idp_scopes="openid,email")) == []


def test_groups_at_google_never_come() -> None:
    raw = base(routes=[app(GROUPS_ALLOW)], idp_provider_url="https://accounts.google.com")
    (warning,) = [f for f in findings_of(raw) if "groups" in f.message]
    assert warning.severity == "warning"
    assert warning.key == "routes[0].policy.allow"
    assert "Google's ID tokens carry no `groups` claim" in warning.message
    assert "`domain` or `email`" in warning.fix
    fixed = base(routes=[app(GOOD)], idp_provider_url="https://accounts.google.com")
    assert findings_of(fixed) == []


def test_groups_at_microsoft_entra_is_an_info_about_the_app_registration() -> None:
    tenant = "https://login.microsoftonline.com/0a1b2c3d-0000-4000-8000-000000000000/v2.0"
    (info,) = findings_of(base(routes=[app(GROUPS_ALLOW)], idp_provider_url=tenant))
    assert (info.severity, info.key) == ("info", "idp_scopes")
    assert "app registration" in info.message and "Add groups claim" in info.fix


# ---- upstreams that do not resolve ---------------------------------------------------------
# Names under .invalid never resolve (RFC 6761); 127.0.0.1 and localhost always do.


def test_upstream_host_that_does_not_resolve() -> None:
    route = {**app(GOOD), "to": "http://ci.invalid:8080"}
    bad = findings_of(base(routes=[route]))
    (warning,) = [f for f in bad if f.key == "routes[0].to"]
    assert warning.severity == "warning"
    assert "'ci.invalid'" in warning.message
    assert "routes[0] (http://app.test:8443)" in warning.message
    assert "after sign-in users would see Envoy's 'no healthy upstream'" in warning.message
    assert "`to`" in warning.fix
    assert exit_code(bad) == 1
    for to in ("http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080"):
        assert findings_of(base(routes=[{**app(GOOD), "to": to}])) == [], to


def test_one_warning_per_host_naming_every_route() -> None:
    routes = [
        {**app(GOOD), "to": "http://ci.invalid:8080"},
        {**app(GOOD), "from": "http://ci.test:8443", "to": "http://ci.invalid:8080"},
    ]
    (warning,) = [f for f in findings_of(base(routes=routes)) if f.key.endswith(".to")]
    assert warning.key == "routes[0].to"
    assert "routes[0] (http://app.test:8443), routes[1] (http://ci.test:8443)" in warning.message


def test_unresolved_upstream_next_to_a_working_one() -> None:
    route = {**app(GOOD), "to": ["http://a.invalid:8080", "http://localhost:8080"]}
    (warning,) = [f for f in findings_of(base(routes=[route])) if f.key == "routes[0].to"]
    assert "'a.invalid'" in warning.message
    assert "only to the route's other upstreams" in warning.message


def test_upstream_check_can_be_left_out() -> None:
    route = {**app(GOOD), "to": "http://ci.invalid:8080"}
    cfg = build_runtime(settings_from_mapping(base(routes=[route]), environ={}), warn=False)
    assert check_config(cfg, upstreams=False) == []


def test_a_hanging_resolver_is_bounded() -> None:
    def hang(name: str, port: int) -> object:
        time.sleep(5)
        return []

    started = time.monotonic()
    assert resolve_names({"slow.invalid": 80, "slower.invalid": 80}, timeout=0.2,
                         resolver=hang) == {"slow.invalid": "timeout", "slower.invalid": "timeout"}
    assert time.monotonic() - started < 1.5
    route = {**app(GOOD), "to": "http://slow.invalid:8080"}
    settings = settings_from_mapping(base(routes=[route]), environ={})
    (warning,) = upstream_findings(settings, timeout=0.2, resolver=hang)
    assert "'slow.invalid'" in warning.message
    assert "got no DNS answer within 0.2 s" in warning.message


def test_resolver_budget_covers_all_names() -> None:
    def hang(name: str, port: int) -> object:
        time.sleep(5)
        return []

    names = {f"n{i}.invalid": 80 for i in range(40)}
    started = time.monotonic()
    answer = resolve_names(names, timeout=0.2, budget=0.3, resolver=hang)
    assert time.monotonic() - started < 1.5
    assert set(answer.values()) == {"timeout"}
    assert len(answer) < len(names)  # the rest are not looked up at all


def test_unix_socket_upstream_that_does_not_exist_yet() -> None:
    with tempfile.TemporaryDirectory(prefix="ag-") as tmp:  # short: socket paths are limited
        _unix_socket_cases(Path(tmp) / "app.sock")


def _unix_socket_cases(path: Path) -> None:
    route = {**app(GOOD), "to": f"unix://{path}"}
    bad = findings_of(base(routes=[route]))
    (info,) = bad
    assert (info.severity, info.key) == ("info", "routes[0].to")
    assert f"the Unix socket {path} of routes[0] (http://app.test:8443) does not exist (yet)" in (
        info.message
    )
    assert exit_code(bad) == 0  # the app may create it when it starts
    path.write_text("")
    (info,) = findings_of(base(routes=[route]))
    assert "is not a socket" in info.message
    path.unlink()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        assert findings_of(base(routes=[route])) == []


# ---- Jenkins and the JWT Auth plugin --------------------------------------------------------


def test_jenkins_route_without_identity_headers() -> None:
    route = {**app(GOOD), "from": "http://jenkins.test:8443"}
    found = findings_of(base(routes=[route]))
    assert [(f.severity, f.key) for f in found] == [
        ("warning", "routes[0].pass_identity_headers"),
        ("info", "routes[0]"),
    ]
    info = found[1]
    assert "iss=authenticate.test, aud=jenkins.test" in info.message
    assert "http://jenkins.test:8443/.well-known/pomerium/jwks.json" in info.fix


@pytest.mark.parametrize(
    ("route", "jenkins"),
    [
        ({**app(GOOD), "to": "unix:///run/jenkins/jenkins.socket", "pass_identity_headers": True},
         True),
        ({**app(GOOD), "id": "jenkins-ci", "pass_identity_headers": True}, True),
        ({**app(GOOD), "name": "Jenkins", "pass_identity_headers": True}, True),
        ({**app(GOOD), "pass_identity_headers": True}, False),
        ({**app(GOOD), "from": "http://verify.test:8443", "pass_identity_headers": True}, False),
    ],
)
def test_jenkins_heuristic(route: dict[str, Any], jenkins: bool) -> None:
    """Every route that passes identity headers gets the issuer/audience/JWKS info; only a
    route recognisably Jenkins (from, to, id or name) is called the JWT Auth plugin's."""
    infos = [f for f in findings_of(base(routes=[route])) if f.severity == "info"]
    (info,) = [f for f in infos if f.key == "routes[0]"]
    assert ("Jenkins JWT Auth plugin" in info.message) is jenkins, info.message
    if not jenkins:
        assert "Jenkins" not in info.message + info.fix
        assert info.message.startswith("the app reading the assertion (X-Pomerium-Jwt-Assertion)")
        assert "iss=authenticate.test" in info.message
        assert "/.well-known/pomerium/jwks.json" in info.fix


def test_identity_headers_alone_do_not_make_jenkins_wording() -> None:
    """A route that reads the assertion but is not Jenkins: no Jenkins in any finding, though an
    open route stays an error and a missing signing key still mentions the JWKS cache."""
    route = {**app(allow_public_unauthenticated_access=True), "from": "http://verify.test:8443",
             "pass_identity_headers": True}
    raw = base(routes=[route])
    del raw["signing_key"]
    found = findings_of(raw)
    assert not [f for f in found if "Jenkins" in f.message + f.fix], found
    public = next(f for f in found if f.key == "routes[0].allow_public_unauthenticated_access")
    assert public.severity == "error"
    assert "this app is public" in public.message
    signing = next(f for f in found if f.key == "signing_key")
    assert "an app that reads the assertion and caches the JWKS" in signing.message


def test_issuer_format_uri_warns_for_jenkins() -> None:
    route = {**app(GOOD), "from": "http://jenkins.test:8443", "pass_identity_headers": True}
    found = findings_of(base(routes=[route], jwt_issuer_format="uri"))
    (warning,) = [f for f in found if f.severity == "warning"]
    assert warning.key == "jwt_issuer_format"
    assert "http://authenticate.test:8443/" in warning.fix


def test_issuer_format_uri_is_reported_once() -> None:
    """Pomerium's Jenkins guide has a second route passing identity headers (verify): the
    issuer finding is about the whole config, so it comes once, not once per route."""
    routes = [
        {**app(GOOD), "from": "http://jenkins.test:8443", "pass_identity_headers": True},
        {**app(GOOD), "from": "http://verify.test:8443", "pass_identity_headers": True},
        {**app(GOOD), "from": "http://other.test:8443", "pass_identity_headers": True},
    ]
    bad = findings_of(base(routes=routes, jwt_issuer_format="uri"))
    assert [f.severity for f in bad if f.key == "jwt_issuer_format"] == ["warning"]
    assert exit_code(bad) == 1
    fixed = findings_of(base(routes=routes, jwt_issuer_format="host"))
    assert [f for f in fixed if f.key == "jwt_issuer_format"] == []
    assert exit_code(fixed) == 0
    assert main_lines_of(base(routes=routes, jwt_issuer_format="uri")).count(
        next(f.line() for f in bad if f.key == "jwt_issuer_format")
    ) == 1


def test_issuer_format_uri_without_jenkins_is_an_info() -> None:
    route = {**app(GOOD), "from": "http://verify.test:8443", "pass_identity_headers": True}
    found = findings_of(base(routes=[route], jwt_issuer_format="uri"))
    (finding,) = [f for f in found if f.key == "jwt_issuer_format"]
    assert finding.severity == "info"
    assert "Jenkins" not in finding.message + finding.fix
    assert "http://authenticate.test:8443/" in finding.fix
    # no route reads the assertion: nothing to say about its issuer
    assert [f for f in findings_of(base(routes=[app(GOOD)], jwt_issuer_format="uri"))] == []


def test_missing_signing_key_mentions_the_jwks_cache_for_jenkins() -> None:
    raw = base(routes=[{**app(GOOD), "from": "http://jenkins.test:8443",
                        "pass_identity_headers": True}])
    del raw["signing_key"]
    (warning,) = [f for f in findings_of(raw) if f.severity == "warning"]
    assert warning.key == "signing_key"
    assert "JWKS" in warning.message


def test_show_error_details_is_an_info() -> None:
    found = findings_of(base(routes=[app(GOOD, show_error_details=True)]))
    assert [(f.severity, f.key) for f in found] == [("info", "routes[0].show_error_details")]
    assert exit_code(found) == 0


# ---- routes Envoy never reaches ------------------------------------------------------------


def test_route_hidden_behind_an_earlier_prefix() -> None:
    routes = [app(GOOD), app({"allow": {"or": [{"groups": {"has": "admins"}}]}}, prefix="/admin")]
    assert summary(base(routes=routes, idp_scopes=GROUP_SCOPES)) == [("warning", "routes[1]")]
    (finding,) = findings_of(base(routes=routes, idp_scopes=GROUP_SCOPES))
    assert "routes[0] (prefix /) comes first" in finding.message
    assert finding.fix == "move routes[1] above routes[0] (the first matching route wins)"


def test_specific_route_first_is_fine() -> None:
    routes = [app({"allow": {"or": [{"groups": {"has": "admins"}}]}}, prefix="/admin"), app(GOOD)]
    assert summary(base(routes=routes, idp_scopes=GROUP_SCOPES)) == []


# ---- secrets and the server ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "severity", "why"),
    [
        (bytes(32), "error", "32 copies of the byte 0x00"),
        (b"\xab" * 32, "error", "32 copies of the byte 0xab"),
        (b"0123456789abcdef" * 2, "error", "repeats a 16-byte pattern"),
        (b"\x01\x02\x03" * 10 + b"\x01\x02", "error", "repeats a 3-byte pattern"),
        (b"\x00\x01\x02\x03\xf4" * 6 + b"\x00\x01", "error", "repeats a 5-byte pattern"),
        (bytes([1, 2, 3, 4, 5, 6, 7]) * 4 + bytes([9, 9, 9, 8]), "error", "distinct byte values"),
        (b"correct horse battery staple!!!!", "warning", "printable text"),
        (b"", "error", "is empty"),
    ],
)
def test_secret_weakness(raw: bytes, severity: str, why: str) -> None:
    result = secret_weakness(raw)
    assert result is not None
    assert result[0] == severity
    assert why in result[1]


def test_random_secrets_are_not_weak() -> None:
    for _ in range(200):
        assert secret_weakness(os.urandom(32)) is None


def test_weak_cookie_secret_is_an_error() -> None:
    zeros = base64.b64encode(bytes(32)).decode()
    found = findings_of(base(routes=[app(GOOD)], cookie_secret=zeros))
    assert [(f.severity, f.key) for f in found] == [("error", "cookie_secret")]
    assert "forge a session" in found[0].message


def test_reused_secret_is_an_error() -> None:
    found = findings_of(base(routes=[app(GOOD)], idp_client_secret=COOKIE))
    assert [(f.severity, f.key) for f in found] == [("error", "idp_client_secret")]
    assert "same secret as cookie_secret" in found[0].message


def test_missing_secrets_are_warnings() -> None:
    raw = base(routes=[app(GOOD)])
    del raw["cookie_secret"], raw["signing_key"]
    assert summary(raw) == [("warning", "cookie_secret"), ("warning", "signing_key")]


@pytest.mark.parametrize(
    ("address", "flagged"),
    [("127.0.0.1:8080", False), ("localhost:80", False), ("[::1]:80", False),
     ("0.0.0.0:8080", True), (":80", True), ("10.0.0.5:80", True)],
)
def test_insecure_server_off_loopback(address: str, flagged: bool) -> None:
    found = summary(base(routes=[app(GOOD)], address=address))
    assert found == ([("warning", "insecure_server")] if flagged else [])


# ---- exit codes and output -----------------------------------------------------------------


def test_exit_codes() -> None:
    assert exit_code([]) == 0
    assert exit_code([Finding("info", "k", "m", "f")]) == 0
    assert exit_code([Finding("warning", "k", "m", "f"), Finding("info", "k", "m", "f")]) == 1
    assert exit_code([Finding("warning", "k", "m", "f"), Finding("error", "k", "m", "f")]) == 2


def write(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


Capture = pytest.CaptureFixture[str]


def test_cli_clean(tmp_path: Path, capsys: Capture) -> None:
    assert main(["check", "-c", write(tmp_path, base(routes=[app(GOOD)]))]) == 0
    assert capsys.readouterr().out == "authgate check: no findings\n"
    assert main(["check", "-c", write(tmp_path, base(routes=[app(GOOD)])), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_cli_warnings_only(tmp_path: Path, capsys: Capture) -> None:
    raw = base(routes=[app(GOOD)])
    del raw["signing_key"]
    assert main(["check", "-c", write(tmp_path, raw)]) == 1
    assert capsys.readouterr().out == (
        "warning: signing_key: not set: a new assertion signing key is made at every start "
        "(fix: generate one with `authgate keygen` and set signing_key)\n"
    )


def test_cli_errors_sorted_first_one_per_line(tmp_path: Path, capsys: Capture) -> None:
    raw = base(
        routes=[app(allow_any_authenticated_user=True)],
        idp_provider_url="https://accounts.google.com",
        address="0.0.0.0:8080",
    )
    assert main(["check", "-c", write(tmp_path, raw)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "error: routes[0].allow_any_authenticated_user: logged-in users can do anything, and "
        "anyone can make an account at Google (https://accounts.google.com): any Google account "
        "can sign in, a free gmail.com one included (fix: restrict the "
        "rule to your people: allowed_domains / `domain: {is: ...}` for a domain you own, "
        "`groups`, or `email: {in: [...]}`)",
        "warning: insecure_server: plain HTTP on 0.0.0.0:8080: session cookies and assertions "
        "cross the network unencrypted (fix: listen on 127.0.0.1 behind a TLS-terminating "
        "proxy, or set certificate_file and certificate_key_file)",
    ]


def test_cli_json(tmp_path: Path, capsys: Capture) -> None:
    raw = base(routes=[app({"allow": {"not": [{"domain": "evil.org"}]}})])
    assert main(["check", "-c", write(tmp_path, raw), "--format", "json"]) == 2
    (finding,) = json.loads(capsys.readouterr().out)
    assert set(finding) == {"severity", "key", "message", "fix"}
    assert finding["severity"] == "error"
    assert finding["key"] == "routes[0].policy.allow"


def test_cli_config_error_exits_2_with_one_line(tmp_path: Path, capsys: Capture) -> None:
    raw = base(routes=[app({"allow": {"and": [{"domian": "example.com"}]}})])
    assert main(["check", "-c", write(tmp_path, raw)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("authgate: config error: routes[0].policy")
    assert "unknown criterion `domian`" in err
    assert err.count("\n") == 1
