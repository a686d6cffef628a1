"""A request for an application route: session -> policy -> forward with identity, or not."""

import math
from dataclasses import replace
from urllib.parse import quote

from authgate.authn.sign_in import start_login
from authgate.authz import fast_lane_pass, pages
from authgate.authz.app_claims import added_claims
from authgate.authz.claim_headers import (
    claim_headers,
    claim_value,
    filtered_groups,
    substitute,
)
from authgate.authz.context import RequestContext
from authgate.authz.cookie_session import current_session
from authgate.authz.decision import Allow, Decision, Respond
from authgate.authz.presented_tokens import presented_token, token_session
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime
from authgate.contract import (
    ASSERTION_CLAIMS,
    ASSERTION_HEADER,
    IDENTITY_PREFIX,
    LEGACY_ASSERTION_HEADER,
    SIGN_OUT_PATH,
    STRIP_COOKIES_HEADER,
    UNTRUSTED_FORWARDING_HEADERS,
)
from authgate.ops.decision_log import NO_SESSION, allow_rule, deny_rule
from authgate.ops.metrics import SIGN_IN_REDIRECT
from authgate.policy import PolicyInput
from authgate.session import Session
from authgate.session.cookies import (
    first_cookie,
    has_any,
    without_cookies,
)
from authgate.session.store import StoreUnavailable


def _spoofable(name: str) -> bool:
    return name.replace("_", "-").startswith(IDENTITY_PREFIX)


def _without_own_cookies(state: AuthzState, ctx: RequestContext) -> list[tuple[str, str]] | None:
    """Header changes that cut authgate's cookies out of the request; None: nothing to cut.

    The app's own bytes are kept: Cookie headers are rewritten only as UTF-8 text (all a Check
    answer can carry); otherwise the generated Envoy's cookie filter cuts them byte for byte.
    Behind another Envoy such headers are rewritten with U+FFFD rather than leak the session."""
    if not has_any(ctx.cookies, state.own_cookies_lower):
        return None
    kept = [without_cookies(h, state.own_cookies_lower) for h in ctx.cookie_bytes]
    joined = b"; ".join(h for h in kept if h)
    try:
        return [("cookie", joined.decode("utf-8"))]
    except UnicodeDecodeError:
        if ctx.generated_envoy:
            return [(STRIP_COOKIES_HEADER, "1")]
        return [("cookie", joined.decode("utf-8", "replace"))]


def forward(
    state: AuthzState,
    route: RouteRuntime,
    ctx: RequestContext,
    session: Session | None,
    token_in_authorization: bool = False,
    rule: str = "",
) -> Allow:
    """Forward with every client-sent identity header removed and ours set (overwrite).
    `token_in_authorization`: authgate read `Authorization`, which is then not the app's."""
    set_headers: list[tuple[str, str]] = []
    # The same request gets the same answer until the session ends or the assertion is
    # re-signed. A session cookie that is no session now is not cached (it may be one later).
    if session is not None:
        until = min(float(session.expires_at), state.sessions.keep_until(session.sid))
    elif first_cookie(ctx.cookies, state.session_cookie) is None:
        until = math.inf
    else:
        until = 0.0
    assertion = ""
    identity_headers = session is not None and route.route.pass_identity_headers
    if session is not None and (identity_headers or route.substituted_headers):
        ident = session.identity
        legacy = route.route.legacy_assertion
        signer = state.legacy_signer if legacy else state.signer
        groups = filtered_groups(ident.groups, route.groups_filter)
        extra = added_claims(route.route, ident) if route.route.assertion_claims else {}
        # Pomerium: a claim sent as a header is in the assertion too.
        for _, claim in route.claim_headers:
            if claim not in ASSERTION_CLAIMS and claim not in extra:
                value = claim_value(ident, claim, groups)
                if value is not None:
                    extra[claim] = value
        assertion, reuse_until = signer.signed_for(
            sid=session.sid,
            audience=route.hostname,
            user=ident.user,
            email=ident.email,
            name=ident.name,
            groups=groups,
            extra=extra or None,
            issuer=None if legacy else route.issuer,
        )
        until = min(until, reuse_until)
        if identity_headers:
            set_headers.append(
                (LEGACY_ASSERTION_HEADER if legacy else ASSERTION_HEADER, assertion)
            )
            set_headers += claim_headers(route.claim_headers, ident, groups)
    if route.substituted_headers:
        # Per session (the kept answers are keyed by the session cookie); never logged.
        tokens = {"jwt": assertion, **(session.tokens if session is not None else {})}
        set_headers += [
            (name, substitute(template, tokens)) for name, template in route.substituted_headers
        ]
    minted = fast_lane_pass.mint(state, route, ctx, session, set_headers, until)
    if minted is not None:
        until = min(until, minted[1])
    cookie_changes = _without_own_cookies(state, ctx)
    if cookie_changes is not None:
        set_headers += [(k, v) for k, v in cookie_changes if v]
    ours = {name for name, _ in set_headers}
    # Claim headers may be named outside x-pomerium-: one this answer does not set (no such
    # claim, no session) must not come from the client either. Removed whether or not authz
    # saw it (the generated Envoy sends authz only the headers it reads).
    claim_names = route.claim_header_names
    remove = [
        name
        for name in ctx.headers
        if (_spoofable(name) or name.replace("_", "-") in claim_names) and name not in ours
    ]
    remove += sorted(claim_names - ours - set(remove))
    if cookie_changes is not None and "cookie" not in ours and STRIP_COOKIES_HEADER not in ours:
        remove.append("cookie")  # nothing but authgate's cookies
    if not ctx.generated_envoy:  # the generated Envoy removes these itself
        remove += [name for name in UNTRUSTED_FORWARDING_HEADERS if name in ctx.headers]
    if token_in_authorization:
        remove.append("authorization")
    return Allow(
        set_headers=tuple(set_headers),
        remove_headers=tuple(remove),
        until=until,
        session_id=session.sid if session is not None else "",
        rule=rule,
        user=(session.identity.email or session.identity.user) if session is not None else "",
        response_cookies=(minted[0],) if minted is not None else (),
    )


