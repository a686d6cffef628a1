"""Pomerium's `idp_provider` names: config defaults and errors, the authorize request each one
builds, RFC 9207 `iss` checks, Azure's multi-tenant issuer and group overage, and unverified
emails in `email`/`domain` criteria.

The authorize URL and issuer checks run on an OidcClient whose discovery result is given
(what `metadata()` would have fetched), so no IdP is needed; the same paths against a real IdP
are in tests/integration/test_rfc9207.py and test_idp_github.py.
"""

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from authgate.authn.bearer import BearerVerifier, InvalidBearer
from authgate.check import check_config
from authgate.config import Settings, build_runtime, settings_from_mapping
from authgate.errors import ConfigError
from authgate.oidc.client import Metadata, OidcClient, TokenRejected, groups_overage
from authgate.oidc.factory import idp_client
from authgate.oidc.github import GitHubClient
from authgate.oidc.providers import PROVIDER_NAMES, PROVIDERS, github_api_url, issuer_matches
from authgate.policy import Identity, PolicyInput, compile_policy
from tests.support.sample_config import example

AZURE_COMMON = "https://login.microsoftonline.com/common/v2.0"
AZURE_TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"
TENANT = "f42bce3b-671c-4162-b24c-00ecc7641897"


@pytest.fixture(autouse=True)
def _no_config_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def settings(**changes: Any) -> Settings:
    raw = example()
    for key in ("idp_provider", "idp_provider_url", "idp_scopes"):
        raw.pop(key, None)
    raw.update(changes)
    return settings_from_mapping(raw, environ={})


def config_error(**changes: Any) -> str:
    with pytest.raises(ConfigError) as info:
        settings(**changes)
    return str(info.value)


# ---- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "url", "scopes"),
    [
        ("google", "https://accounts.google.com", ["openid", "profile", "email"]),
        ("azure", AZURE_COMMON, ["openid", "profile", "email", "offline_access"]),
        ("gitlab", "https://gitlab.com", ["openid", "profile", "email"]),
        ("github", "https://github.com", ["user:email", "read:org"]),
        (
            "onelogin",
            "https://openid-connect.onelogin.com/oidc",
            ["openid", "profile", "email", "groups", "offline_access"],
        ),
    ],
)
def test_providers_with_a_default_url_need_none(name: str, url: str, scopes: list[str]) -> None:
    got = settings(idp_provider=name)
    assert got.idp_provider_url == url
    assert list(got.idp_scopes) == scopes


@pytest.mark.parametrize("name", ["oidc", "keycloak", "okta", "auth0", "ping", "cognito"])
def test_providers_without_a_default_url_say_so(name: str) -> None:
    message = config_error(idp_provider=name)
    assert message.startswith("idp_provider_url: idp_provider " + name + " needs it")
    assert "e.g. https://" in message


def test_given_url_and_scopes_win_over_the_defaults() -> None:
    got = settings(
        idp_provider="google", idp_provider_url="https://idp.test/x", idp_scopes="openid"
    )
    assert (got.idp_provider_url, list(got.idp_scopes)) == ("https://idp.test/x", ["openid"])
    assert list(settings(idp_provider="cognito", idp_provider_url="https://c.test").idp_scopes) == [
        "openid", "email", "profile"
    ]
    onelogin_v2 = settings(idp_provider="onelogin", idp_provider_url="https://x.onelogin.com/oidc/2")
    assert "offline_access" not in onelogin_v2.idp_scopes


def test_an_unknown_provider_lists_the_known_ones() -> None:
    message = config_error(idp_provider="facebook", idp_provider_url="https://idp.test")
    assert "'facebook' is not a provider" in message
    for name in PROVIDER_NAMES:
        assert name in message
    assert "is not a provider" in config_error(idp_provider=["oidc"])


def test_openid_is_required_for_oidc_providers_only() -> None:
    assert "must include `openid`" in config_error(idp_provider="google", idp_scopes="email")
    assert list(settings(idp_provider="github", idp_scopes="read:org").idp_scopes) == ["read:org"]


