"""Pomerium keys (issue #13) in the schema, the runtime and the generated Envoy config; the
unsupported-key message; the README migration table is the one the schema generates."""

import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from authgate.assertion.signer import AssertionSigner
from authgate.authz.claim_headers import claim_headers, filtered_groups, substitute
from authgate.config import build_runtime, settings_from_mapping
from authgate.config.pomerium_keys import (
    UNSUPPORTED,
    UnsupportedKey,
    migration_table,
    with_table,
)
from authgate.config.pomerium_options import claim_header_name
from authgate.config.runtime import RuntimeConfig, generate_signing_key_b64
from authgate.config.schema import Route, Settings
from authgate.envoy.response_rewrite import RESPONSE_REWRITE_FILTER
from authgate.errors import ConfigError
from authgate.policy import Identity
from authgate.session.cookies import set_cookie
from tests.support.bootstrap_doc import bootstrap, hcm, only_route, route, runtime, vhosts

README = Path(__file__).resolve().parents[2] / "README.md"
COOKIE_SECRET = base64.b64encode(os.urandom(32)).decode()
SIGNING_KEY = generate_signing_key_b64()


def raw_config(tls: bool = True, **top: Any) -> dict[str, Any]:
    scheme = "https" if tls else "http"
    routes = top.pop("routes", [{"from": f"{scheme}://app.example.com", "to": "http://10.0.0.1",
                                 "allow_any_authenticated_user": True}])
    raw: dict[str, Any] = {
        "authenticate_service_url": f"{scheme}://authenticate.example.com",
        "idp_provider_url": "https://idp.test",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "cookie_secret": COOKIE_SECRET,
        "routes": routes,
        **top,
    }
    if tls:
        raw |= {"certificate_file": "cert.pem", "certificate_key_file": "key.pem"}
    else:
        raw["insecure_server"] = True
    return raw


def load(**top: Any) -> Settings:
    return settings_from_mapping(raw_config(**top), environ={})


def cfg_with(route_options: dict[str, Any] | None = None, **top: Any) -> RuntimeConfig:
    routes = [{"from": "https://app.example.com", "to": "http://10.0.0.1",
               "allow_any_authenticated_user": True, **(route_options or {})}]
    return build_runtime(load(routes=routes, **top), warn=False)


ALICE = Identity(user="u-1", email="alice@example.com", name="Alice", groups=("admins", "devs"),
                 claims={"given_name": "Alice", "email_verified": True,
                         "roles": ["a", "b,c"], "addr": {"c": "x"}})


# ---------------------------------------------------------------------------- jwt_claims_headers


def test_no_claim_headers_unless_listed() -> None:
    assert cfg_with().routes[0].claim_headers == ()


@pytest.mark.parametrize(
    "value", [["email", "given_name"], "email, given_name", "email,given_name"]
)
def test_list_form_names_pomeriums_headers(value: object) -> None:
    assert cfg_with(jwt_claims_headers=value).routes[0].claim_headers == (
        ("x-pomerium-claim-email", "email"),
        ("x-pomerium-claim-given-name", "given_name"),
    )


