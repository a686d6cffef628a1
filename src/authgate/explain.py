"""`authgate explain`: which route a URL reaches and what its policy decides, and why.

Route selection mirrors the Envoy configuration authgate generates: the virtual host by `Host`
(default port optional), then authgate's own `/.pomerium/` and `/.well-known/pomerium/` paths,
then the host's routes in config order, first match wins (`path` exact, `prefix`, or `regex`
matching the whole path), on the path as Envoy normalises it (`//` merged, `.` and `..` —
also as `%2e` — resolved, the query ignored; an escaped slash or backslash is refused).
This is for the command line only: on the request path authgate never re-matches URLs, it
reads the route id Envoy passes.
"""

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from authgate.config import RouteRuntime, RuntimeConfig
from authgate.config.schema import compile_re2ish, netloc_of
from authgate.errors import ConfigError
from authgate.policy import Identity, PolicyInput, compile_route_policy
from authgate.session.model import Session

INTERNAL_PREFIXES = ("/.pomerium/", "/.well-known/pomerium/")


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


def escaped_slash(path: str) -> bool:
    """Envoy refuses paths with %2F or %5C (path_with_escaped_slashes_action: REJECT_REQUEST)."""
    lowered = path.partition("?")[0].lower()
    return "%2f" in lowered or "%5c" in lowered


def normalize_path(path: str) -> str:
    """What Envoy routes on (normalize_path + merge_slashes): no query, `//` merged, dot
    segments — also written `%2e` — resolved (RFC 3986 5.2.4). Other %-escapes stay."""
    path = path.partition("?")[0].partition("#")[0] or "/"
    if not path.startswith("/"):
        path = "/" + path
    segments: list[str] = []
    parts = path.split("/")[1:]
    for index, raw in enumerate(parts):
        last = index == len(parts) - 1
        dots = raw.lower().replace("%2e", ".")
        segment = dots if dots in (".", "..") else raw
        if segment == "..":
            if segments:
                segments.pop()
            if last:
                segments.append("")
        elif segment == ".":
            if last:
                segments.append("")
        elif segment or last:
            segments.append(segment)
    return "/" + "/".join(segments)


def route_matches(rt: RouteRuntime, path: str) -> bool:
    kind, value = rt.route.match_key
    if kind == "path":
        return path == value
    if kind == "regex":
        return compile_re2ish(value).fullmatch(path) is not None
    return path.startswith(value)


def describe_match(rt: RouteRuntime) -> str:
    kind, value = rt.route.match_key
    return f"{rt.origin}, {kind} {value}"


def select_route(cfg: RuntimeConfig, url: str) -> tuple[RouteRuntime | None, str, str]:
    """(route, kind, note): kind is "route", "internal", "authenticate", "refused" or "none"."""
    parts = urlsplit(url)
    scheme = "https" if cfg.settings.tls else "http"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("--url", f"{url!r} is not an absolute http(s) URL")
    if parts.scheme != scheme:
        return None, "none", f"authgate listens for {scheme}://, not {parts.scheme}://"
    netloc = netloc_of(url)
    if escaped_slash(parts.path):
        return None, "refused", "Envoy refuses a path with an escaped slash or backslash"
    path = normalize_path(parts.path)
    if netloc == cfg.authenticate_netloc:
        return None, "authenticate", f"{cfg.authenticate_origin}, the authenticate service"
    candidates = [rt for rt in cfg.routes if rt.netloc == netloc]
    if not candidates:
        return None, "none", f"no route has the host {netloc}"
    if path.startswith(INTERNAL_PREFIXES):
        return candidates[0], "internal", f"{candidates[0].origin}, authgate's {path}"
    for rt in candidates:
        if route_matches(rt, path):
            return rt, "route", describe_match(rt)
    return None, "none", f"no route of {netloc} matches {path}"


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
    rt, kind, note = select_route(cfg, url)
    if kind == "none":
        return ExplainResult(None, None, note, "not found", note, "404 from Envoy")
    if kind == "refused":
        return ExplainResult(None, None, note, "refused", note, "400 from Envoy")
    if kind == "authenticate":
        return ExplainResult(
            None, None, note, "internal",
            "the authenticate service's paths are answered by authgate itself, before any "
            "policy", "answered by authgate",
        )
    assert rt is not None
    key = f"routes[{rt.index}]"
    if kind == "internal":
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
        response = f"forwarded to {', '.join(route.to)}"
    elif identity is None:
        response = "302 to sign in (browsers), 401 (API clients)"
    else:
        response = "403"
    return ExplainResult(
        key, rt.id, note, "allow" if why.allowed else "deny", why.reason, response
    )
