"""Redirect-target validation: after login or sign-out, only URLs of the expected origin."""

import re
from urllib.parse import urlsplit

# Raw control characters, whitespace and backslashes are what browsers "fix up" into other
# hosts. Percent-escapes are harmless here: the result is rebuilt on the expected origin.
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


def safe_redirect(candidate: str | None, origin: str) -> str | None:
    """Return an absolute URL on `origin` for `candidate`, or None if it could go elsewhere.

    `origin` is scheme://host[:port]. Accepted: an absolute URL with exactly that origin, or a
    path starting with a single "/". Everything else (other hosts, scheme-relative `//x`,
    `javascript:`, encoded tricks) is refused.
    """
    if not candidate or len(candidate) > 4096 or _UNSAFE.search(candidate):
        return None
    if candidate.startswith("/"):
        if candidate.startswith("//"):
            return None
        target = origin + candidate
    else:
        target = candidate
    try:
        parts = urlsplit(target)
        want = urlsplit(origin)
        if (
            parts.scheme != want.scheme
            or parts.username is not None
            or parts.password is not None
            or (parts.hostname or "") != (want.hostname or "")
            or parts.port != want.port
            or not parts.netloc
            or parts.netloc.lower() != want.netloc.lower()
        ):
            return None
    except ValueError:
        return None
    path = parts.path or "/"
    if not path.startswith("/") or path.startswith("//"):
        return None
    query = f"?{parts.query}" if parts.query else ""
    return f"{want.scheme}://{want.netloc}{path}{query}"