def test_map_form_and_route_over_global() -> None:
    cfg = cfg_with({"jwt_claims_headers": {"X-Mail": "email"}}, jwt_claims_headers=["name"])
    assert cfg.routes[0].claim_headers == (("x-mail", "email"),)
    assert claim_header_name("given_name") == "X-Pomerium-Claim-Given-Name"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"X Bad": "email"}, "not a valid header name"),
        ({"X-Pomerium-Jwt-Assertion": "email"}, "cannot carry a claim"),
        ({"X-A": "email", "x-a": "name"}, "named twice"),
        ({"X-A": "e mail"}, "is not a claim name"),
        ([1, 2], "as text"),
    ],
)
def test_bad_claim_headers_are_one_clear_line(value: object, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(jwt_claims_headers=value)
    assert str(info.value).startswith("jwt_claims_headers") and words in str(info.value)


def test_claim_header_values() -> None:
    pairs = [("x-a", "email"), ("x-g", "groups"), ("x-v", "email_verified"), ("x-r", "roles"),
             ("x-d", "addr"), ("x-missing", "nope"), ("x-s", "sub")]
    assert dict(claim_headers(pairs, ALICE, ("devs",))) == {
        "x-a": "alice@example.com",
        "x-g": "devs",
        "x-v": "true",
        "x-r": "a",  # an item with a comma would read as two: left out
        "x-d": '{"c":"x"}',
        "x-s": "u-1",
    }


# ---------------------------------------------------------------------------- groups filter, iss


def test_groups_filter_global_and_route_add_up() -> None:
    cfg = cfg_with({"jwt_groups_filter": ["devs"]}, jwt_groups_filter="admins")
    assert cfg.routes[0].groups_filter == frozenset({"admins", "devs"})
    assert cfg_with().routes[0].groups_filter is None
    assert filtered_groups(("a", "devs", "x"), frozenset({"devs"})) == ("devs",)
    assert filtered_groups(("a",), None) == ("a",)


def test_issuer_format_per_route() -> None:
    cfg = cfg_with({"jwt_issuer_format": "uri"})
    assert cfg.routes[0].issuer == "https://authenticate.example.com/"
    assert cfg.assertion_issuer == "authenticate.example.com"


def test_signer_keys_its_reuse_by_issuer() -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    signer = AssertionSigner(ec.generate_private_key(ec.SECP256R1()), "host.example")
    common: dict[str, Any] = dict(sid="s", audience="a", user="u", email="e", name="n",
                                  groups=("g",), now=1_000_000)
    default, _ = signer.signed_for(**common)
    uri, _ = signer.signed_for(**common, issuer="https://host.example/")
    assert jwt.decode(default, options={"verify_signature": False})["iss"] == "host.example"
    assert jwt.decode(uri, options={"verify_signature": False})["iss"] == "https://host.example/"


# ---------------------------------------------------------------------------- substitutions


def test_substitutions_are_kept_for_authz_not_envoy() -> None:
    headers = {"Authorization": "Bearer ${pomerium.id_token}", "X-Static": "1"}
    cfg = runtime([route("http://a.test", "http://10.0.0.1", id="r",
                         set_request_headers=headers)])
    assert cfg.routes[0].substituted_headers == (
        ("authorization", "Bearer ${pomerium.id_token}"),
    )
    r = only_route(bootstrap(cfg))
    assert [h["header"]["key"] for h in r["request_headers_to_add"]] == ["x-static"]
    tokens = {"id_token": "ID", "jwt": "J"}
    assert substitute("Bearer ${pomerium.id_token} ${ pomerium.jwt }", tokens) == "Bearer ID J"
    assert substitute("${pomerium.access_token}", tokens) == ""


# ---------------------------------------------------------------------------- response headers


def test_response_headers_and_rewrites_in_envoy() -> None:
    rewrite = {"header": "Location", "prefix": "http://internal:8080/", "value": 'https://a"b/'}
    cfg = runtime([route("http://a.test", "http://10.0.0.1", id="r",
                         set_response_headers={"X-Frame-Options": "DENY", "X-P": "100%"},
                         rewrite_response_headers=[rewrite])])
    doc = bootstrap(cfg)
    r = only_route(doc)
    assert [(h["header"]["key"], h["header"]["value"]) for h in r["response_headers_to_add"]] == [
        ("x-frame-options", "DENY"), ("x-p", "100%%")]
    lua = r["typed_per_filter_config"][RESPONSE_REWRITE_FILTER]["source_code"]["inline_string"]
    assert 'h:get("location")' in lua and '"https://a\\"b/"' in lua
    names = [f["name"] for f in hcm(doc)["http_filters"]]
    assert names.index(RESPONSE_REWRITE_FILTER) == len(names) - 2  # just before the router
    plain = bootstrap(runtime([route("http://a.test", "http://10.0.0.1", id="r")]))
    assert RESPONSE_REWRITE_FILTER not in [f["name"] for f in hcm(plain)["http_filters"]]


@pytest.mark.parametrize("name", ["Set-Cookie", "Content-Length", "x-pomerium-x", "a b"])
def test_response_headers_authgate_owns_are_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        runtime([route("http://a.test", "http://10.0.0.1", set_response_headers={name: "1"})])


# ---------------------------------------------------------------------------- timeouts


def test_timeouts_map_onto_envoy() -> None:
    doc = bootstrap(runtime([route("http://a.test", "http://10.0.0.1", id="r")],
                            default_upstream_timeout="45s", timeout_read="20s",
                            timeout_write="2m", timeout_idle="90s"))
    manager = hcm(doc)
    assert manager["request_timeout"] == "20s"
    assert manager["common_http_protocol_options"]["idle_timeout"] == "90s"
    assert manager["common_http_protocol_options"]["max_stream_duration"] == "120s"
    assert only_route(doc)["route"]["timeout"] == "45s"
    own = bootstrap(runtime([route("http://a.test", "http://10.0.0.1", id="r", timeout="5s")]))
    assert only_route(own)["route"]["timeout"] == "5s"
    assert "max_stream_duration" not in hcm(own)["common_http_protocol_options"]


# ---------------------------------------------------------------------------- cookies, sign-out


def test_cookie_domain_shares_a_secure_prefixed_cookie() -> None:
    cfg = cfg_with(cookie_domain=".example.com")
    assert cfg.cookie_name == "__Secure-_pomerium"
    assert cfg.cookie_domain_for("app.example.com") == "example.com"
    assert cfg.cookie_binding("app.example.com") == cfg.cookie_binding("api.example.com:443")
    assert cfg.cookie_domain_for("other.test") is None
    assert cfg.cookie_binding("other.test") == "other.test"
    assert cfg_with().cookie_name == "__Host-_pomerium"
    # precomputed per route (read on every Check)
    (shared,) = cfg.routes
    assert (shared.cookie_domain, shared.cookie_binding) == ("example.com", "domain:example.com")
    (own,) = cfg_with().routes
    assert (own.cookie_domain, own.cookie_binding) == (None, "app.example.com")


def test_cookie_attributes() -> None:
    assert set_cookie("n", "v", max_age=1, secure=True, same_site="Strict", http_only=False,
                      domain="example.com") == (
        "n=v; Path=/; Max-Age=1; Domain=example.com; SameSite=Strict; Secure")
    assert load(cookie_same_site="none").cookie_same_site == "None"


@pytest.mark.parametrize(
    ("top", "words"),
    [
        ({"cookie_same_site": "None", "tls": False}, "needs Secure cookies"),
        ({"cookie_same_site": "Sometimes"}, "cookie_same_site"),
        ({"cookie_domain": "exa mple.com"}, "not a domain name"),
        ({"signout_redirect_url": "javascript:alert(1)"}, "signout_redirect_url"),
    ],
)
def test_bad_cookie_and_signout_settings(top: dict[str, Any], words: str) -> None:
    tls = top.pop("tls", True)
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(raw_config(tls=tls, **top), environ={})
    assert words in str(info.value)


# ---------------------------------------------------------------------------- unsupported keys


def test_unsupported_key_has_its_own_message() -> None:
    with pytest.raises(UnsupportedKey) as info:
        load(databroker_service_url="https://databroker.internal")
    assert str(info.value).startswith(
        "Pomerium's `databroker_service_url` is not supported by authgate: sessions live in")
    routes = [{"from": "https://app.example.com", "to": "http://10.0.0.1",
               "kubernetes_service_account_token": "x"}]
    with pytest.raises(UnsupportedKey) as info:
        load(routes=routes)
    assert str(info.value).startswith(
        "routes[0]: Pomerium's `kubernetes_service_account_token` is not supported")


def test_a_typo_is_not_called_unsupported() -> None:
    with pytest.raises(ConfigError) as info:
        load(autocertt=True)
    assert "unknown key" in str(info.value) and "not supported" not in str(info.value)


def test_cli_exits_2_with_the_message(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw_config(autocert=True)))
    result = subprocess.run(
        [sys.executable, "-m", "authgate", "check", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "Pomerium's `autocert` is not supported by authgate: " in result.stderr
    assert "Traceback" not in result.stderr


def test_unsupported_keys_are_not_schema_keys() -> None:
    """A key that gains support must leave UNSUPPORTED (and the README table changes)."""
    route_keys = {f.alias or n for n, f in Route.model_fields.items()}
    assert not set(Settings.model_fields) & set(UNSUPPORTED)
    # `policy` is refused only at the top level (Pomerium's old route list)
    assert not (route_keys - {"policy"}) & set(UNSUPPORTED)


def test_readme_migration_table_is_generated_from_the_schema() -> None:
    text = README.read_text()
    found = re.search(
        r"<!-- migration-table:start -->\n(.*?)<!-- migration-table:end -->", text, re.S
    )
    assert found, "README lacks the migration table markers"
    assert found.group(1) == migration_table() and with_table(text) == text, (
        "README's migration table is stale: run `python scripts/gen_migration_table.py`"
    )
    assert "| `autocert` | not supported: " in found.group(1)
    assert "| `routes[].jwt_claims_headers` | supported |" in found.group(1)
    assert "| `session_refresh_interval` | authgate's own key |" in found.group(1)


def test_http_only_off_is_a_warning() -> None:
    assert any("cookie_http_only" in n for n in load(cookie_http_only=False).config_warnings())
    assert not load().config_warnings()


def test_global_response_headers_under_the_routes_own() -> None:
    cfg = runtime(
        [route("http://a.test", "http://10.0.0.1", id="r", set_response_headers={"X-A": "route"})],
        set_response_headers={"x-a": "global", "Strict-Transport-Security": "max-age=60"},
    )
    r = only_route(bootstrap(cfg))
    assert [(h["header"]["key"], h["header"]["value"]) for h in r["response_headers_to_add"]] == [
        ("x-a", "route"), ("strict-transport-security", "max-age=60")]
    with pytest.raises(ConfigError) as info:
        load(set_response_headers={"Set-Cookie": "x=1"})
    assert str(info.value).startswith("set_response_headers")


def test_global_pass_identity_headers_is_the_routes_default() -> None:
    routes = [{"from": "https://a.example.com", "to": "http://10.0.0.1"},
              {"from": "https://b.example.com", "to": "http://10.0.0.1",
               "pass_identity_headers": False}]
    settings = load(routes=routes, pass_identity_headers=True)
    assert [r.pass_identity_headers for r in settings.routes] == [True, False]
    assert [r.pass_identity_headers for r in load(routes=routes).routes] == [False, False]


def test_check_tells_the_routes_own_issuer() -> None:
    from authgate.check import check_config

    cfg = cfg_with({"jwt_issuer_format": "uri", "pass_identity_headers": True})
    text = " ".join(f.line() for f in check_config(cfg, upstreams=False))
    assert "iss=https://authenticate.example.com/" in text


def test_top_level_policy_is_pomeriums_old_route_list() -> None:
    with pytest.raises(UnsupportedKey) as info:
        load(policy=[{"from": "https://a.example.com", "to": "http://10.0.0.1"}])
    assert "write the routes under `routes`" in str(info.value)


def test_fast_lane_only_where_a_pass_can_stand_for_the_headers() -> None:
    from authgate.fast_pass import FastLane

    def lane_routes(route_options: dict[str, Any], **top: Any) -> set[str]:
        cfg = cfg_with({"pass_identity_headers": True, **route_options}, fast_lane=True,
                       signing_key=SIGNING_KEY, **top)
        return set(FastLane(cfg).routes)

    assert lane_routes({}, jwt_claims_headers=["email"]) == {"route-0"}
    assert FastLane(cfg_with({"pass_identity_headers": True}, fast_lane=True,
                             signing_key=SIGNING_KEY, jwt_claims_headers=["email"])
                    ).routes["route-0"].headers == (
        "x-pomerium-jwt-assertion", "x-pomerium-claim-email")
    # a claim header Envoy would not clear of client values on the fast lane
    assert lane_routes({}, jwt_claims_headers={"X-Email": "email"}) == set()
    # a per-user secret never goes into a pass cookie
    assert lane_routes({"set_request_headers": {"Authorization": "Bearer ${pomerium.id_token}"}}
                       ) == set()



def test_the_fast_lane_twin_keeps_the_response_headers() -> None:
    rewrite = {"header": "Location", "prefix": "http://internal/", "value": "https://a.test/"}
    cfg = runtime(
        [route("https://a.test", "http://10.0.0.1", id="r", pass_identity_headers=True,
               allow_any_authenticated_user=True, set_response_headers={"X-Frame-Options": "DENY"},
               rewrite_response_headers=[rewrite])],
        tls=("cert.pem", "key.pem"), fast_lane=True, signing_key=SIGNING_KEY,
    )
    routes = vhosts(bootstrap(cfg))["a.test"]["routes"]
    twin, normal = (next(r for r in routes if r.get("name") == name) for name in
                    ("r:fast-lane", "r"))
    assert twin["response_headers_to_add"] == normal["response_headers_to_add"]
    assert (twin["typed_per_filter_config"][RESPONSE_REWRITE_FILTER]
            == normal["typed_per_filter_config"][RESPONSE_REWRITE_FILTER])