def test_idp_request_params_may_not_replace_the_protocol() -> None:
    got = settings(idp_provider="google", idp_request_params={"hd": "example.com"})
    assert got.idp_request_params == {"hd": "example.com"}
    message = config_error(
        idp_provider="google", idp_request_params={"state": "x", "redirect_uri": "y"}
    )
    assert message.startswith("idp_request_params: sets redirect_uri, state, which authgate")
    assert "idp_request_params" in config_error(idp_provider="google", idp_request_params=["a"])


# ---- the authorize request -------------------------------------------------------------------


def client_for(name: str, url: str, *, params: dict[str, str] | None = None,
               iss_supported: bool = False, issuer: str | None = None) -> OidcClient:
    client = idp_client(
        provider_name=name,
        provider_url=url,
        client_id="cid",
        client_secret="secret",
        redirect_uri="https://authenticate.test/oauth2/callback",
        scopes=list(PROVIDERS[name].scopes_for(url)),
        request_params=params,
    )
    # What discovery would have returned (GitHub has none: its endpoints are fixed paths).
    if not isinstance(client, GitHubClient):
        client._metadata = Metadata(
            issuer=issuer or url,
            authorization_endpoint=f"{url}/authorize",
            token_endpoint=f"{url}/token",
            jwks_uri=f"{url}/jwks",
            userinfo_endpoint=None,
            end_session_endpoint=None,
            iss_parameter_supported=iss_supported,
        )
        client._metadata_at = time.monotonic()
    return client


def authorize_query(client: OidcClient) -> tuple[str, dict[str, str]]:
    async def run() -> str:
        try:
            return (await client.begin_login()).url
        finally:
            await client.aclose()

    url = asyncio.run(run())
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return f"{parts.scheme}://{parts.netloc}{parts.path}", query


def test_google_asks_for_offline_access_its_own_way() -> None:
    endpoint, query = authorize_query(client_for("google", "https://accounts.google.com"))
    assert endpoint == "https://accounts.google.com/authorize"
    assert query["scope"] == "openid profile email"
    assert query["access_type"] == "offline"
    assert query["prompt"] == "select_account consent"
    assert query["code_challenge_method"] == "S256" and query["nonce"] and query["state"]


def test_idp_request_params_replace_the_providers_own() -> None:
    _, query = authorize_query(
        client_for("google", "https://accounts.google.com", params={"hd": "example.com"})
    )
    assert query["hd"] == "example.com"
    assert "access_type" not in query and "prompt" not in query
    _, plain = authorize_query(client_for("oidc", "https://idp.test", params={"acr_values": "mfa"}))
    assert plain["acr_values"] == "mfa"
    assert plain["scope"] == "openid profile email offline_access"


def test_azure_selects_an_account() -> None:
    _, query = authorize_query(client_for("azure", AZURE_COMMON, issuer=AZURE_TEMPLATE))
    assert query["prompt"] == "select_account"


@pytest.mark.parametrize("name", ["keycloak", "okta", "auth0", "ping", "cognito", "gitlab"])
def test_named_oidc_providers_add_nothing(name: str) -> None:
    _, query = authorize_query(client_for(name, "https://idp.test"))
    assert set(query) == {
        "response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
        "code_challenge", "code_challenge_method",
    }


def test_github_endpoints_and_api() -> None:
    endpoint, query = authorize_query(client_for("github", "https://github.com"))
    assert endpoint == "https://github.com/login/oauth/authorize"
    assert query["scope"] == "user:email read:org"
    assert github_api_url("https://github.com/") == "https://api.github.com"
    assert github_api_url("https://ghe.example.com") == "https://ghe.example.com"


# ---- RFC 9207 --------------------------------------------------------------------------------


