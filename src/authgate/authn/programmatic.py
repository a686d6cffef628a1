"""Pomerium's programmatic login, for CLIs and scripts.

1. The CLI asks a route host: `GET /.pomerium/api/v1/login?pomerium_redirect_uri=http://127.0.0.1:<port>/`
   and gets the sign-in URL as text.
2. The user signs in in a browser (or already is); the authenticate host then sends the browser
   to that loopback URL with `pomerium_jwt=<token>` instead of handing a cookie to the route.
3. The CLI sends `Authorization: Pomerium <token>` (or `X-Pomerium-Authorization: Pomerium ...`).

The token is a sealed reference to the session, bound to the route host: it works there only,
ends with the session, and dies at sign-out or revocation (the store says so). Redirect targets
are loopback addresses, or hosts in `programmatic_redirect_domain_whitelist`.
"""

import ipaddress
import time
from urllib.parse import urlsplit

from authgate.authn.tokens import SignInRequest
from authgate.authz import pages
from authgate.authz.context import RequestContext
from authgate.authz.decision import Respond
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime
from authgate.contract import SIGN_IN_PATH
from authgate.session import Session
from authgate.session.reference import SessionRef

MAX_TARGET_CHARS = 2048


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def programmatic_target(state: AuthzState, candidate: str | None) -> str | None:
    """A URL the token may be sent to: http(s) on a loopback address (or a whitelisted host),
    no credentials, nothing a browser would read as another host."""
    if not candidate or len(candidate) > MAX_TARGET_CHARS or not candidate.isprintable():
        return None
    if any(c in candidate for c in " \\\t"):
        return None
    try:
        parts = urlsplit(candidate)
        host = (parts.hostname or "").lower()
        _ = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.username or parts.password or not host:
        return None
    if parts.fragment:
        return None
    allowed = {h.lower() for h in state.cfg.settings.programmatic_redirect_domain_whitelist}
    if not (_loopback(host) or host in allowed):
        return None
    return candidate


def programmatic_login(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    target = programmatic_target(state, ctx.param("pomerium_redirect_uri"))
    if target is None:
        return pages.json_answer(
            400,
            {
                "error": "bad_request",
                "message": "pomerium_redirect_uri must be an http:// URL on a loopback address "
                "(or a host in programmatic_redirect_domain_whitelist)",
            },
        )
    request = SignInRequest(
        target=target, nonce="", route_netloc=route.netloc, programmatic=True
    )
    sealed = state.sign_in_box.seal(request, bound_to=state.cfg.authenticate_netloc)
    url = f"{state.cfg.authenticate_origin}{SIGN_IN_PATH}?req={sealed}"
    return Respond(
        status=200,
        headers=(("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store")),
        body=url,
    )


def token_for(state: AuthzState, session: Session, route_netloc: str) -> str:
    ref = SessionRef(session.sid, session.issued_at, session.expires_at)
    return state.programmatic_box.seal(ref.to_wire(), bound_to=route_netloc)


def redirect_with_token(state: AuthzState, request: SignInRequest, session: Session) -> Respond:
    """The end of a programmatic sign-in: the browser takes the token to the CLI's listener."""
    target = programmatic_target(state, request.target)
    if target is None:  # sealed by us, so only a changed whitelist gets here
        return pages.json_answer(400, {"error": "bad_request", "message": "redirect not allowed"})
    token = token_for(state, session, request.route_netloc)
    sep = "&" if urlsplit(target).query else "?"
    return pages.redirect(f"{target}{sep}pomerium_jwt={token}")


def reference_in(state: AuthzState, token: str, route_netloc: str) -> SessionRef | None:
    data = state.programmatic_box.open(token, bound_to=route_netloc)
    ref = SessionRef.from_wire(data) if data is not None else None
    return ref if ref is not None and ref.valid(time.time()) else None
