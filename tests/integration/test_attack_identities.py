"""Identity tricks through the real IdP: users whose emails look like an allowed one.

The hostile stack's IdP has a user for every trick (tests/integration/attack_kit.py). Each one
signs in for real (oidc-provider, code + PKCE) and asks for a route that allows only
`domain: kestrel.example` (app.test) or only `email: kim@kestrel.example` (mail.test). None may
get through; genuine users, including ones whose email differs only in ASCII case, do.
"""

from __future__ import annotations

import secrets

import pytest

from tests.integration.attack_kit import DOMAIN_TRICKS, EMAIL_TRICKS, HostileStack
from tests.security_summary import hostile

pytestmark = pytest.mark.usefixtures("hostile_stays_healthy")


def _visit_as(stack: HostileStack, login: str, host: str) -> tuple[int, str]:
    """Sign in at the IdP as `login` on the way to `host`; (final status, path asked)."""
    path = f"/who/{secrets.token_hex(4)}"
    with stack.client() as browser:
        final = stack.login(browser, stack.url(host, path), login)
        return final.status_code, path


def _reached(stack: HostileStack, path: str) -> bool:
    return any(r.path == path for r in stack.upstream.requests.snapshot())


@pytest.mark.parametrize("trick", list(DOMAIN_TRICKS))
def test_domain_lookalike_is_refused(hostile_stack: HostileStack, trick: str) -> None:
    status, path = _visit_as(hostile_stack, f"domain-{trick}", "app.test")
    refused = status == 403 and not _reached(hostile_stack, path)
    assert hostile("identities: domain criterion", refused), (DOMAIN_TRICKS[trick], status)


@pytest.mark.parametrize("trick", list(EMAIL_TRICKS))
def test_email_lookalike_is_refused(hostile_stack: HostileStack, trick: str) -> None:
    status, path = _visit_as(hostile_stack, f"email-{trick}", "mail.test")
    refused = status == 403 and not _reached(hostile_stack, path)
    assert hostile("identities: email criterion", refused), (EMAIL_TRICKS[trick], status)


@pytest.mark.parametrize(
    ("login", "host", "allowed"),
    [
        ("kim@kestrel.example", "app.test", True),
        ("kim@kestrel.example", "mail.test", True),
        ("bob@kestrel.example", "app.test", True),
        ("bob@kestrel.example", "mail.test", False),
        ("Bob.Upper@KESTREL.EXAMPLE", "app.test", True),  # ASCII case is not a different domain
        ("eve@evil.test", "app.test", False),
        ("eve@evil.test", "any.test", True),
    ],
)
def test_genuine_users_get_what_the_policy_says(
    hostile_stack: HostileStack, login: str, host: str, allowed: bool
) -> None:
    """Controls: the refusals above come from the policy, not from a broken login."""
    status, path = _visit_as(hostile_stack, login, host)
    assert status == (200 if allowed else 403)
    assert _reached(hostile_stack, path) is allowed


def test_line_breaks_in_claims_do_not_inject_headers(hostile_stack: HostileStack) -> None:
    """A name and groups with CR LF in them (the IdP sends what it has) cannot add or replace
    identity headers, nor break the request: the upstream gets the real email once."""
    stack = hostile_stack
    status, path = _visit_as(stack, "crlf@evil.test", "any.test")
    requests = [r for r in stack.upstream.requests.snapshot() if r.path == path]
    refused = status == 200 and len(requests) == 1
    if refused:
        request = requests[0]
        refused = (
            request.header_values("x-pomerium-claim-email") == ["crlf@evil.test"]
            and len(request.header_values("x-pomerium-claim-name")) == 1
            and not any(
                "kim@kestrel.example" in v or v.strip() == "admins" for _, v in request.headers
            )
            and request.user is not None
            and request.user["username"] == "crlf@evil.test"
        )
    assert stack.healthy()
    assert hostile("identities: CR LF in claims", refused), (status, requests[:1])
