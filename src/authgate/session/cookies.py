"""Cookie headers: parse what clients send, cut authgate's cookies out, build what authgate sets.

A client may spell its cookies many ways: two Cookie headers, pairs joined with `,` (what Envoy
does to repeated headers, and what some app servers split on), blanks around names. authgate
reads and removes its own cookies in every such spelling, and never rewrites the app's bytes.
"""

from collections.abc import Iterable
from typing import TypedDict


class SessionCookieFlags(TypedDict):
    """Pomerium's cookie_same_site and cookie_http_only, for the session cookie."""

    same_site: str
    http_only: bool

# Cookie pairs are separated by ";" (RFC 6265); "," joins repeated headers and is still a
# separator for some servers (RFC 2965), so both split here.
_SEPARATORS = (b";", b",")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _pairs(header: bytes) -> list[bytes]:
    parts = [header]
    for sep in _SEPARATORS:
        parts = [piece for part in parts for piece in part.split(sep)]
    return parts


def parse_cookie_header(header: str) -> list[tuple[str, str]]:
    """Split a Cookie header into (name, value) pairs, keeping order and duplicates.

    Tolerant on purpose: one malformed pair never hides the others (unlike http.cookies).
    """
    return parse_cookie_headers((header.encode("utf-8", "surrogateescape"),))


def parse_cookie_headers(headers: Iterable[bytes]) -> list[tuple[str, str]]:
    """Every (name, value) pair of every Cookie header, in order. Bytes that are not UTF-8
    (never in authgate's own cookies) become lone surrogates, as `os.fsdecode` does."""
    pairs = []
    for header in headers:
        for part in _pairs(header):
            name, sep, value = part.partition(b"=")
            name = name.strip()
            if sep and name:
                pairs.append((_text(name), _text(value.strip().strip(b'"'))))
    return pairs


def first_cookie(pairs: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def has_any(pairs: Iterable[tuple[str, str]], names: frozenset[str]) -> bool:
    """True if any pair is named like one of `names` (ASCII case ignored, as when removing)."""
    return any(key.lower() in names for key, _ in pairs)


def without_cookies(header: bytes, names: frozenset[str]) -> bytes:
    """The header with every pair named in `names` (lower-case; any case, blanks around the
    name) removed; every other byte is kept as the client sent it."""
    kept_parts = []
    for part in header.split(b";"):
        pieces = [
            piece
            for piece in part.split(b",")
            if _text(piece.partition(b"=")[0].strip().lower()) not in names
            or b"=" not in piece
        ]
        if pieces:
            kept_parts.append(b",".join(pieces))
    kept = b";".join(kept_parts).strip(b" \t;,")
    return kept


def cookie_header_without(header: str, names: frozenset[str]) -> str:
    """Text form of `without_cookies` (names compared lower-case)."""
    lowered = frozenset(n.lower() for n in names)
    return without_cookies(header.encode("utf-8", "surrogateescape"), lowered).decode(
        "utf-8", "surrogateescape"
    )


def set_cookie(
    name: str,
    value: str,
    *,
    max_age: int,
    secure: bool,
    same_site: str = "Lax",
    http_only: bool = True,
    domain: str | None = None,
) -> str:
    """`same_site`, `http_only` and `domain` are Pomerium's cookie_* keys, for the session
    cookie only: the login flow's cookies stay Lax and HttpOnly (Strict would lose them on the
    IdP's redirect back)."""
    attrs = [f"{name}={value}", "Path=/", f"Max-Age={max_age}"]
    if domain:
        attrs.append(f"Domain={domain}")
    if http_only:
        attrs.append("HttpOnly")
    attrs.append(f"SameSite={same_site}")
    if secure:
        attrs.append("Secure")
    return "; ".join(attrs)


def clear_cookie(name: str, *, secure: bool, domain: str | None = None) -> str:
    return set_cookie(name, "", max_age=0, secure=secure, domain=domain)
