"""Pomerium Policy Language: what a route's policy lets through, with Pomerium's semantics."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.errors import ConfigError
from authgate.policy import (
    Identity,
    PolicyInput,
    compile_policy,
    email_domain,
    normalize_groups,
    route_policy_document,
)

ANON = None


def ident(
    email: str = "alice@example.com",
    user: str = "u-alice",
    groups: object = None,
    claims: dict[str, Any] | None = None,
) -> Identity:
    return Identity(
        user=user, email=email, name="Alice", groups=normalize_groups(groups), claims=claims or {}
    )


def allowed(document: object, identity: Identity | None) -> bool:
    return compile_policy(document).allowed(PolicyInput(identity=identity))


def allow(*items: object, op: str = "and") -> dict[str, Any]:
    return {"allow": {op: list(items)}}


ACCEPT = {"accept": True}
REJECT = {"reject": True}

# ---- allow / deny precedence ---------------------------------------------------------------

ALICE = ident()
MALLORY = ident(email="mallory@evil.org", user="u-mallory", groups=["banned"])

PRECEDENCE = [
    ("matching allow", [allow({"email": {"is": "alice@example.com"}})], ALICE, True),
    ("no matching allow", [allow({"email": {"is": "bob@example.com"}})], ALICE, False),
    ("empty document", [], ALICE, False),
    ("none document", None, ALICE, False),
    ("deny only", [{"deny": {"or": [REJECT]}}], ALICE, False),
    ("deny beats allow", [{"allow": {"or": [ACCEPT]}, "deny": {"or": [ACCEPT]}}], ALICE, False),
    (
        "deny in another rule vetoes",
        [allow(ACCEPT), {"deny": {"or": [{"groups": {"has": "banned"}}]}}],
        MALLORY,
        False,
    ),
    (
        "non-matching deny leaves allow",
        [allow(ACCEPT), {"deny": {"or": [{"groups": {"has": "banned"}}]}}],
        ALICE,
        True,
    ),
    (
        "any rule's allow suffices",
        [allow({"email": {"is": "bob@example.com"}}), allow({"domain": {"is": "example.com"}})],
        ALICE,
        True,
    ),
    (
        "operators within a block are OR'ed",
        [{"allow": {"and": [REJECT], "or": [{"user": {"is": "u-alice"}}]}}],
        ALICE,
        True,
    ),
    ("single rule as a mapping", {"allow": {"or": [ACCEPT]}}, ALICE, True),
]


@pytest.mark.parametrize(
    ("document", "identity", "expected"),
    [pytest.param(d, i, e, id=name) for name, d, i, e in PRECEDENCE],
)
def test_allow_deny_precedence(document: object, identity: Identity, expected: bool) -> None:
    assert allowed(document, identity) is expected


# ---- operators: and / or / not / nor -------------------------------------------------------

T, F = ACCEPT, REJECT

OPERATOR_TABLE = [
    ("and", [T], True),
    ("and", [T, T], True),
    ("and", [T, F], False),
    ("and", [F, F], False),
    ("or", [F], False),
    ("or", [F, T], True),
    ("or", [F, F], False),
    # Pomerium: `not` is true when every item is false ...
    ("not", [F], True),
    ("not", [T], False),
    ("not", [F, F], True),
    ("not", [T, F], False),
    ("not", [T, T], False),
    # ... and `nor` is true when at least one item is false.
    ("nor", [F], True),
    ("nor", [T], False),
    ("nor", [T, F], True),
    ("nor", [F, F], True),
    ("nor", [T, T], False),
]


@pytest.mark.parametrize(("op", "items", "expected"), OPERATOR_TABLE)
def test_operator_truth_table(op: str, items: list[object], expected: bool) -> None:
    assert allowed(allow(*items, op=op), ALICE) is expected


NESTED = [
    ("and[or[F,T], not[F]]", allow({"or": [F, T]}, {"not": [F]}), True),
    ("and[or[F,F], not[F]]", allow({"or": [F, F]}, {"not": [F]}), False),
    ("or[and[T,F], nor[T,F]]", allow({"and": [T, F]}, {"nor": [T, F]}, op="or"), True),
    ("not[not[T]]", allow({"not": [T]}, op="not"), True),
    ("not[nor[T,T]]", allow({"nor": [T, T]}, op="not"), True),
    (
        "domain and not group",
        allow({"domain": {"is": "example.com"}}, {"not": [{"groups": {"has": "contractors"}}]}),
        True,
    ),
    (
        "deep nesting",
        allow({"or": [{"and": [{"not": [F]}, {"nor": [T, F]}]}, F]}, {"and": [T]}),
        True,
    ),
]


@pytest.mark.parametrize(
    ("document", "expected"), [pytest.param(d, e, id=name) for name, d, e in NESTED]
)
def test_nested_operators(document: object, expected: bool) -> None:
    assert allowed(document, ALICE) is expected


# ---- domain --------------------------------------------------------------------------------

DOMAIN_CASES = [
    ("alice@example.com", True),
    ("A@EXAMPLE.COM", True),
    ("Alice@Example.Com", True),
    ("a@example.com.evil.org", False),
    ("a@evil.org@example.com", False),
    ("a@example.com@example.com", False),
    ("a@sub.example.com", False),
    ("a@notexample.com", False),
    ("a@example.co", False),
    ("a@example.com.", False),
    ("@example.com", False),
    ("example.com", False),
    ("a@", False),
    ("", False),
]


@pytest.mark.parametrize(("email", "expected"), DOMAIN_CASES)
def test_domain_is_exact(email: str, expected: bool) -> None:
    assert allowed(allow({"domain": {"is": "example.com"}}), ident(email=email)) is expected


@pytest.mark.parametrize("spec", ["example.com", {"is": "EXAMPLE.com"}, {"in": ["example.com"]}])
def test_domain_spec_forms(spec: object) -> None:
    assert allowed(allow({"domain": spec}), ident(email="a@Example.COM"))
    assert not allowed(allow({"domain": spec}), ident(email="a@evil.org"))


def test_domain_needs_a_signed_in_user() -> None:
    assert not allowed(allow({"domain": {"is": "example.com"}}), ANON)
    assert not allowed(allow({"domain": {"not": "evil.org"}}), ANON)


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("a@example.com", "example.com"),
        ("a@b@example.com", None),
        ("@example.com", None),
        ("a@", None),
        ("example.com", None),
        ("", None),
    ],
)
def test_email_domain(email: str, expected: str | None) -> None:
    assert email_domain(email) == expected


# ---- email and user ------------------------------------------------------------------------

EMAIL_CASES = [
    ({"is": "alice@example.com"}, "ALICE@Example.com", True),
    ({"is": "Alice@Example.COM"}, "alice@example.com", True),
    ("alice@example.com", "alice@example.com", True),
    ({"is": "alice@example.com"}, "alice@example.org", False),
    ({"in": ["bob@example.com", "ALICE@example.com"]}, "alice@example.com", True),
    ({"not_in": ["bob@example.com"]}, "alice@example.com", True),
    ({"not": "bob@example.com"}, "alice@example.com", True),
    ({"ends_with": "@example.com"}, "alice@example.com", True),
    ({"starts_with": "alice@"}, "ALICE@example.com", True),
    ({"contains": "ice@ex"}, "alice@example.com", True),
    # more than one `@` is not an email: nothing matches it, not even a negative matcher
    ({"ends_with": "@example.com"}, "mallory@evil.org@example.com", False),
    ({"not": "bob@example.com"}, "mallory@evil.org@example.com", False),
    ({"not_in": ["bob@example.com"]}, "a@b@example.com", False),
    ({"is": "a@b@example.com"}, "a@b@example.com", False),
    ({"contains": "@"}, "no-at-sign", False),
]


@pytest.mark.parametrize(("spec", "email", "expected"), EMAIL_CASES)
def test_email_criterion(spec: object, email: str, expected: bool) -> None:
    assert allowed(allow({"email": spec}), ident(email=email)) is expected


def test_user_is_case_sensitive() -> None:
    assert allowed(allow({"user": {"is": "u-alice"}}), ALICE)
    assert not allowed(allow({"user": {"is": "U-ALICE"}}), ALICE)
    assert not allowed(allow({"user": {"is": "u-alice"}}), ANON)


# ---- groups --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ()),
        ("", ()),
        ("admins", ("admins",)),
        (["admins", "devs"], ("admins", "devs")),
        (("admins",), ("admins",)),
        (["admins", None, "", "devs"], ("admins", "devs")),
        ([1, "x"], ("1", "x")),
        (42, ()),
        ({"admins": True}, ()),
    ],
)
def test_normalize_groups(raw: object, expected: tuple[str, ...]) -> None:
    assert normalize_groups(raw) == expected


GROUP_CASES = [
    # (criterion spec, groups claim as the IdP sent it, expected)
    ({"has": "admins"}, None, False),
    ({"has": "admins"}, "admins", True),
    ({"has": "admins"}, ["devs", "admins"], True),
    ({"has": "admins"}, ["devs"], False),
    ({"has": "admins"}, ["Admins"], False),
    ("admins", ["admins"], True),
    ({"is": ["admins", "devs"]}, ["devs", "admins"], True),
    ({"is": ["admins", "devs"]}, ["admins"], False),
    ({"is": ["admins"]}, ["admins", "devs"], False),
    ({"is": "admins"}, "admins", True),
    ({"exclude": ["contractors"]}, None, True),
    ({"exclude": ["contractors"]}, ["admins"], True),
    ({"exclude": ["contractors"]}, "contractors", False),
    ({"exclude": ["contractors", "interns"]}, ["admins", "interns"], False),
]


@pytest.mark.parametrize(("spec", "groups", "expected"), GROUP_CASES)
def test_groups_criterion(spec: object, groups: object, expected: bool) -> None:
    assert allowed(allow({"groups": spec}), ident(groups=groups)) is expected


def test_groups_need_a_signed_in_user() -> None:
    assert not allowed(allow({"groups": {"exclude": ["contractors"]}}), ANON)


# ---- claim/<name> --------------------------------------------------------------------------

CLAIM_CASES = [
    # (criterion, spec, claims, expected)
    ("claim/department", "engineering", {"department": "engineering"}, True),
    ("claim/department", "engineering", {"department": "Engineering"}, False),
    ("claim/department", "engineering", {"department": "sales"}, False),
    ("claim/department", "engineering", {}, False),
    ("claim/department", ["sales", "engineering"], {"department": "engineering"}, True),
    ("claim/roles", "deploy", {"roles": ["read", "deploy"]}, True),
    ("claim/roles", ["admin", "deploy"], {"roles": ["read", "deploy"]}, True),
    ("claim/roles", "admin", {"roles": ["read", "deploy"]}, False),
    ("claim/roles", "admin", {"roles": []}, False),
    ("claim/email_verified", True, {"email_verified": True}, True),
    ("claim/email_verified", True, {"email_verified": False}, False),
    ("claim/email_verified", True, {"email_verified": 1}, False),  # JSON: true != 1
    ("claim/email_verified", True, {"email_verified": "true"}, False),
    ("claim/level", 1, {"level": True}, False),
    ("claim/level", 0, {"level": False}, False),
    ("claim/level", 3, {"level": 3}, True),
    ("claim/level", 3, {"level": 3.0}, True),  # one JSON number
    ("claim/level", 3, {"level": "3"}, False),
    ("claim/level", [1, 2, 3], {"level": 2}, True),
    ("claim/level", 3, {"level": [1, 3]}, True),
]


@pytest.mark.parametrize(("criterion", "spec", "claims", "expected"), CLAIM_CASES)
def test_claim_criterion(
    criterion: str, spec: object, claims: dict[str, Any], expected: bool
) -> None:
    assert allowed(allow({criterion: spec}), ident(claims=claims)) is expected


def test_claim_needs_a_signed_in_user() -> None:
    assert not allowed(allow({"claim/department": "engineering"}), ANON)


# ---- accept / reject / authenticated_user --------------------------------------------------


@pytest.mark.parametrize(
    ("criterion", "identity", "expected"),
    [
        ("accept", ANON, True),
        ("accept", ALICE, True),
        ("reject", ANON, False),
        ("reject", ALICE, False),
        ("authenticated_user", ANON, False),
        ("authenticated_user", ALICE, True),
        ("authenticated_user", ident(email="", user="u-no-email"), True),
    ],
)
def test_flags(criterion: str, identity: Identity | None, expected: bool) -> None:
    assert allowed(allow({criterion: True}), identity) is expected


@pytest.mark.parametrize("criterion", ["accept", "reject", "authenticated_user"])
@pytest.mark.parametrize("value", [False, 1, "true", None])
def test_flags_take_only_true(criterion: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"`{criterion}` takes the value true"):
        compile_policy(allow({criterion: value}))


# ---- route sugar ---------------------------------------------------------------------------


def route_policy(**options: Any) -> Any:
    options.setdefault("policy", None)
    options.setdefault("allow_public_unauthenticated_access", False)
    options.setdefault("allow_any_authenticated_user", False)
    return compile_policy(route_policy_document(**options))


def can(policy: Any, identity: Identity | None) -> bool:
    return bool(policy.allowed(PolicyInput(identity=identity)))


def test_public_route() -> None:
    policy = route_policy(allow_public_unauthenticated_access=True)
    assert policy.needs_identity() is False
    assert can(policy, ANON)
    assert can(policy, MALLORY)


def test_any_authenticated_user() -> None:
    policy = route_policy(allow_any_authenticated_user=True)
    assert policy.needs_identity() is True
    assert not can(policy, ANON)
    assert can(policy, MALLORY)


def test_allowed_domains_users_groups() -> None:
    policy = route_policy(
        allowed_domains=["example.com"], allowed_users=["bob@corp.test"], allowed_groups=["ops"]
    )
    assert policy.needs_identity() is True
    assert not can(policy, ANON)
    assert can(policy, ident(email="A@Example.com"))
    assert can(policy, ident(email="BOB@corp.test"))
    assert can(policy, ident(email="carol@corp.test", groups=["ops"]))
    assert not can(policy, ident(email="carol@corp.test", groups=["dev"]))
    assert not can(policy, ident(email="a@example.com.evil.org"))
    assert not can(policy, ident(email="a@evil.org@example.com"))


def test_no_policy_at_all_lets_nobody_in() -> None:
    policy = route_policy()
    assert policy.needs_identity() is True
    assert not can(policy, ANON)
    assert not can(policy, ALICE)


def test_sugar_adds_to_an_explicit_policy() -> None:
    policy = route_policy(
        policy=[
            allow({"domain": {"is": "example.com"}}),
            {"deny": {"or": [{"groups": {"has": "banned"}}]}},
        ],
        allowed_users=["bob@corp.test"],
    )
    assert can(policy, ALICE)
    assert can(policy, ident(email="bob@corp.test"))
    assert not can(policy, ident(email="bob@corp.test", groups=["banned"]))
    assert not can(policy, ident(email="carol@corp.test"))


def test_policy_as_a_single_mapping() -> None:
    policy = route_policy(policy=allow({"email": {"is": "alice@example.com"}}))
    assert can(policy, ALICE)
    assert not can(policy, MALLORY)


def test_needs_identity_for_a_policy_with_a_deny() -> None:
    policy = compile_policy(
        [allow(ACCEPT), {"deny": {"or": [{"not": [{"authenticated_user": True}]}]}}]
    )
    assert policy.needs_identity() is True
    assert can(policy, ALICE)
    assert not can(policy, ANON)


# ---- errors name the bad part --------------------------------------------------------------

ERRORS = [
    (
        "unknown criterion",
        allow({"emial": {"is": "a@b.c"}}),
        "policy.allow.and[0].emial",
        "unknown criterion `emial`",
    ),
    (
        "unknown criterion in a nested operator",
        allow({"or": [{"nope": True}]}),
        "policy.allow.and[0].or[0].nope",
        "unknown criterion `nope`",
    ),
    (
        "unknown matcher",
        allow({"email": {"matches": "a@b.c"}}),
        "policy.allow.and[0].email",
        "unknown matcher `matches`",
    ),
    (
        "unknown list matcher",
        allow({"groups": {"contains": "admins"}}),
        "policy.allow.and[0].groups",
        "unknown list matcher `contains`",
    ),
    (
        "unknown operator",
        {"allow": {"xor": [ACCEPT]}},
        "policy.allow.xor",
        "unknown operator `xor`",
    ),
    ("unknown action", {"permit": {"or": [ACCEPT]}}, "policy.permit", "unknown action `permit`"),
    ("empty operator", {"allow": {"and": []}}, "policy.allow.and", "non-empty list"),
    ("operator not a list", {"allow": {"and": ACCEPT}}, "policy.allow.and", "non-empty list"),
    ("empty block", {"allow": {}}, "policy.allow", "expected operators"),
    ("empty rule", [{}], "policy[0]", "allow:"),
    ("claim without name", allow({"claim/": "x"}), "policy.allow.and[0]", "claim name"),
    (
        "claim with an unknown list matcher",
        allow({"claim/x": {"matches": "y"}}),
        "policy.allow.and[0].claim/x",
        "unknown list matcher `matches`",
    ),
    (
        "claim with a nested mapping",
        allow({"claim/x": {"has": {"a": 1}}}),
        "policy.allow.and[0].claim/x",
        "value",
    ),
    (
        "two criteria in one item",
        allow({"accept": True, "reject": True}),
        "policy.allow.and[0]",
        "one",
    ),
    (
        "empty matcher",
        allow({"email": {}}),
        "policy.allow.and[0].email",
        "empty matcher",
    ),
    ("empty in list", allow({"email": {"in": []}}), "policy.allow.and[0].email", "non-empty list"),
    (
        "has with a list",
        allow({"groups": {"has": ["a"]}}),
        "policy.allow.and[0].groups",
        "single string",
    ),
    (
        "non-string value",
        allow({"email": {"is": ["a"]}}),
        "policy.allow.and[0].email",
        "expected a string",
    ),
]


@pytest.mark.parametrize(
    ("document", "key", "text"), [pytest.param(d, k, t, id=n) for n, d, k, t in ERRORS]
)
def test_bad_policy_names_the_bad_part(document: object, key: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_policy(document)
    assert info.value.key == key
    assert text in str(info.value)


def test_error_location_uses_where() -> None:
    with pytest.raises(ConfigError) as info:
        compile_policy([allow({"domian": "example.com"})], where="routes[3].policy")
    assert info.value.key == "routes[3].policy[0].allow.and[0].domian"
    assert "unknown criterion `domian`" in str(info.value)
    assert "domain" in info.value.fix  # the fix lists the known criteria


# ---- properties ----------------------------------------------------------------------------

CRITERIA = [
    ACCEPT,
    REJECT,
    {"authenticated_user": True},
    {"email": {"is": "alice@example.com"}},
    {"email": {"ends_with": "@example.com"}},
    {"domain": {"is": "example.com"}},
    {"domain": {"not": "evil.org"}},
    {"user": {"is": "u1"}},
    {"groups": {"has": "admins"}},
    {"groups": {"exclude": ["contractors"]}},
    {"groups": {"is": ["admins", "devs"]}},
    {"claim/department": "engineering"},
    {"claim/email_verified": True},
]

identities = st.one_of(
    st.none(),
    st.builds(
        ident,
        email=st.sampled_from(
            [
                "alice@example.com",
                "ALICE@EXAMPLE.COM",
                "bob@example.com",
                "eve@evil.org",
                "a@sub.example.com",
                "a@example.com.evil.org",
                "x@evil.org@example.com",
                "",
            ]
        ),
        user=st.sampled_from(["u1", "u2", "U1"]),
        groups=st.one_of(
            st.none(),
            st.sampled_from(["admins", "contractors"]),
            st.lists(st.sampled_from(["admins", "devs", "contractors"]), unique=True),
        ),
        claims=st.fixed_dictionaries(
            {},
            optional={
                "department": st.sampled_from(["engineering", "sales", ["engineering"]]),
                "email_verified": st.sampled_from([True, False, 1, "true"]),
            },
        ),
    ),
)
criteria = st.sampled_from(CRITERIA)


def holds(item: object, identity: Identity | None) -> bool:
    return allowed(allow(item), identity)


@settings(max_examples=200, deadline=None)
@given(a=criteria, b=criteria, identity=identities)
def test_operator_laws(a: object, b: object, identity: Identity | None) -> None:
    va, vb = holds(a, identity), holds(b, identity)
    assert allowed(allow(a, op="not"), identity) is (not va)
    assert allowed(allow(a, op="nor"), identity) is (not va)
    assert allowed(allow(a, b, op="not"), identity) is (not va and not vb)
    assert allowed(allow(a, b, op="nor"), identity) is (not (va and vb))
    assert allowed(allow(a, b), identity) is (va and vb)
    assert allowed(allow(a, b, op="or"), identity) is (va or vb)
    # commutativity
    for op in ("and", "or", "not", "nor"):
        assert allowed(allow(a, b, op=op), identity) is allowed(allow(b, a, op=op), identity)
    # double negation and De Morgan, written as nested operators
    assert allowed(allow({"not": [a]}, op="not"), identity) is va
    assert allowed(allow(a, b, op="not"), identity) is allowed(
        allow({"not": [a]}, {"not": [b]}), identity
    )
    assert allowed(allow(a, b, op="nor"), identity) is allowed(
        allow({"not": [a]}, {"not": [b]}, op="or"), identity
    )
    # a deny of B on top of an allow of A
    assert compile_policy([allow(a), {"deny": {"or": [b]}}]).allowed(
        PolicyInput(identity=identity)
    ) is (va and not vb)


def _reference(expr: object, identity: Identity | None) -> bool:
    """Pomerium's semantics, evaluated directly over the tree."""
    ((name, value),) = expr.items()  # type: ignore[union-attr]
    if name in ("and", "or", "not", "nor"):
        results = [_reference(item, identity) for item in value]
        return {
            "and": all(results),
            "or": any(results),
            "not": not any(results),
            "nor": not all(results),
        }[name]
    return holds(expr, identity)


