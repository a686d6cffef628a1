"""CompiledPolicy.explain(): the rule path that decided, in the words of the config."""

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.policy import Identity, PolicyInput, compile_policy, compile_route_policy
from authgate.policy import route_policy_document as document_of

ALICE = Identity(user="u-alice", email="alice@example.com", groups=("devs",))
EVE = Identity(user="u-eve", email="eve@evil.org", groups=("banned",))


def why(document: object, identity: Identity | None, **request: Any) -> tuple[bool, str]:
    explanation = compile_policy(document).explain(PolicyInput(identity=identity, **request))
    return explanation.allowed, explanation.reason


DOMAIN = {"allow": {"and": [{"domain": {"is": "example.com"}}]}}

EXPLAIN_CASES = [
    (
        "criterion false",
        DOMAIN,
        EVE,
        False,
        "no allow matched; allow[0].and[0] domain is example.com: got evil.org",
    ),
    (
        "criterion true",
        DOMAIN,
        ALICE,
        True,
        "allow matched: allow[0].and[0] domain is example.com: got example.com",
    ),
    (
        "not signed in",
        DOMAIN,
        None,
        False,
        "no allow matched; allow[0].and[0] domain is example.com: not signed in",
    ),
    (
        "first failing item of an and",
        {"allow": {"and": [{"accept": True}, {"email": {"ends_with": "@example.com"}}]}},
        EVE,
        False,
        "no allow matched; allow[0].and[1] email ends_with @example.com: got eve@evil.org",
    ),
    (
        "every item of an or",
        {"allow": {"or": [{"user": "u-bob"}, {"groups": {"has": "admins"}}]}},
        EVE,
        False,
        "no allow matched; allow[0].or[0] user is u-bob: got u-eve; "
        "allow[0].or[1] groups has admins: got [banned]",
    ),
    (
        "an item under not that matched",
        {"allow": {"not": [{"groups": {"has": "banned"}}]}},
        EVE,
        False,
        "no allow matched; allow[0].not[0] groups has banned: got [banned] (under not)",
    ),
    (
        "nor with every item true",
        {"allow": {"nor": [{"accept": True}, {"domain": "evil.org"}]}},
        EVE,
        False,
        "no allow matched; allow[0].nor[0] accept and allow[0].nor[1] domain is evil.org: "
        "got evil.org (nor needs one to fail)",
    ),
    (
        "nested operators name their path",
        {"allow": {"and": [{"accept": True}, {"or": [{"http_method": "POST"}]}]}},
        ALICE,
        False,
        "no allow matched; allow[0].and[1].or[0] http_method is POST: got GET",
    ),
    (
        "a matching deny",
        [{"allow": {"or": [{"accept": True}]}}, {"deny": {"or": [{"groups": {"has": "banned"}}]}}],
        EVE,
        False,
        "deny matched: deny[0].or[0] groups has banned: got [banned]",
    ),
    (
        "allow with a deny that did not match",
        [{"allow": {"or": [{"accept": True}]}}, {"deny": {"or": [{"groups": {"has": "banned"}}]}}],
        ALICE,
        True,
        "allow matched: allow[0].or[0] accept; no deny matched",
    ),
    (
        "second allow block",
        [{"allow": {"or": [{"reject": True}]}}, {"allow": {"and": [{"domain": "example.com"}]}}],
        ALICE,
        True,
        "allow matched: allow[1].and[0] domain is example.com: got example.com",
    ),
    ("no rules", [], ALICE, False, "no allow rule: this policy lets nobody in"),
    (
        "time of day",
        {"allow": {"and": [{"time_of_day": {"timezone": "UTC", "before": "09:00"}}]}},
        ALICE,
        False,
        "no allow matched; allow[0].and[0] time_of_day before 09:00 UTC: "
        "got 10:00:00 UTC (Sunday)",
    ),
]


@pytest.mark.parametrize(
    ("document", "identity", "allowed", "reason"),
    [pytest.param(d, i, a, r, id=n) for n, d, i, a, r in EXPLAIN_CASES],
)
def test_explain_reason(
    document: object, identity: Identity | None, allowed: bool, reason: str
) -> None:
    at = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert why(document, identity, now=at) == (allowed, reason)


def test_route_shortcuts_are_named_by_their_key() -> None:
    policy = compile_route_policy(
        policy={"allow": {"and": [{"domain": "example.com"}]}},
        allow_public_unauthenticated_access=False,
        allow_any_authenticated_user=False,
        allowed_users=["bob@corp.test"],
        allowed_groups=["ops"],
        where="routes[2]",
    )
    reason = policy.explain(PolicyInput(identity=EVE)).reason
    assert reason == (
        "no allow matched; allow[0].and[0] domain is example.com: got evil.org; "
        "allowed_users.or[0] email is bob@corp.test: got eve@evil.org; "
        "allowed_groups.or[0] groups has ops: got [banned]"
    )
    assert [b.where for b in policy.allows] == [
        "routes[2].policy.allow",
        "routes[2].allowed_users",
        "routes[2].allowed_groups",
    ]


SUGAR = [
    {"allow_public_unauthenticated_access": True},
    {"allow_any_authenticated_user": True},
    {"allowed_users": ["alice@example.com"], "allowed_domains": ["corp.test"]},
    {"allowed_groups": ["banned"], "policy": {"deny": {"or": [{"user": "u-alice"}]}}},
]


@pytest.mark.parametrize("options", SUGAR)
@pytest.mark.parametrize("identity", [None, ALICE, EVE])
def test_named_route_policy_means_the_same_as_the_runtime_one(
    options: dict[str, Any], identity: Identity | None
) -> None:
    """The shortcuts are sugar over one engine: both compilations decide alike."""
    full = {
        "policy": None,
        "allow_public_unauthenticated_access": False,
        "allow_any_authenticated_user": False,
        **options,
    }
    runtime = compile_policy(document_of(**full))
    named = compile_route_policy(**full, where="routes[0]")
    inp = PolicyInput(identity=identity)
    assert runtime.allowed(inp) is named.allowed(inp) is named.explain(inp).allowed


CRITERIA = [
    {"accept": True},
    {"reject": True},
    {"authenticated_user": True},
    {"domain": "example.com"},
    {"groups": {"has": "banned"}},
    {"http_method": "GET"},
    {"email": {"ends_with": "@evil.org"}},
]
expressions = st.recursive(
    st.sampled_from(CRITERIA),
    lambda children: st.builds(
        lambda op, items: {op: items},
        st.sampled_from(["and", "or", "not", "nor"]),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    allow=expressions,
    deny=st.none() | expressions,
    identity=st.sampled_from([None, ALICE, EVE]),
)
def test_explanation_agrees_with_the_decision(
    allow: dict[str, Any], deny: dict[str, Any] | None, identity: Identity | None
) -> None:
    document: list[Any] = [{"allow": {"and": [allow]}}]
    if deny is not None:
        document.append({"deny": {"and": [deny]}})
    policy = compile_policy(document)
    inp = PolicyInput(identity=identity)
    explanation = policy.explain(inp)
    assert explanation.allowed is policy.allowed(inp)
    prefix = "allow matched: " if explanation.allowed else ("deny matched: ", "no allow matched; ")
    assert explanation.reason.startswith(prefix)
