"""Everything a worker builds once at start and shares across Check calls."""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from authgate.assertion import AssertionSigner
from authgate.authn.bearer import BearerVerifier
from authgate.authn.tokens import (
    CsrfToken,
    HandOff,
    LoginState,
    SignedOutState,
    SignInRequest,
    SignOutRequest,
    TokenBox,
)
from authgate.authz.allow_memo import AllowMemo
from authgate.config import RuntimeConfig
from authgate.contract import LEGACY_ISSUER
from authgate.fast_pass import FastLane
from authgate.oidc import GrantRevoked, OidcClient
from authgate.oidc.factory import idp_client
from authgate.session import SealedBox
from authgate.session.cookies import SessionCookieFlags
from authgate.session.manager import AccountGone, Refreshed, Refresher, SessionManager
from authgate.session.record import IdpTokens
from authgate.session.store import SessionStore, open_store

HANDOFF_TTL_S = 60
LOGIN_TTL_S = 600
SIGNOUT_TTL_S = 120
CSRF_TTL_S = 3600


def default_state_dir() -> Path:
    """Where the embedded session store lives when nothing else says: systemd's
    StateDirectory, else the XDG state directory."""
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "authgate"


def session_store_for(
    cfg: RuntimeConfig, state_dir: Path | None, timeout_s: float = 0.5
) -> SessionStore:
    """The store the config names. A Check waits for it at most `timeout_s` (well inside
    Envoy's 3 s ext_authz timeout); an admin command may wait longer."""
    settings = cfg.settings
    return open_store(
        settings.databroker_storage_type,
        settings.databroker_storage_connection_string,
        state_dir or default_state_dir(),
        timeout_s=timeout_s,
    )


def refresher_for(oidc: OidcClient) -> Refresher:
    async def refresh(tokens: IdpTokens) -> Refreshed | None:
        try:
            result = await oidc.refresh(tokens)
        except GrantRevoked as exc:
            raise AccountGone(str(exc)) from None
        return Refreshed(*result) if result is not None else None

    return refresh


@dataclass
class AuthzState:
    cfg: RuntimeConfig
    sessions: SessionManager
    signer: AssertionSigner
    legacy_signer: AssertionSigner  # `iss: pomerium-proxy`, for legacy_assertion routes
    oidc: OidcClient
    sign_in_box: TokenBox[SignInRequest]  # route host -> authenticate host
    login_box: TokenBox[LoginState]  # the authenticate host's in-flight IdP login
    handoff_box: TokenBox[HandOff]  # authenticate host -> route host: the session
    signout_box: TokenBox[SignOutRequest]  # route host -> authenticate host
    signed_out_box: TokenBox[SignedOutState]  # through the IdP's logout and back
    csrf_box: TokenBox[CsrfToken]  # a route host's sign-out form
    programmatic_box: SealedBox  # the programmatic login's token (a session reference)
    bearer: BearerVerifier  # IdP tokens presented by scripts
    allow_memo: AllowMemo
    # Policies with date/time criteria read this; tests inject a fixed clock.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    # Derived once: these are read on every Check.
    secure: bool = field(init=False)
    session_cookie: str = field(init=False)
    login_cookie: str = field(init=False)
    authn_login_cookie: str = field(init=False)
    own_cookies: frozenset[str] = field(init=False)
    own_cookies_lower: frozenset[str] = field(init=False)  # what is cut out, in any case
    session_lifetime_s: int = field(init=False)
    session_cookie_flags: SessionCookieFlags = field(init=False)
    fast_lane: FastLane = field(init=False)  # the routes that mint passes, and their key

    def __post_init__(self) -> None:
        self.secure = self.cfg.settings.tls
        self.session_cookie = self.cfg.cookie_name
        self.login_cookie = self.cfg.login_cookie_name
        self.authn_login_cookie = self.cfg.authn_login_cookie_name
        self.own_cookies = frozenset(self.cfg.own_cookies)
        self.own_cookies_lower = frozenset(name.lower() for name in self.own_cookies)
        self.session_lifetime_s = int(self.cfg.settings.cookie_expire.total_seconds())
        self.session_cookie_flags = SessionCookieFlags(
            same_site=self.cfg.settings.cookie_same_site,
            http_only=self.cfg.settings.cookie_http_only,
        )
        self.fast_lane = FastLane(self.cfg)

    @classmethod
    def build(
        cls,
        cfg: RuntimeConfig,
        clock: Callable[[], datetime] | None = None,
        shared_dir: Path | None = None,
        store: SessionStore | None = None,
    ) -> "AuthzState":
        """`shared_dir`: the directory the workers of one run share (the embedded session
        store goes there unless the config names a place)."""
        key = cfg.cookie_key
        settings = cfg.settings
        oidc = idp_client(
            provider_name=settings.idp_provider,
            provider_url=settings.idp_provider_url,
            client_id=settings.idp_client_id,
            client_secret=cfg.client_secret,
            redirect_uri=f"{cfg.authenticate_origin}/oauth2/callback",
            scopes=list(settings.idp_scopes),
            request_params=settings.idp_request_params,
        )
        memo = AllowMemo.for_config(cfg)
        sessions = SessionManager(
            key,
            store or session_store_for(cfg, shared_dir),
            refresh_interval_s=settings.session_refresh_interval.total_seconds(),
            idle_timeout_s=settings.session_idle_timeout.total_seconds(),
            refresher=refresher_for(oidc),
            on_change=memo.forget_session,
            # Only routes with ${pomerium.*} headers need the IdP tokens on the Check path.
            keep_tokens=any(r.substituted_headers for r in cfg.routes),
        )
        return cls(
            clock=clock or (lambda: datetime.now(UTC)),
            cfg=cfg,
            allow_memo=memo,
            sessions=sessions,
            signer=AssertionSigner(
                cfg.signing_key, cfg.assertion_issuer, published=cfg.verification_keys
            ),
            legacy_signer=AssertionSigner(
                cfg.signing_key, LEGACY_ISSUER, published=cfg.verification_keys
            ),
            oidc=oidc,
            sign_in_box=TokenBox(key, "authgate sign-in request v1", SignInRequest, LOGIN_TTL_S),
            login_box=TokenBox(key, "authgate login state v1", LoginState, LOGIN_TTL_S),
            handoff_box=TokenBox(key, "authgate hand-off v1", HandOff, HANDOFF_TTL_S),
            signout_box=TokenBox(key, "authgate sign-out v1", SignOutRequest, SIGNOUT_TTL_S),
            # The same purpose as sign-out requests, told apart by where they are bound.
            signed_out_box=TokenBox(key, "authgate sign-out v1", SignedOutState, SIGNOUT_TTL_S),
            csrf_box=TokenBox(key, "authgate csrf v1", CsrfToken, CSRF_TTL_S),
            programmatic_box=SealedBox(key, "authgate programmatic token v1"),
            bearer=BearerVerifier(
                oidc,
                allowed_audiences=[
                    settings.idp_client_id,
                    *settings.idp_access_token_allowed_audiences,
                ],
            ),
        )
