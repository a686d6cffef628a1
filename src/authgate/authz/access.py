"""A request for an application route: session -> policy -> forward with identity, or not."""

import math
import re
import secrets
import time

from authgate.authz import pages
from authgate.authz.context import RequestContext
from authgate.authz.decision import Allow, Decision, Respond
from authgate.authz.state import LOGIN_TTL_S, AuthzState
from authgate.config import RouteRuntime
from authgate.policy import PolicyInput
from authgate.session import Session
from authgate.session.cookies import cookie_header_without, first_cookie, set_cookie

ASSERTION_HEADER = "x-pomerium-jwt-assertion"
IDENTITY_PREFIX = "x-pomerium"


def current_session(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Session | None:
    value = first_cookie(ctx.cookies, state.session_cookie)
    if value is None:
        return None
    return state.sessions.decode(value, route.netloc)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _header_value(value: str) -> str:
    """IdP claims may hold CR/LF (Envoy would refuse the whole answer, and the text after it
    reads like another header): keep only what comes before the first control character."""
    return value if value.isprintable() else _CONTROL.split(value, 1)[0]


def _listable(group: str) -> bool:
    """A group that can stand in the comma-separated header without turning into others."""
    return group.isprintable() and "," not in group


def _spoofable(name: str) -> bool:
    return name.replace("_", "-").startswith(IDENTITY_PREFIX)


def forward(
    state: AuthzState, route: RouteRuntime, ctx: RequestContext, session: Session | None
) -> Allow:
    """Forward with every client-sent identity header removed and ours set (overwrite)."""
    set_headers: list[tuple[str, str]] = []
    # The same request gets the same answer until the session ends or the assertion is
    # re-signed. A session cookie that is no session now is not cached (it may be one later).
    if session is not None:
        until = float(session.expires_at)
    elif first_cookie(ctx.cookies, state.session_cookie) is None:
        until = math.inf
    else:
        until = 0.0
    if session is not None and route.route.pass_identity_headers:
        ident = session.identity
        assertion, reuse_until = state.signer.signed_for(
            sid=session.sid,
            audience=route.hostname,
            user=ident.user,
            email=ident.email,
            name=ident.name,
            groups=ident.groups,
        )
        until = min(until, reuse_until)
        set_headers.append((ASSERTION_HEADER, assertion))
        set_headers += [
            ("x-pomerium-claim-email", _header_value(ident.email)),
            ("x-pomerium-claim-user", _header_value(ident.user)),
            ("x-pomerium-claim-name", _header_value(ident.name)),
            ("x-pomerium-claim-groups", ",".join(g for g in ident.groups if _listable(g))),
        ]
    ours = {name for name, _ in set_headers}
    remove = [name for name in ctx.headers if _spoofable(name) and name not in ours]
    cookie = ctx.headers.get("cookie")
    if cookie is not None and any(name in state.own_cookies for name, _ in ctx.cookies):
        stripped = cookie_header_without(cookie, state.own_cookies)
        if stripped:
            set_headers.append(("cookie", stripped))
        else:
            remove.append("cookie")
    return Allow(set_headers=tuple(set_headers), remove_headers=tuple(remove), until=until)


def login_redirect(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    """Send the browser to the authenticate service, bound to this browser by a nonce cookie."""
    nonce = first_cookie(ctx.cookies, state.login_cookie)
    if not nonce or len(nonce) != 32 or not nonce.isascii() or not nonce.isalnum():
        nonce = secrets.token_hex(16)
    request = state.sign_in_box.seal(
        {
            "t": route.origin + ctx.path,
            "n": nonce,
            "h": route.netloc,
            "exp": int(time.time()) + LOGIN_TTL_S,
        },
        bound_to=state.cfg.authenticate_netloc,
    )
    cookie = set_cookie(state.login_cookie, nonce, max_age=LOGIN_TTL_S, secure=state.secure)
    location = f"{state.cfg.authenticate_origin}/.pomerium/sign_in?req={request}"
    return pages.redirect(location, cookies=(cookie,))


def not_signed_in(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    if ctx.wants_html:
        return login_redirect(state, route, ctx)
    return pages.json_answer(
        401, {"error": "unauthenticated", "message": "sign in first: open this URL in a browser"}
    )


def check_route(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Decision:
    session = current_session(state, route, ctx)
    inp = PolicyInput(
        identity=session.identity if session else None,
        method=ctx.method,
        path=ctx.path_only,
        source_ip=ctx.source_ip,
        now=state.clock(),
        headers=ctx.headers,
    )
    if route.policy.allowed(inp):
        return forward(state, route, ctx, session)
    if session is None:
        return not_signed_in(state, route, ctx)
    # The explanation is computed only here, off the allow path, and only when opted in.
    reason = route.policy.explain(inp).reason if route.route.show_error_details else ""
    return pages.error(
        ctx,
        403,
        "Access denied",
        f"{session.identity.email or session.identity.user} may not access {route.origin}.",
        "forbidden",
        reason,
    )
