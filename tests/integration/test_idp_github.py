"""`idp_provider: github` through the real stack (Envoy + `authgate run`), against a local
STAND-IN for github.com / api.github.com (tests/support/oauth2_standin.py) reached through
`idp_provider_url`, as a GitHub Enterprise URL would be: github.com cannot be reached here.

The assertion the app gets carries the login as `sub`/`user`, the primary verified email and
the teams as `<org>/<team-slug>` groups, and policy reads those groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from authgate.contract import ASSERTION_HEADER
from tests.support.gate import Gate, eventually, gates, refused
from tests.support.oauth2_standin import GitHubStandIn, GitHubUser
from tests.support.resolve import map_hosts

ALICE = GitHubUser(
    login="alice-gh",
    name="Alice Octo",
    emails=[
        {"email": "alice@old.example", "primary": False, "verified": True},
        {"email": "alice@acme.example", "primary": True, "verified": True},
    ],
    teams=[("acme", "admins"), ("acme", "devs"), ("other-org", "readers")],
)
# Primary address not verified: GitHub's answer names it, authgate must not use it.
MALLORY = GitHubUser(
    login="mallory-gh",
    name="Mallory",
    emails=[{"email": "ceo@acme.example", "primary": True, "verified": False}],
    teams=[("acme", "devs")],
)


@pytest.fixture(scope="module")
def github() -> Iterator[GitHubStandIn]:
    with GitHubStandIn(client_id="gh-client", client_secret="gh-secret", redirect_uri="") as s:
        s.add_user(ALICE)
        s.add_user(MALLORY)
        yield s


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory, github: GitHubStandIn) -> Iterator[Gate]:
    extra = {
        "idp_provider": "github",
        "idp_provider_url": github.url,
        "idp_client_id": "gh-client",
        "idp_client_secret": "gh-secret",
        "idp_scopes": [],  # the provider's defaults
        "session_refresh_interval": "1s",  # claims re-read from the API at once
    }
    admins = [{"allow": {"and": [{"groups": {"has": "acme/admins"}}]}}]
    route_extra = {"jenkins": {"policy": admins}}
    with map_hosts({"*.test": "127.0.0.1"}), gates(
        tmp_path_factory.mktemp("github"), workers=1, extra=extra, route_extra=route_extra
    ) as (one,):
        github.redirect_uri = f"https://authenticate.test:{one.public_port}/oauth2/callback"
        yield one


def test_github_sign_in_gives_the_app_login_email_and_teams(
    gate: Gate, github: GitHubStandIn
) -> None:
    github.sign_in_as("alice-gh")
    github.requests.clear()
    gate.jenkins.clear()
    with gate.client() as client:
        page = client.get(gate.url("jenkins.test", "/job/x"))
    assert page.status_code == 200, page.text[:300]
    seen = gate.jenkins.requests.wait_for(lambda r: r.header(ASSERTION_HEADER) is not None)
    assert seen.user is not None, seen.auth_error  # the Jenkins-like app verified it
    claims = jwt.decode(seen.header(ASSERTION_HEADER) or "", options={"verify_signature": False})
    assert claims["email"] == "alice@acme.example"
    assert claims["sub"] == "alice-gh" and claims["user"] == "alice-gh"
    assert claims["name"] == "Alice Octo"
    assert sorted(claims["groups"]) == ["acme/admins", "acme/devs", "other-org/readers"]

    (authorize,) = [q for m, p, q in github.requests if p == "/login/oauth/authorize"]
    assert authorize["scope"] == ["user:email read:org"]
    assert authorize["code_challenge_method"] == ["S256"]
    (token,) = [q for m, p, q in github.requests if p == "/login/oauth/access_token"]
    assert token["client_secret"] == ["gh-secret"] and token["code_verifier"]
    assert {"/user", "/user/emails", "/user/teams"} <= set(github.paths("GET"))


def test_an_unverified_primary_github_email_is_not_used(
    gate: Gate, github: GitHubStandIn
) -> None:
    github.sign_in_as("mallory-gh")
    gate.other.clear()
    with gate.client() as client:
        other = client.get(gate.url("other.test", "/"))
        jenkins = client.get(gate.url("jenkins.test", "/"))
    assert other.status_code == 200, other.text[:300]
    seen = gate.other.requests.wait_for(lambda r: r.header(ASSERTION_HEADER) is not None)
    claims = jwt.decode(seen.header(ASSERTION_HEADER) or "", options={"verify_signature": False})
    assert claims["sub"] == "mallory-gh" and claims["email"] == ""
    assert seen.header("x-pomerium-claim-email") in (None, "")
    assert jenkins.status_code == 403  # acme/devs only


def test_a_github_callback_with_a_foreign_code_is_refused(
    gate: Gate, github: GitHubStandIn
) -> None:
    """The stand-in refuses an unknown code as GitHub does (200 + error JSON): no session."""
    github.sign_in_as("alice-gh")
    with gate.client(follow=False) as client:
        answer = client.get(gate.url("jenkins.test", "/"))
        for _ in range(6):
            location = str(answer.url.join(answer.headers["location"]))
            if "/oauth2/callback?" in location:
                break
            answer = client.get(location)
        query = parse_qs(urlsplit(location).query)
        forged = location.replace(query["code"][0], "not-a-code")
        refused = client.get(forged)
    assert refused.status_code == 401, refused.text[:300]
    assert not any(c.name.endswith("_pomerium") for c in client.cookies.jar)


def test_github_claims_follow_the_api_and_a_revoked_token_ends_the_session(
    gate: Gate, github: GitHubStandIn
) -> None:
    """GitHub tokens do not expire: a refresh reads the API again with the same token."""
    carl = GitHubUser(
        login="carl-gh", name="Carl",
        emails=[{"email": "carl@acme.example", "primary": True, "verified": True}],
        teams=[("acme", "admins")],
    )
    github.add_user(carl)
    github.sign_in_as("carl-gh")
    with gate.client() as client:
        assert client.get(gate.url("jenkins.test", "/")).status_code == 200
        carl.teams = [("acme", "devs")]  # removed from the team at GitHub
        eventually(
            lambda: client.get(gate.url("jenkins.test", "/")).status_code == 403, within=15.0,
            step=0.5,
        )
        assert client.get(gate.url("other.test", "/")).status_code == 200
        with gate.client(follow=False) as fresh:
            fresh.cookies = client.cookies
            assert fresh.get(gate.url("other.test", "/")).status_code == 200
            github.revoke("carl-gh")
            eventually(
                lambda: refused(fresh.get(gate.url("other.test", "/"))), within=15.0, step=0.5
            )
