"""What a policy decides on: the identity (if any) and the request, built once per Check."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def _no_headers() -> Mapping[str, str]:
    return NO_HEADERS


def normalize_groups(value: object) -> tuple[str, ...]:
    """IdPs send groups missing, as a list, or as a single string; always get a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value if item is not None and item != "")
    return ()


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified user behind a session."""

    user: str
    email: str
    name: str = ""
    groups: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """One request as the policy sees it.

    `headers` has lower-case names (as Envoy sends them); only `cors_preflight` reads it
    (`origin`, `access-control-request-method`). `now` is the request time; time criteria use
    the current UTC time when it is None.
    """

    identity: Identity | None
    method: str = "GET"
    path: str = "/"
    source_ip: str = ""
    now: datetime | None = None
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    client_certificate: str = ""  # PEM, verified by Envoy (downstream_mtls); "" without one
