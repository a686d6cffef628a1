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

import re
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
    """Envoy refuses paths with %2F or %5C (path_with_escaped_slashes_action: REJECT_REQUEST).
    It looks at the path as sent, before normalising it, and not at the query."""
    lowered = path.partition("?")[0].lower()
    return "%2f" in lowered or "%5c" in lowered


def _envoy_refuses(target: str) -> str | None:
    """Why the generated Envoy answers 400 to this request-target (path and query), or None."""
    only = target.partition("?")[0]
    if not target.startswith("/"):
        return "a request path that does not start with /"
    if any(not "!" <= char <= "~" for char in target):
        return "a space, control or non-ASCII character in the request path"
    if "#" in target:
        return "a fragment (#) in the request path"
    if escaped_slash(only):
        return "an escaped slash or backslash (%2F, %5C) in the path"
    if "%00" in only:
        return "an escaped NUL (%00) in the path"
    return None


# A character `_canonicalize` would change, or a `.`/`..` segment it would resolve.
_CANONICAL_AS_IS = re.compile(r"[^-!$&'()*+,./0-9:;=@A-Z\[\]_a-z~]|/\.\.?(?:/|$)")


def _canonicalize(path: str) -> str:
    """Envoy's `normalize_path` (its snapshot of Chromium's URL path canonicaliser), replayed
    character for character on a query-less path: backslash -> `/`; `%XX` of an unreserved
    character (ALPHA, DIGIT, `-`, `_`, `~`) decoded, other escapes kept as written (an invalid
    `%` that decoding would complete into an escape becomes `%25`); `"<>^`{|}`, controls and
    non-ASCII bytes escaped; `.` and `..` segments (also spelled `%2e`) resolved."""
    hexdigits = "0123456789abcdefABCDEF"
    unreserved = "-_~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    escaped = ' "#<>?^`{|}'
    out: list[str] = []
    if not path.startswith(("/", "\\")):
        out.append("/")
    end = len(path)

    def dot_length(i: int) -> int:
        if path.startswith(".", i):
            return 1
        return 3 if path[i : i + 3] in ("%2e", "%2E") else 0

    def after_dot(i: int) -> tuple[int, str]:  # (input consumed after the dot, disposition)
        if i == end:
            return 0, "current"
        if path[i] in "/\\":
            return 1, "current"
        second = dot_length(i)
        if second:
            if i + second == end:
                return second, "up"
            if path[i + second] in "/\\":
                return second + 1, "up"
        return 0, "name"

    def back_up() -> None:  # out ends with "/": drop the last segment, keep the first "/"
        i = len(out) - 1
        if i == 0:
            return
        i -= 1
        while out[i] != "/" and i > 0:
            i -= 1
        del out[i + 1 :]

    def is_escape(chars: list[str] | str, begin: int) -> bool:
        return (
            begin + 3 <= len(chars)
            and chars[begin + 1] in hexdigits
            and chars[begin + 2] in hexdigits
        )

    def nested_escapes(next_input: int, percent: int) -> None:
        # Chromium's CheckForNestedEscapes: `%%34%31` must not come out as a valid `%41`.
        length = len(out)
        last = out[-1]
        append_next = percent == length - 2
        if append_next:
            if next_input == end:
                return
            out.append(path[next_input])
        if is_escape(out, percent):
            if not append_next:
                out.append(out[percent + 1])
            out[percent + 1] = "2"
            out[percent + 2] = "5"
            out.append(last)
        elif append_next:
            del out[length:]

    last_invalid_percent = -(2**31)
    i = 0
    while i < end:
        char = path[i]
        if char >= "\x80":
            out.extend("".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass")))
        elif (dots := dot_length(i)) > 0:
            if out and out[-1] == "/":
                consumed, disposition = after_dot(i + dots)
                if disposition == "name":
                    out.append(".")
                elif disposition == "up":
                    back_up()
                    # Envoy's URL library forgets an invalid `%` once it backs up past it
                    # (Chromium's fix for crbug.com/1080890): `/1%/../ab%31%32` is `/ab12`.
                    last_invalid_percent = -(2**31)
                i += dots + (consumed if disposition != "name" else 0)
            else:
                out.append(".")
                i += dots
            continue
        elif char == "\\":
            out.append("/")
        elif char == "%":
            if is_escape(path, i):
                decoded = chr(int(path[i + 1 : i + 3], 16))
                if decoded in unreserved:
                    out.append(decoded)
                    if last_invalid_percent >= len(out) - 3:
                        nested_escapes(i + 3, last_invalid_percent)
                else:
                    out.extend(path[i : i + 3])
                i += 3
                continue
            last_invalid_percent = len(out)
            out.append("%")
        elif char < " " or char == "\x7f" or char in escaped:
            out.extend(f"%{ord(char):02X}")
        else:
            out.append(char)
        i += 1
    return "".join(out)


def normalize_path(path: str) -> str:
    """What Envoy routes on, as authgate configures it: the path without query (or fragment)
    after `normalize_path` (see `_canonicalize`: dot segments resolved, backslashes made `/`,
    unreserved escapes such as `%41` decoded, unsafe characters escaped) and then
    `merge_slashes`, which Envoy writes as prefix `/` + the non-empty segments + a trailing `/`
    (so `//` stays `//`)."""
    path = path.partition("?")[0].partition("#")[0]
    # Fast lane: only characters the canonicaliser copies as they are, and no `.`/`..` segment.
    if not path.startswith("/") or _CANONICAL_AS_IS.search(path) is not None:
        path = _canonicalize(path)
    if "//" in path:
        tail = "/" if path.endswith("/") else ""
        path = "/" + "/".join(segment for segment in path.split("/") if segment) + tail
    return path


def not_normalized(path: str) -> str | None:
    """Why Envoy (as authgate configures it) would have changed or refused this path, or None.

    Behind an Envoy the user wrote, authz cannot know whether it normalised paths, so it refuses
    every path that normalisation would change: the policy then sees what the app sees."""
    refused = _envoy_refuses(path)
    if refused is not None:
        return refused
    only = path.partition("?")[0]
    if "\\" in only:
        return "a backslash in the path"
    if normalize_path(only) != only:
        return (
            "dot segments, `//`, an escaped unreserved character (such as %41) or a character "
            "Envoy escapes in the path"
        )
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
    # Envoy refuses a Host outside RFC 3986's authority characters (non-ASCII included).
    if any(not "!" <= char <= "~" or char in '"#/<>?\\^`{|}' for char in host):
        return Selection(None, None, f"Envoy refuses the Host {host!r}", refused=True)
    host = host.lower()
    refused = _envoy_refuses(path)
    if refused is not None:
        return Selection(None, None, f"Envoy refuses {refused}", refused=True)
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