def check_iss(client: OidcClient, iss: str | None) -> str | None:
    """None when accepted, else the refusal."""
    async def run() -> str | None:
        try:
            await client.check_response_issuer(iss)
            return None
        except TokenRejected as exc:
            return str(exc)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_rfc9207_iss_must_be_the_idps() -> None:
    url = "https://idp.test/realms/a"
    assert check_iss(client_for("keycloak", url, iss_supported=True), url) is None
    assert "https://evil.test" in (
        check_iss(client_for("keycloak", url, iss_supported=True), "https://evil.test") or ""
    )
    assert check_iss(client_for("keycloak", url), url + "/") is not None  # exact, as RFC 9207
    assert "no `iss`" in (check_iss(client_for("keycloak", url, iss_supported=True), None) or "")
    # An IdP that does not advertise it may leave it out, but not send a wrong one.
    assert check_iss(client_for("keycloak", url), None) is None
    assert check_iss(client_for("keycloak", url), "https://idp.test/realms/b") is not None


def test_rfc9207_for_azure_multi_tenant() -> None:
    azure = client_for("azure", AZURE_COMMON, issuer=AZURE_TEMPLATE)
    assert check_iss(azure, f"https://login.microsoftonline.com/{TENANT}/v2.0") is None
    azure = client_for("azure", AZURE_COMMON, issuer=AZURE_TEMPLATE)
    assert check_iss(azure, "https://login.microsoftonline.com/a/b/v2.0") is not None
    # The template is Azure's only: another provider's discovery naming it is not trusted.
    other = client_for("okta", "https://idp.test", issuer=AZURE_TEMPLATE)
    assert check_iss(other, f"https://login.microsoftonline.com/{TENANT}/v2.0") is not None


def test_azure_id_token_issuer_is_its_tenants() -> None:
    tenant_iss = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert issuer_matches(AZURE_TEMPLATE, tenant_iss, TENANT)
    assert not issuer_matches(AZURE_TEMPLATE, tenant_iss, "another-tenant")
    assert not issuer_matches(AZURE_TEMPLATE, tenant_iss, None)
    assert not issuer_matches(AZURE_TEMPLATE, "https://login.microsoftonline.com/x/y/v2.0", "x/y")
    assert issuer_matches("https://idp.test", "https://idp.test", None)
    assert not issuer_matches("https://idp.test", "https://idp.test/", None)


