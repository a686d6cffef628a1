"""The session cookie: a Session sealed for one route host, decoded with a bounded cache."""

import hashlib
import time
from collections import OrderedDict

from authgate.session.model import Session
from authgate.session.sealed import SealedBox


class SessionCodec:
    """Encrypts sessions into cookie values bound to a host; tampered values are no session."""

    def __init__(self, master: bytes, cache_size: int = 10_000) -> None:
        self._box = SealedBox(master, "authgate session v1")
        # Keyed by a digest of the cookie: 16 bytes a session instead of the whole cookie.
        self._cache: OrderedDict[tuple[bytes, str], Session] = OrderedDict()
        self._cache_size = cache_size

    def encode(self, session: Session, host: str) -> str:
        return self._box.seal(session.to_payload(), bound_to=host)

    def decode(self, value: str, host: str, now: float | None = None) -> Session | None:
        now = time.time() if now is None else now
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        key = (digest, host)
        session = self._cache.get(key)
        if session is None:
            payload = self._box.open(value, bound_to=host)
            session = Session.from_payload(payload) if payload is not None else None
            if session is None:
                return None
            self._cache[key] = session
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return session if session.valid(now) else None

    @property
    def cached(self) -> int:
        return len(self._cache)
