"""`authgate explain`: which route a URL reaches and what its policy decides, and why.

Route selection is authgate.routing's, the same matcher authz uses behind an Envoy the user
wrote (the generated Envoy passes authz the route id instead).
"""

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from authgate.config import RuntimeConfig
from authgate.config.schema import netloc_of
from authgate.contract import RouteKind
from authgate.errors import ConfigError
from authgate.policy import Identity, PolicyInput, compile_route_policy
from authgate.routing import Selection, normalize_path, select
from authgate.session.model import Session


@dataclass(frozen=True)
class ExplainResult:
    route: str | None  # "routes[0]" or None
    route_id: str | None
    match: str  # "https://jenkins.test:8443, prefix /" or why nothing matched
    decision: str  # "allow" | "deny" | "internal" | "not found" | "refused"
    reason: str
    response: str  # what the client gets

    @property
    def exit_code(self) -> int:
        return 0 if self.decision in ("allow", "internal") else 1

    def text(self) -> str:
        route = f"{self.route} ({self.match})" if self.route else f"none ({self.match})"
        return (
            f"route: {route}\ndecision: {self.decision}\nreason: {self.reason}\n"
            f"response: {self.response}\n"
        )

    def json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def select_route(cfg: RuntimeConfig, url: str) -> Selection:
    """The route a URL reaches: the shared matcher (authgate.routing) on the URL's parts."""
    parts = urlsplit(url)
    scheme = "https" if cfg.settings.tls else "http"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("--url", f"{url!r} is not an absolute http(s) URL")
    if parts.scheme != scheme:
        return Selection(None, None, f"authgate listens for {scheme}://, not {parts.scheme}://")
    return select(cfg, netloc_of(url), parts.path or "/")


def identity_from_claims(claims: object) -> Identity:
    if not isinstance(claims, dict):
        raise ConfigError("--claims", "must be a JSON object of ID-token claims")
    return Session.from_claims(claims, lifetime_s=0).identity


def load_claims(path: str) -> Identity:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError("--claims", f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            "--claims", f"{path} is not JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    return identity_from_claims(data)


def parse_at(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            "--at", f"{text!r} is not an ISO-8601 time", "write e.g. 2026-11-22T10:00:00Z"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise ConfigError("--header", f"{value!r} is not `Name: value`")
        headers[name.strip().lower()] = rest.strip()
    return headers


def explain_request(
    cfg: RuntimeConfig,
    url: str,
    *,
    method: str = "GET",
    identity: Identity | None = None,
    at: datetime | None = None,
    source_ip: str = "",
    headers: dict[str, str] | None = None,
) -> ExplainResult:
    chosen = select_route(cfg, url)
    rt, kind, note = chosen.route, chosen.kind, chosen.note
    if chosen.refused:
        return ExplainResult(None, None, note, "refused", note, "400 from Envoy")
    if kind is None:
        return ExplainResult(None, None, note, "not found", note, "404 from Envoy")
    if kind == RouteKind.AUTHENTICATE:
        return ExplainResult(
            None, None, note, "internal",
            "the authenticate service's paths are answered by authgate itself, before any "
            "policy", "answered by authgate",
        )
    assert rt is not None
    key = f"routes[{rt.index}]"
    if kind == RouteKind.INTERNAL:
        return ExplainResult(
            key, rt.id, note, "internal",
            "/.pomerium/ and /.well-known/pomerium/ are answered by authgate itself, before "
            "any policy", "answered by authgate",
        )
    route = rt.route
    policy = compile_route_policy(
        policy=route.policy,
        allow_public_unauthenticated_access=route.allow_public_unauthenticated_access,
        allow_any_authenticated_user=route.allow_any_authenticated_user,
        allowed_users=route.allowed_users,
        allowed_domains=route.allowed_domains,
        allowed_groups=route.allowed_groups,
        where=key,
    )
    inp = PolicyInput(
        identity=identity,
        method=method.upper(),
        path=normalize_path(urlsplit(url).path),
        source_ip=source_ip,
        now=at or datetime.now(UTC),
        headers=headers or {},
    )
    why = policy.explain(inp)
    if why.allowed:
        response = f"forwarded to {route.destination}"
    elif identity is None:
        response = "302 to sign in (browsers), 401 (API clients)"
    else:
        response = "403"
    return ExplainResult(
        key, rt.id, note, "allow" if why.allowed else "deny", why.reason, response
    )
