"""A route's added claims: IdP groups as app roles, copies of other claims."""

import pytest
from pydantic import ValidationError

from authgate.authz.app_claims import added_claims
from authgate.config.schema import Route
from authgate.policy import Identity

ALICE = Identity(
    user="u-alice",
    email="alice@example.com",
    name="Alice",
    groups=("jenkins-admins", "devs", "other"),
    claims={"department": "ops", "level": 3},
)


def route(claims: dict[str, object]) -> Route:
    return Route.model_validate(
        {"from": "https://jenkins.test", "to": "http://127.0.0.1:1", "assertion_claims": claims}
    )


def test_groups_become_roles_in_order_without_repeats() -> None:
    r = route(
        {
            "roles": {
                "from": "groups",
                "map": {"jenkins-admins": ["admin", "reader"], "devs": "reader", "nobody": "x"},
            }
        }
    )
    assert added_claims(r, ALICE) == {"roles": ["admin", "reader"]}


def test_nothing_maps_is_an_empty_list_not_a_missing_claim() -> None:
    r = route({"roles": {"from": "groups", "map": {"ghosts": "admin"}}})
    assert added_claims(r, ALICE) == {"roles": []}


def test_a_claim_is_copied_and_a_scalar_can_map() -> None:
    r = route(
        {
            "dept": {"from": "department"},
            "tier": {"from": "level", "map": {"3": "gold"}},
            "mail": {"from": "email"},
            "missing": {"from": "not-there"},
        }
    )
    assert added_claims(r, ALICE) == {"dept": "ops", "tier": ["gold"], "mail": "alice@example.com"}


@pytest.mark.parametrize("name", ["groups", "email", "sub", "aud", "exp", "sid"])
def test_claims_every_assertion_has_cannot_be_replaced(name: str) -> None:
    with pytest.raises(ValidationError, match="every assertion has"):
        route({name: {"from": "groups"}})


def test_a_route_without_added_claims_adds_none() -> None:
    assert added_claims(route({}), ALICE) == {}


def test_the_assertion_carries_the_added_claims_and_follows_changed_groups() -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from authgate.assertion import AssertionSigner

    key = ec.generate_private_key(ec.SECP256R1())
    signer = AssertionSigner(key, "authenticate.test")
    r = route({"roles": {"from": "groups", "map": {"jenkins-admins": "admin"}}})

    def claims(identity: Identity) -> dict[str, object]:
        token, _ = signer.signed_for(
            sid="s1", audience="jenkins.test", user=identity.user, email=identity.email,
            name=identity.name, groups=identity.groups, extra=added_claims(r, identity),
        )
        return dict(jwt.decode(token, key.public_key(), algorithms=["ES256"],
                               audience="jenkins.test"))

    first = claims(ALICE)
    assert first["roles"] == ["admin"] and first["groups"] == list(ALICE.groups)
    # the IdP took `jenkins-admins` away (a refresh): the next assertion says so at once,
    # not when the old one would have been re-signed
    demoted = Identity(ALICE.user, ALICE.email, ALICE.name, ("devs",), ALICE.claims)
    second = claims(demoted)
    assert second["roles"] == [] and second["groups"] == ["devs"]
    # the same identity again: the same assertion is reused
    assert claims(demoted)["jti"] == second["jti"]
