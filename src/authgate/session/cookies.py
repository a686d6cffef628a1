"""Cookie headers: parse what browsers send, build what authgate sets."""

from collections.abc import Iterable


def parse_cookie_header(header: str) -> list[tuple[str, str]]:
    """Split a Cookie header into (name, value) pairs, keeping order and duplicates.

    Tolerant on purpose: one malformed pair never hides the others (unlike http.cookies).
    """
    pairs = []
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            pairs.append((name, value.strip().strip('"')))
    return pairs


def first_cookie(pairs: Iterable[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def cookie_header_without(header: str, names: frozenset[str]) -> str:
    """The Cookie header with authgate's cookies removed, other parts kept verbatim."""
    kept = [
        part.strip()
        for part in header.split(";")
        if part.strip() and part.strip().partition("=")[0] not in names
    ]
    return "; ".join(kept)


def set_cookie(name: str, value: str, *, max_age: int, secure: bool) -> str:
    attrs = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if secure:
        attrs.append("Secure")
    return "; ".join(attrs)


def clear_cookie(name: str, *, secure: bool) -> str:
    return set_cookie(name, "", max_age=0, secure=secure)
