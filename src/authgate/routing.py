"""The one route matcher: which route a (host, path) reaches, by the rules of the Envoy config
authgate generates.

Used by `authgate explain`, and by authz when a Check carries no route id (behind an Envoy the
user wrote). A second matcher that disagrees with Envoy is a policy bypass, so this one is tested
against Envoy's own matching (tests/integration/test_routing_vs_envoy.py).

The generated Envoy: virtual hosts by `Host` (case-insensitive; a route host without a port also
answers with the default port), then authgate's `/.pomerium/` and `/.well-known/pomerium/` paths,
then the host's routes in config order, first match wins (`path` exact, `prefix`, or `regex`
matching the whole path), on the path as Envoy normalises it (`//` merged, `.` and `..` — also
as `%2e` — resolved, the query ignored; an escaped slash or backslash is refused).
"""

from dataclasses import dataclass

from authgate.config import RouteRuntime, RuntimeConfig
from authgate.config.schema import compile_re2ish
from authgate.contract import RouteKind, is_internal_path


@dataclass(frozen=True, slots=True)
class Selection:
    kind: RouteKind | None  # None: nothing matches (Envoy's 404), or the path is refused
    route: RouteRuntime | None  # the route (its host's first route for INTERNAL)
    note: str  # how it matched, or why nothing did
    refused: bool = False  # a path Envoy refuses (400) before routing


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


def not_normalized(path: str) -> str | None:
    """Why Envoy (as authgate configures it) would have changed or refused this path, or None.

    Behind an Envoy the user wrote, authz cannot know whether it normalised paths, so it refuses
    every path that normalisation would change: the policy then sees what the app sees."""
    only = path.partition("?")[0]
    if escaped_slash(only):
        return "an escaped slash or backslash (%2F, %5C) in the path"
    if "\\" in only:
        return "a backslash in the path"
    if normalize_path(only) != only:
        return "dot segments, `//` or a fragment in the path"
    return None


def host_matches(netloc: str, host: str, default_port: int) -> bool:
    """`host` (lower-cased Host header) names the route host `netloc` as Envoy's domains do."""
    if host == netloc:
        return True
    return not netloc.rpartition(":")[2].isdigit() and host == f"{netloc}:{default_port}"


def domains_for(netloc: str, default_port: int) -> list[str]:
    """Envoy virtual-host domains for a route host: the same rule as `host_matches`."""
    if netloc.rpartition(":")[2].isdigit():
        return [netloc]
    return [netloc, f"{netloc}:{default_port}"]


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


def select(cfg: RuntimeConfig, host: str, path: str) -> Selection:
    """The route Envoy's generated config picks for `Host: host` and request path `path`."""
    # Envoy lower-cases ASCII only; config hosts are ASCII, so another Host matches nothing.
    host = host.lower() if host.isascii() else host
    if escaped_slash(path):
        return Selection(None, None, "Envoy refuses a path with an escaped slash", refused=True)
    default_port = 443 if cfg.settings.tls else 80
    if host_matches(cfg.authenticate_netloc, host, default_port):
        return Selection(
            RouteKind.AUTHENTICATE, None, f"{cfg.authenticate_origin}, the authenticate service"
        )
    candidates = [rt for rt in cfg.routes if host_matches(rt.netloc, host, default_port)]
    if not candidates:
        return Selection(None, None, f"no route has the host {host}")
    normalized = normalize_path(path)
    if is_internal_path(normalized):
        first = candidates[0]
        return Selection(RouteKind.INTERNAL, first, f"{first.origin}, authgate's {normalized}")
    for rt in candidates:
        if route_matches(rt, normalized):
            return Selection(RouteKind.ROUTE, rt, describe_match(rt))
    return Selection(None, None, f"no route of {candidates[0].netloc} matches {normalized}")