def _is_preflight(ctx: RequestContext) -> bool:
    return (
        ctx.method == "OPTIONS"
        and bool(ctx.headers.get("origin"))
        and bool(ctx.headers.get("access-control-request-method"))
    )


def not_signed_in(state: AuthzState, route: RouteRuntime, ctx: RequestContext) -> Respond:
    if ctx.wants_html:
        return replace(start_login(state, route, ctx), outcome=SIGN_IN_REDIRECT, rule=NO_SESSION)
    answer = pages.json_answer(
        401, {"error": "unauthenticated", "message": "sign in first: open this URL in a browser"}
    )
    return replace(answer, rule=NO_SESSION)


async def who_is(
    state: AuthzState, route: RouteRuntime, ctx: RequestContext
) -> tuple[Session | None, bool] | Respond:
    """The session (and whether it came from the `Authorization` header), or an answer for a
    token that is no good. A presented token wins over cookies: scripts say who they are."""
    presented = presented_token(state, route, ctx)
    if presented is not None:
        outcome = await token_session(state, route, presented)
        if isinstance(outcome, Respond):
            return outcome
        return outcome, presented.header == "authorization"
    try:
        return await current_session(state, route, ctx), False
    except StoreUnavailable:
        if not route.public:
            raise
        return None, False  # a public route goes on without the identity, never a stale one


async def check_route(
    state: AuthzState, route: RouteRuntime, ctx: RequestContext
) -> Decision:
    if route.route.cors_allow_preflight and _is_preflight(ctx):
        # Pomerium's cors_allow_preflight: browsers send preflights without credentials.
        return forward(state, route, ctx, None, rule="cors_allow_preflight")
    found = await who_is(state, route, ctx)
    if isinstance(found, Respond):
        return found
    session, from_authorization = found
    inp = PolicyInput(
        identity=session.identity if session else None,
        method=ctx.method,
        path=ctx.path_only,
        source_ip=ctx.source_ip,
        now=state.clock(),
        headers=ctx.headers,
        client_certificate=ctx.client_certificate,
    )
    if route.policy.allowed(inp):
        rule = allow_rule(route.policy, inp)
        return forward(state, route, ctx, session, from_authorization, rule)
    if session is None:
        return not_signed_in(state, route, ctx)
    # The explanation is computed only here, off the allow path.
    explained = route.policy.explain(inp)
    why = explained.reason
    who = session.identity.email or session.identity.user
    back = f"{SIGN_OUT_PATH}?pomerium_redirect_uri={quote(ctx.path, safe='')}"
    page = pages.error(
        ctx,
        403,
        "Access denied",
        f"{who} may not access {route.origin}.",
        "forbidden",
        why if route.route.show_error_details else "",
        links=(
            ("Use another account", back),
            ("Who am I signed in as?", "/.pomerium/"),
        ),
    )
    return replace(page, rule=deny_rule(explained), user=who)