expressions = st.recursive(
    criteria,
    lambda children: st.builds(
        lambda op, items: {op: items},
        st.sampled_from(["and", "or", "not", "nor"]),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(expr=expressions, identity=identities)
def test_nested_expressions_match_reference(
    expr: dict[str, Any], identity: Identity | None
) -> None:
    assert allowed(allow(expr), identity) is _reference(expr, identity)


_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
domains = st.lists(_label, min_size=1, max_size=3).map(".".join)
locals_ = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-",
    min_size=1,
    max_size=20,
)


def _recase(text: str, flips: list[bool]) -> str:
    return "".join(
        c.upper() if flip else c for c, flip in zip(text, flips + [False] * len(text), strict=False)
    )


@settings(max_examples=200, deadline=None)
@given(
    local=locals_,
    domain=domains,
    extra=_label,
    flips=st.lists(st.booleans(), max_size=40),
)
def test_domain_matcher_property(local: str, domain: str, extra: str, flips: list[bool]) -> None:
    policy = compile_policy(allow({"domain": {"is": domain}}))

    def ok(email: str) -> bool:
        return policy.allowed(PolicyInput(identity=ident(email=email)))

    assert ok(f"{local}@{domain}")
    assert ok(f"{local}@{_recase(domain, flips)}")
    assert ok(f"{local}@{domain.upper()}")
    assert not ok(f"{local}@{domain}.{extra}")
    assert not ok(f"{local}@{extra}.{domain}")
    assert not ok(f"{local}@{domain}@{extra}")
    assert not ok(f"{extra}@{domain}@{domain}")
    assert not ok(f"{local}@{extra}@{domain}")
    assert not ok(f"@{domain}")
    assert not ok(domain)
    # the spec itself is case-blind too
    upper = compile_policy(allow({"domain": {"is": domain.upper()}}))
    assert upper.allowed(PolicyInput(identity=ident(email=f"{local}@{domain}")))


@settings(max_examples=200, deadline=None)
@given(local=locals_, domain=domains, flips=st.lists(st.booleans(), max_size=40))
def test_email_matcher_is_case_blind_and_single_at(
    local: str, domain: str, flips: list[bool]
) -> None:
    email = f"{local}@{domain}"
    policy = compile_policy(allow({"email": {"is": email}}))

    def ok(value: str) -> bool:
        return policy.allowed(PolicyInput(identity=ident(email=value)))

    assert ok(email)
    assert ok(_recase(email, flips))
    assert not ok(f"x{email}")
    assert not ok(f"{email}.x")
    assert not ok(f"{local}@{email}")
