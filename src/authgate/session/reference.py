"""The session cookie: a sealed reference to a session in the store, bound to one host.

It carries the session id and its absolute lifetime only, so no cookie grows with the user's
groups. Decoded references are cached by a digest of the cookie (16 bytes an entry)."""

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from authgate.session.sealed import SealedBox

# A new purpose: cookies of the releases that sealed the whole session open as "no session",
# and their users sign in again.
PURPOSE = "authgate session reference v2"


@dataclass(frozen=True, slots=True)
class SessionRef:
    sid: str
    issued_at: int
    expires_at: int

    def to_wire(self) -> dict[str, Any]:
        return {"sid": self.sid, "iat": self.issued_at, "exp": self.expires_at}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "SessionRef | None":
        sid, iat, exp = data.get("sid"), data.get("iat"), data.get("exp")
        if not (isinstance(sid, str) and sid and type(iat) is int and type(exp) is int):
            return None
        return cls(sid, iat, exp)

    def valid(self, now: float) -> bool:
        return self.issued_at - 60 <= now < self.expires_at


class ReferenceCodec:
    """Seals references into cookie values bound to a host; anything else is no session."""

    def __init__(self, master: bytes, cache_size: int = 10_000) -> None:
        self._box = SealedBox(master, PURPOSE)
        self._cache: OrderedDict[tuple[bytes, str], SessionRef] = OrderedDict()
        self._cache_size = cache_size

    def encode(self, ref: SessionRef, host: str) -> str:
        return self._box.seal(ref.to_wire(), bound_to=host)

    def decode(self, value: str, host: str, now: float | None = None) -> SessionRef | None:
        now = time.time() if now is None else now
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        key = (digest, host)
        ref = self._cache.get(key)
        if ref is None:
            payload = self._box.open(value, bound_to=host)
            ref = SessionRef.from_wire(payload) if payload is not None else None
            if ref is None:
                return None
            self._cache[key] = ref
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ref if ref.valid(now) else None

    @property
    def cached(self) -> int:
        return len(self._cache)
