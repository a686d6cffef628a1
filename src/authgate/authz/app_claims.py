"""Claims a route adds to its assertion from the session's (`assertion_claims`): what the app
needs in its own terms, e.g. IdP groups as Jenkins roles."""

from typing import Any

from authgate.config.schema import Route
from authgate.policy import Identity


def _source(identity: Identity, name: str) -> Any:
    if name == "groups":
        return list(identity.groups)
    if name in ("email", "name", "user"):
        return getattr(identity, name)
    if name == "sub":
        return identity.user
    return identity.claims.get(name)


def added_claims(route: Route, identity: Identity) -> dict[str, Any]:
    """The route's extra claims for this identity (empty when the route adds none)."""
    added: dict[str, Any] = {}
    for name, spec in route.assertion_claims.items():
        value = _source(identity, spec.from_)
        if spec.map is None:
            if value is not None:
                added[name] = value
            continue
        found = value if isinstance(value, list) else [] if value is None else [value]
        mapped: list[str] = []
        for item in found:
            for role in spec.map.get(str(item), ()):
                if role not in mapped:
                    mapped.append(role)
        added[name] = mapped  # always a list, empty when nothing maps
    return added
