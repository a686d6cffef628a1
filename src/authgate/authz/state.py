"""Everything a worker builds once at start and shares across Check calls."""

import contextlib
import hashlib
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from authgate.assertion import AssertionSigner
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
from authgate.oidc import OidcClient
from authgate.session import SessionCodec

HANDOFF_TTL_S = 60
LOGIN_TTL_S = 600
SIGNOUT_TTL_S = 120
CSRF_TTL_S = 3600


class SeenTokens:
    """Remembers single-use token ids until they expire (bounded).

    With a `directory` shared by the workers of one `authgate run`, a token used at one worker
    is refused at every other (an O_EXCL file per token id); otherwise memory of this process.
    """

    def __init__(self, limit: int = 100_000, directory: Path | None = None) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._limit = limit
        self._dir = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def first_use(self, token_id: str, expires_at: float) -> bool:
        now = time.time()
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        if token_id in self._seen:
            return False
        if self._dir is not None and not self._claim_file(token_id, expires_at, now):
            return False
        self._seen[token_id] = expires_at
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return True

    def _claim_file(self, token_id: str, expires_at: float, now: float) -> bool:
        assert self._dir is not None
        name = hashlib.sha256(token_id.encode()).hexdigest()[:32]
        try:
            fd = os.open(self._dir / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        os.close(fd)
        os.utime(self._dir / name, (expires_at, expires_at))
        if secrets.randbelow(64) == 0:  # now and then, forget what has expired
            for entry in os.scandir(self._dir):
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < now:
                        os.unlink(entry.path)
        return True

    def __len__(self) -> int:
        return len(self._seen)


@dataclass
class AuthzState:
    cfg: RuntimeConfig
    sessions: SessionCodec
    signer: AssertionSigner
    legacy_signer: AssertionSigner  # `iss: pomerium-proxy`, for legacy_assertion routes
    oidc: OidcClient
    sign_in_box: TokenBox[SignInRequest]  # route host -> authenticate host
    login_box: TokenBox[LoginState]  # the authenticate host's in-flight IdP login
    handoff_box: TokenBox[HandOff]  # authenticate host -> route host: the session
    signout_box: TokenBox[SignOutRequest]  # route host -> authenticate host
    signed_out_box: TokenBox[SignedOutState]  # through the IdP's logout and back
    csrf_box: TokenBox[CsrfToken]  # a route host's sign-out form
    allow_memo: AllowMemo
    seen_handoffs: SeenTokens = field(default_factory=SeenTokens)
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

    def __post_init__(self) -> None:
        self.secure = self.cfg.settings.tls
        self.session_cookie = self.cfg.cookie_name
        self.login_cookie = self.cfg.login_cookie_name
        self.authn_login_cookie = self.cfg.authn_login_cookie_name
        self.own_cookies = frozenset(self.cfg.own_cookies)
        self.own_cookies_lower = frozenset(name.lower() for name in self.own_cookies)
        self.session_lifetime_s = int(self.cfg.settings.cookie_expire.total_seconds())

    @classmethod
    def build(
        cls,
        cfg: RuntimeConfig,
        clock: Callable[[], datetime] | None = None,
        shared_dir: Path | None = None,
    ) -> "AuthzState":
        key = cfg.cookie_key
        return cls(
            seen_handoffs=SeenTokens(directory=shared_dir / "handoffs" if shared_dir else None),
            clock=clock or (lambda: datetime.now(UTC)),
            cfg=cfg,
            allow_memo=AllowMemo.for_config(cfg),
            sessions=SessionCodec(key),
            signer=AssertionSigner(cfg.signing_key, cfg.assertion_issuer),
            legacy_signer=AssertionSigner(cfg.signing_key, LEGACY_ISSUER),
            oidc=OidcClient(
                provider_url=cfg.settings.idp_provider_url,
                client_id=cfg.settings.idp_client_id,
                client_secret=cfg.client_secret,
                redirect_uri=f"{cfg.authenticate_origin}/oauth2/callback",
                scopes=list(cfg.settings.idp_scopes),
            ),
            sign_in_box=TokenBox(key, "authgate sign-in request v1", SignInRequest, LOGIN_TTL_S),
            login_box=TokenBox(key, "authgate login state v1", LoginState, LOGIN_TTL_S),
            handoff_box=TokenBox(key, "authgate hand-off v1", HandOff, HANDOFF_TTL_S),
            signout_box=TokenBox(key, "authgate sign-out v1", SignOutRequest, SIGNOUT_TTL_S),
            # The same purpose as sign-out requests, told apart by where they are bound.
            signed_out_box=TokenBox(key, "authgate sign-out v1", SignedOutState, SIGNOUT_TTL_S),
            csrf_box=TokenBox(key, "authgate csrf v1", CsrfToken, CSRF_TTL_S),
        )
