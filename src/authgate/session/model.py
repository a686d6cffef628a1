"""A signed-in user's session: who, since when, until when (kept in the session store)."""

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from authgate.policy import Identity, normalize_groups

# ID-token claims worth keeping for policy `claim/<name>` criteria; protocol claims are dropped.
DROPPED_CLAIMS = frozenset(
    {
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "auth_time",
        "nonce",
        "at_hash",
        "c_hash",
        "azp",
        "jti",
        "sid",
        "s_hash",
    }
)


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """The identity in verified ID-token (and userinfo) claims."""
    kept = {k: v for k, v in claims.items() if k not in DROPPED_CLAIMS}
    return Identity(
        user=str(claims.get("sub", "")),
        email=str(claims.get("email") or ""),
        name=str(claims.get("name") or ""),
        groups=normalize_groups(claims.get("groups")),
        claims=kept,
    )


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    identity: Identity
    issued_at: int
    expires_at: int
    extra: dict[str, Any] = field(default_factory=dict)
    # The IdP's tokens for `${pomerium.*}` request headers; never in a repr (logs).
    tokens: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_claims(
        cls, claims: dict[str, Any], lifetime_s: int, now: int | None = None
    ) -> "Session":
        now = int(time.time()) if now is None else now
        return cls(
            sid=new_session_id(),
            identity=identity_from_claims(claims),
            issued_at=now,
            expires_at=now + lifetime_s,
        )

    def valid(self, now: float) -> bool:
        return self.issued_at - 60 <= now < self.expires_at
