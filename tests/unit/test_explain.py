"""`authgate explain`: route selection as Envoy does it, and the decision with its reason."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.cli import main
from authgate.config import Settings, build_runtime, settings_from_mapping
from authgate.explain import explain_request, normalize_path, select_route
from authgate.session import Session

BASE: dict[str, Any] = {
    "address": "127.0.0.1:8443",
    "insecure_server": True,
    "authenticate_service_url": "http://authenticate.test:8443",
    "idp_provider_url": "https://idp.test",
    "idp_client_id": "authgate",
    "idp_client_secret": "client-secret",
    "routes": [
        {
            "from": "http://jenkins.test:8443",
            "to": "http://127.0.0.1:8080",
            "prefix": "/admin",
            "policy": {"allow": {"and": [{"groups": {"has": "admins"}}]}},
        },
        {
            "from": "http://jenkins.test:8443",
            "to": "http://127.0.0.1:8080",
            "path": "/health",
            "allow_public_unauthenticated_access": True,
        },
        {
            "from": "http://jenkins.test:8443",
            "to": "http://127.0.0.1:8080",
            "regex": "^/api/v[0-9]+/.*$",
            "allow_any_authenticated_user": True,
        },
        {
            "from": "http://jenkins.test:8443",
            "to": "http://127.0.0.1:8080",
            "id": "jenkins",
            "pass_identity_headers": True,
            "policy": [
                {"allow": {"and": [{"domain": {"is": "example.com"}}]}},
                {"deny": {"or": [{"http_method": "DELETE"}]}},
            ],
            "allowed_users": ["bob@corp.test"],
        },
        {
            "from": "http://office.test",
            "to": "http://127.0.0.1:8081",
            "policy": {
                "allow": {
                    "and": [
                        {"authenticated_user": True},
                        {
                            "time_of_day": {
                                "timezone": "Europe/Berlin",
                                "after": "09:00",
                                "before": "17:00",
                            }
                        },
                    ]
                }
            },
        },
    ],
}


@pytest.fixture(autouse=True)
def _no_config_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def cfg() -> Any:
    return build_runtime(settings_from_mapping(BASE, environ={}), warn=False)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return path


def claims_file(tmp_path: Path, **claims: Any) -> str:
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(claims))
    return str(path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("", "/"),
        ("/a//b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../../b", "/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/admin/../job/x?y=1", "/job/x"),
        ("//admin", "/admin"),
        ("/a%2F..", "/a%2F.."),  # escapes stay escaped (Envoy rejects %2F itself)
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/.%2E/admin", "/admin"),
        ("/a/%2e/b", "/a/b"),
        ("/a/%2ex/b", "/a/.x/b"),
    ],
)
def test_normalize_path(path: str, expected: str) -> None:
    assert normalize_path(path) == expected


ROUTE_CASES = [
    ("http://jenkins.test:8443/admin/users", "route", 0),
    ("http://JENKINS.test:8443/admin", "route", 0),
    ("http://jenkins.test:8443/administrator", "route", 0),  # a prefix is not a directory
    ("http://jenkins.test:8443//admin", "route", 0),  # Envoy merges slashes first
    ("http://jenkins.test:8443/job/../admin", "route", 0),  # ... and resolves dot segments
    ("http://jenkins.test:8443/health", "route", 1),
    ("http://jenkins.test:8443/health/x", "route", 3),  # `path` is exact
    ("http://jenkins.test:8443/api/v2/json", "route", 2),
    ("http://jenkins.test:8443/api/vX/json", "route", 3),  # regex must match the whole path
    ("http://jenkins.test:8443/job/x?admin", "route", 3),
    ("http://jenkins.test:8443/.pomerium/sign_out", "internal", 0),
    ("http://jenkins.test:8443/.well-known/pomerium/jwks.json", "internal", 0),
    # Without the trailing slash too: Envoy sends these to authz as internal endpoints.
    ("http://jenkins.test:8443/.pomerium", "internal", 0),
    ("http://jenkins.test:8443/.well-known/pomerium", "internal", 0),
    ("http://office.test/", "route", 4),
    ("http://office.test:80/", "route", 4),  # the default port is optional
    ("http://authenticate.test:8443/oauth2/callback", "authenticate", None),
    ("http://jenkins.test/", "none", None),  # wrong port: another virtual host
    ("http://other.test:8443/", "none", None),
    ("https://jenkins.test:8443/", "none", None),  # insecure_server: no TLS listener
    ("http://jenkins.test:8443/health%2F..%2Fadmin", "refused", None),
    ("http://jenkins.test:8443/health%5cx", "refused", None),
    ("http://jenkins.test:8443/health/%2e%2e/admin/x", "route", 0),
]


@pytest.mark.parametrize(("url", "kind", "index"), ROUTE_CASES)
def test_select_route(cfg: Any, url: str, kind: str, index: int | None) -> None:
    chosen = select_route(cfg, url)
    rt = chosen.route
    assert (chosen.kind or ("refused" if chosen.refused else "none")) == kind
    assert (rt.index if rt is not None else None) == index


def test_explain_deny_names_the_rule(cfg: Any) -> None:
    from authgate.explain import identity_from_claims

    result = explain_request(
        cfg,
        "http://jenkins.test:8443/job/x",
        identity=identity_from_claims({"email": "mallory@evil.org", "sub": "u-m"}),
    )
    assert result.route == "routes[3]"
    assert result.route_id == "jenkins"
    assert result.match == "http://jenkins.test:8443, prefix /"
    assert result.decision == "deny"
    assert result.reason == (
        "no allow matched; allow[0].and[0] domain is example.com: got evil.org; "
        "allowed_users.or[0] email is bob@corp.test: got mallory@evil.org"
    )
    assert result.response == "403"
    assert result.exit_code == 1


Capture = pytest.CaptureFixture[str]


def test_cli_text_output(config_file: Path, tmp_path: Path, capsys: Capture) -> None:
    claims = claims_file(tmp_path, email="mallory@evil.org", sub="u-m", groups="devs")
    code = main(["explain", "-c", str(config_file), "--url", "http://jenkins.test:8443/job/x",
                 "--method", "GET", "--claims", claims, "--at", "2026-11-22T10:00:00Z",
                 "--source-ip", "10.1.2.3"])
    assert code == 1
    assert capsys.readouterr().out == (
        "route: routes[3] (http://jenkins.test:8443, prefix /)\n"
        "decision: deny\n"
        "reason: no allow matched; allow[0].and[0] domain is example.com: got evil.org; "
        "allowed_users.or[0] email is bob@corp.test: got mallory@evil.org\n"
        "response: 403\n"
    )


def test_cli_json_output_allowed(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = claims_file(tmp_path, email="Alice@Example.com", sub="u-a")
    code = main(["explain", "-c", str(config_file), "--url", "http://jenkins.test:8443/job/x",
                 "--claims", claims, "--format", "json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "route": "routes[3]",
        "route_id": "jenkins",
        "match": "http://jenkins.test:8443, prefix /",
        "decision": "allow",
        "reason": "allow matched: allow[0].and[0] domain is example.com: got Example.com; "
        "no deny matched",
        "response": "forwarded to http://127.0.0.1:8080",
    }


def test_cli_deny_rule(config_file: Path, tmp_path: Path, capsys: Capture) -> None:
    claims = claims_file(tmp_path, email="alice@example.com", sub="u-a")
    code = main(["explain", "-c", str(config_file), "--url", "http://jenkins.test:8443/job/x",
                 "--claims", claims, "--method", "delete"])
    assert code == 1
    out = capsys.readouterr().out
    assert "reason: deny matched: deny[0].or[0] http_method is DELETE: got DELETE\n" in out


def test_cli_signed_out(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-c", str(config_file), "--url", "http://jenkins.test:8443/"]) == 1
    out = capsys.readouterr().out
    assert "allow[0].and[0] domain is example.com: not signed in" in out
    assert "response: 302 to sign in (browsers), 401 (API clients)" in out


@pytest.mark.parametrize(
    ("at", "decision"),
    [
        ("2026-11-22T08:30:00Z", "allow"),  # 09:30 in Berlin
        ("2026-11-22T16:30:00Z", "deny"),  # 17:30 in Berlin
        ("2026-11-22T17:30:00+01:00", "deny"),
        ("2026-11-22T08:00:00", "allow"),  # naive = UTC
    ],
)
def test_cli_at(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], at: str, decision: str
) -> None:
    claims = claims_file(tmp_path, email="alice@example.com", sub="u-a")
    main(["explain", "-c", str(config_file), "--url", "http://office.test/", "--claims", claims,
          "--at", at, "--format", "json"])
    result = json.loads(capsys.readouterr().out)
    assert result["decision"] == decision
    if decision == "deny":
        assert "time_of_day after 09:00 before 17:00 Europe/Berlin: got 17:30:00" in (
            result["reason"]
        )


def test_cli_public_and_internal(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://jenkins.test:8443/health"
    assert main(["explain", "-c", str(config_file), "--url", url]) == 0
    out = capsys.readouterr().out
    assert "route: routes[1] (http://jenkins.test:8443, path /health)" in out
    assert "reason: allow matched: allow_public_unauthenticated_access.or[0] accept\n" in out
    assert main(["explain", "-c", str(config_file), "--url",
                 "http://jenkins.test:8443/.pomerium/"]) == 0
    assert "decision: internal" in capsys.readouterr().out


def test_cli_no_route(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-c", str(config_file), "--url", "http://nowhere.test:8443/"]) == 1
    assert capsys.readouterr().out == (
        "route: none (no route has the host nowhere.test:8443)\n"
        "decision: not found\n"
        "reason: no route has the host nowhere.test:8443\n"
        "response: 404 from Envoy\n"
    )


def test_cli_cors_preflight_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = {**BASE, "routes": [{"from": "http://app.test", "to": "http://127.0.0.1:1",
                               "policy": {"allow": {"or": [{"cors_preflight": True}]}}}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    args = ["explain", "-c", str(path), "--url", "http://app.test/x", "--method", "OPTIONS"]
    assert main(args) == 1
    assert "got OPTIONS with neither header" in capsys.readouterr().out
    assert main([*args, "--header", "Origin: https://a.test",
                 "--header", "Access-Control-Request-Method: POST"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--at", "tomorrow"], "authgate: config error: --at: 'tomorrow' is not an ISO-8601 time"),
        (["--claims", "/nonexistent/claims.json"], "authgate: config error: --claims: cannot read"),
        (["--header", "no-colon"], "authgate: config error: --header:"),
    ],
)
def test_cli_bad_arguments_exit_2(
    config_file: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code = main(["explain", "-c", str(config_file), "--url", "http://jenkins.test:8443/", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_cli_claims_not_an_object(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "claims.json"
    path.write_text("[1, 2]")
    code = main(["explain", "-c", str(config_file), "--url", "http://jenkins.test:8443/",
                 "--claims", str(path)])
    assert code == 2
    assert "--claims: must be a JSON object" in capsys.readouterr().err


def test_cli_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = {**BASE, "routes": [{"from": "http://app.test", "to": "http://127.0.0.1:1",
                               "policy": {"allow": {"and": [{"emial": "x"}]}}}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["explain", "-c", str(path), "--url", "http://app.test/"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("authgate: config error: routes[0].policy")
    assert "unknown criterion `emial`" in err


def test_the_claims_json_of_the_user_page_explains_as_that_user() -> None:
    """/.pomerium/ shows "Claims as JSON"; `authgate explain --claims` reads it back."""
    from authgate.authz.route_endpoints import explain_claims
    from authgate.explain import identity_from_claims

    claims = {"sub": "u1", "email": "a@example.com", "name": "A", "groups": ["g1"], "dept": "x"}
    session = Session.from_claims(claims, lifetime_s=60)
    assert identity_from_claims(explain_claims(session)) == session.identity
