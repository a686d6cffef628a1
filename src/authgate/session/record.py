"""What the store keeps of a session: the claims and the IdP's tokens, sealed.

The store sees only the session id, the email (for `authgate sessions`), times and an opaque
blob: claims, groups and the IdP's refresh token are encrypted at rest with a key derived from
`cookie_secret` (AES-GCM, bound to the session id)."""

from dataclasses import dataclass
from typing import Any

from authgate.policy import Identity, normalize_groups
from authgate.session.sealed import SealedBox

PURPOSE = "authgate session record v1"
MAX_RECORD_CHARS = 4 * 1024 * 1024  # a record is never a cookie: thousands of groups fit


@dataclass(frozen=True, slots=True)
class IdpTokens:
    access_token: str = ""
    refresh_token: str = ""
    access_expires_at: float = 0.0
    id_token: str = ""  # for `${pomerium.id_token}` in set_request_headers

    def to_wire(self) -> dict[str, Any]:
        return {
            "at": self.access_token,
            "rt": self.refresh_token,
            "ate": self.access_expires_at,
            "it": self.id_token,
        }

    def for_headers(self) -> dict[str, str]:
        """What `${pomerium.access_token}` / `${pomerium.id_token}` stand for."""
        return {"access_token": self.access_token, "id_token": self.id_token}

    @classmethod
    def from_wire(cls, data: object) -> "IdpTokens":
        if not isinstance(data, dict):
            return cls()
        expires = data.get("ate", 0.0)
        return cls(
            access_token=str(data.get("at") or ""),
            refresh_token=str(data.get("rt") or ""),
            access_expires_at=float(expires) if isinstance(expires, int | float) else 0.0,
            id_token=str(data.get("it") or ""),
        )


@dataclass(frozen=True, slots=True)
class SessionData:
    identity: Identity
    tokens: IdpTokens


class RecordSealer:
    def __init__(self, master: bytes) -> None:
        self._box = SealedBox(master, PURPOSE, max_chars=MAX_RECORD_CHARS)

    def seal(self, sid: str, data: SessionData) -> bytes:
        ident = data.identity
        payload = {
            "user": ident.user,
            "email": ident.email,
            "name": ident.name,
            "groups": list(ident.groups),
            "claims": ident.claims,
            "tokens": data.tokens.to_wire(),
        }
        return self._box.seal(payload, bound_to=sid).encode("ascii")

    def open(self, sid: str, blob: bytes) -> SessionData | None:
        try:
            text = blob.decode("ascii")
        except UnicodeDecodeError:
            return None
        data = self._box.open(text, bound_to=sid)
        if data is None or not isinstance(data.get("claims"), dict):
            return None
        identity = Identity(
            user=str(data.get("user", "")),
            email=str(data.get("email", "")),
            name=str(data.get("name", "")),
            groups=normalize_groups(data.get("groups")),
            claims=data["claims"],
        )
        return SessionData(identity, IdpTokens.from_wire(data.get("tokens")))