def test_group_overage_is_noticed() -> None:
    overage = {"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "x"}}}
    assert groups_overage(overage)
    assert not groups_overage({"groups": ["a"]})
    assert not groups_overage({"_claim_names": "groups"})


# ---- email_verified --------------------------------------------------------------------------


def allowed(policy: str, email_verified: object) -> bool:
    claims = {} if email_verified == "absent" else {"email_verified": email_verified}
    who = Identity(user="u1", email="carol@example.com", claims=claims)
    compiled = compile_policy([{"allow": {"or": [{policy.split("=")[0]: policy.split("=")[1]}]}}])
    return compiled.allowed(PolicyInput(identity=who))


@pytest.mark.parametrize("rule", ["email=carol@example.com", "domain=example.com"])
@pytest.mark.parametrize(
    ("flag", "expected"),
    [(True, True), ("absent", True), ("true", True), (False, False), ("false", False),
     ("FALSE", False)],
)
def test_an_unverified_email_satisfies_no_email_or_domain_rule(
    rule: str, flag: object, expected: bool
) -> None:
    assert allowed(rule, flag) is expected


def test_a_negative_email_rule_does_not_hold_for_an_unverified_email_either() -> None:
    # `not` must not turn "unknown address" into a match.
    compiled = compile_policy([{"allow": {"or": [{"domain": {"not": "evil.org"}}]}}])
    unverified = Identity(user="u1", email="x@example.com", claims={"email_verified": False})
    assert not compiled.allowed(PolicyInput(identity=unverified))
    explanation = compiled.explain(PolicyInput(identity=unverified))
    assert "not verified by the identity provider" in str(explanation)


# ---- around the config -----------------------------------------------------------------------


def test_idp_request_params_from_the_environment_is_json() -> None:
    raw = example()
    got = settings_from_mapping(raw, environ={"IDP_REQUEST_PARAMS": '{"hd": "example.com"}'})
    assert got.idp_request_params == {"hd": "example.com"}
    with pytest.raises(ConfigError, match=r"^idp_request_params: is not a mapping"):
        settings_from_mapping(raw, environ={"IDP_REQUEST_PARAMS": "hd=example.com"})


@pytest.mark.parametrize(
    ("name", "scopes", "warned"),
    [("github", [], False), ("gitlab", [], False), ("github", ["user:email"], True),
     ("keycloak", [], True)],
)
def test_check_knows_where_groups_come_without_a_groups_scope(
    name: str, scopes: list[str], warned: bool
) -> None:
    raw = example()
    raw.update(idp_provider=name, idp_scopes=scopes)
    raw["routes"][0]["policy"] = [{"allow": {"or": [{"groups": {"has": "acme/admins"}}]}}]
    runtime = build_runtime(settings_from_mapping(raw, environ={}), warn=False)
    found = [f for f in check_config(runtime) if "groups" in f.message and f.key == "idp_scopes"]
    assert bool(found) is warned, found


IDP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def idp_jwks() -> jwt.PyJWKSet:
    jwk = json.loads(RSAAlgorithm.to_jwk(IDP_KEY.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    return jwt.PyJWKSet.from_dict({"keys": [jwk]})


def signed(iss: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {"iss": iss, "aud": "cid", "sub": "s", "iat": now, "exp": now + 300, **extra}
    return jwt.encode(claims, IDP_KEY, algorithm="RS256", headers={"kid": "k1"})


def test_azure_multi_tenant_id_tokens_are_checked_against_their_tid() -> None:
    """Signed tokens checked with the IdP keys given (what the JWKS fetch would have set)."""

    def token(iss: str, tid: str) -> str:
        return signed(iss, tid=tid)

    def verify(name: str, raw: str) -> str:
        client = client_for(name, AZURE_COMMON, issuer=AZURE_TEMPLATE)
        client._jwks = idp_jwks()

        async def run() -> str:
            try:
                return str((await client.verify_id_token(raw, None))["tid"])
            except TokenRejected as exc:
                return f"rejected: {exc}"
            finally:
                await client.aclose()

        return asyncio.run(run())

    own = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert verify("azure", token(own, TENANT)) == TENANT
    assert verify("azure", token(own, "another-tenant")).startswith("rejected: ID token rejected")
    assert verify("azure", token(AZURE_TEMPLATE, "{tenantid}")).startswith("rejected")
    # Only Azure gets the template: any other provider compares the issuer as written.
    assert verify("okta", token(own, TENANT)).startswith("rejected: ID token rejected")


def test_rfc9207_azure_template_itself_is_no_issuer() -> None:
    azure = client_for("azure", AZURE_COMMON, issuer=AZURE_TEMPLATE)
    assert check_iss(azure, AZURE_TEMPLATE) is not None


def test_a_bearer_token_with_a_group_overage_is_refused() -> None:
    client = client_for("azure", AZURE_COMMON, issuer=AZURE_TEMPLATE)
    client._jwks = idp_jwks()
    verifier = BearerVerifier(client, allowed_audiences=["cid"])
    own = f"https://login.microsoftonline.com/{TENANT}/v2.0"

    async def run(token: str) -> str:
        try:
            return str((await verifier.identity_token(token))["sub"])
        except InvalidBearer as exc:
            return f"refused: {exc}"

    async def both() -> tuple[str, str]:
        try:
            return await run(signed(own, tid=TENANT)), await run(
                signed(own, tid=TENANT, _claim_names={"groups": "src1"})
            )
        finally:
            await client.aclose()

    fine, overage = asyncio.run(both())
    assert fine == "s"
    assert overage.startswith("refused: the ID token has no groups list") and "Graph" in overage
