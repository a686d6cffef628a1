"""Minting a route's fast-lane pass on an allowed request (authgate/fast_pass.py: what a pass is).

A pass is handed out only for a browser session (the session cookie, no token presented), only
behind the generated Envoy (nothing else verifies it), and never outlives the answer it stands
for: it ends at `fast_lane_ttl`, the session's end, or the session's next refresh or idle-timeout
write, whichever comes first, so the Check that follows sees any change.
"""

import time

import jwt

from authgate.authz.context import RequestContext
from authgate.authz.state import AuthzState
from authgate.config import RouteRuntime
from authgate.contract import IDENTITY_PREFIX, POMERIUM_AUTHORIZATION_HEADER, STRIP_COOKIES_HEADER
from authgate.fast_pass import HEADERS_CLAIM, MAX_PASS_BYTES, PASS_ISSUER
from authgate.session import Session
from authgate.session.cookies import clear_cookie, first_cookie, set_cookie

# A pass shorter than this is not worth a cookie: the next request takes the Check anyway.
MIN_PASS_S = 2


def mint(
    state: AuthzState,
    route: RouteRuntime,
    ctx: RequestContext,
    session: Session | None,
    set_headers: list[tuple[str, str]],
    until: float,
    now: float | None = None,
) -> tuple[str, float] | None:
    """`Set-Cookie` for a new pass, and until when an answer carrying it may be handed out again
    (half its life: a kept answer never gives a browser a pass about to expire); None: no pass.
    `set_headers`: the identity headers this answer sets, which the pass carries."""
    lane = state.fast_lane.routes.get(route.id)
    if lane is None or session is None or not ctx.generated_envoy:
        return None
    if "authorization" in ctx.headers or POMERIUM_AUTHORIZATION_HEADER in ctx.headers:
        return None  # a token says who this is: always the Check
    if first_cookie(ctx.cookies, state.session_cookie) is None:
        return None
    ours = {
        name: value
        for name, value in set_headers
        if name.startswith(IDENTITY_PREFIX) and name != STRIP_COOKIES_HEADER
    }
    if set(ours) - set(lane.headers):
        return None  # Envoy would not set this header from the pass: always the Check
    issued = time.time() if now is None else now
    exp = int(min(issued + state.fast_lane.ttl_s, until))
    if exp - issued < MIN_PASS_S:
        return None
    claims: dict[str, object] = {
        "iss": PASS_ISSUER,
        "aud": lane.audience,
        "iat": int(issued),
        "exp": exp,
    }
    if ours:
        claims[HEADERS_CLAIM] = ours
    token = jwt.encode(
        claims, state.fast_lane.key, algorithm="ES256", headers={"kid": state.fast_lane.kid}
    )
    # Like the session cookie: `__Host-` and Secure over TLS (plain HTTP: neither).
    cookie = set_cookie(lane.cookie, token, max_age=exp - int(issued), secure=state.secure)
    if len(cookie) > MAX_PASS_BYTES:
        return None  # large claims (hundreds of groups): this user always takes the Check
    return cookie, issued + (exp - issued) / 2


def cleared_on_host(state: AuthzState, route: RouteRuntime) -> tuple[str, ...]:
    """`Set-Cookie` values that end every pass this browser holds for the route's host."""
    names = state.fast_lane.cookies_of_host(state.cfg, route.netloc)
    return tuple(clear_cookie(name, secure=state.secure) for name in names)
