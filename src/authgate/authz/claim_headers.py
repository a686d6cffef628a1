"""What a route tells the app besides the assertion (Pomerium's keys): `jwt_claims_headers`
(a header per listed claim, none unless listed), `jwt_groups_filter` (the groups the app may
see) and `${pomerium.*}` values in `set_request_headers`."""

import json
import re
from collections.abc import Iterable
from typing import Any

from authgate.config.pomerium_options import SUBSTITUTION
from authgate.policy import Identity

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def header_value(value: str) -> str:
    """IdP claims may hold CR/LF (Envoy would refuse the whole answer, and the text after it
    reads like another header): keep only what comes before the first control character."""
    return value if value.isprintable() else _CONTROL.split(value, 1)[0]


def filtered_groups(groups: tuple[str, ...], allowed: frozenset[str] | None) -> tuple[str, ...]:
    """The groups the app sees: all, or only those in the route's `jwt_groups_filter`."""
    return groups if allowed is None else tuple(g for g in groups if g in allowed)


def claim_value(identity: Identity, claim: str, groups: tuple[str, ...]) -> Any:
    if claim == "groups":
        return list(groups)
    if claim in ("email", "name", "user"):
        return getattr(identity, claim)
    if claim == "sub":
        return identity.user
    return identity.claims.get(claim)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        # A comma inside one item would read as two: such an item is left out (the assertion
        # carries it intact).
        items = [_as_text(v) for v in value]
        return ",".join(i for i in items if i is not None and i.isprintable() and "," not in i)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return header_value(str(value))


def claim_headers(
    pairs: Iterable[tuple[str, str]], identity: Identity, groups: tuple[str, ...]
) -> list[tuple[str, str]]:
    """(header, value) for each configured (header, claim) the identity has."""
    out = []
    for header, claim in pairs:
        text = _as_text(claim_value(identity, claim, groups))
        if text is not None:
            out.append((header, text))
    return out


def substitute(value: str, tokens: dict[str, str]) -> str:
    """`value` with each `${pomerium.<name>}` replaced (an unknown or missing token: empty)."""
    return SUBSTITUTION.sub(lambda m: tokens.get(m.group(1), ""), value)
