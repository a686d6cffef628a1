"""Authenticated encryption for everything authgate hands to a browser.

One master secret (`cookie_secret`) is split with HKDF into a key per purpose (session cookie,
hand-off, login state, ...), so a value sealed for one purpose never opens as another. The
associated data binds a value to where it may be used (e.g. the route host).
"""

import base64
import binascii
import hmac
import json
import os
import re
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
NONCE_BYTES = 12
MAX_TOKEN_CHARS = 8192  # a browser cookie is at most 4 KB; anything far larger is not ours
_CANONICAL = re.compile(r"[A-Za-z0-9_-]+")  # exactly what seal() emits: no padding, no +/


def same_text(a: str, b: str) -> bool:
    """Constant-time equality for any two strings (hmac.compare_digest raises TypeError on
    non-ASCII str, and a client chooses some of these values)."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def derive_key(master: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        master
    )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class SealedBox:
    """Seal JSON objects into URL/cookie-safe strings; opening anything else yields None."""

    __slots__ = ("_aead", "_max_chars", "purpose")

    def __init__(self, master: bytes, purpose: str, max_chars: int = MAX_TOKEN_CHARS) -> None:
        self.purpose = purpose
        self._aead = AESGCM(derive_key(master, purpose))
        self._max_chars = max_chars

    def seal(self, payload: dict[str, Any], bound_to: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return _b64encode(VERSION + nonce + self._aead.encrypt(nonce, plain, bound_to.encode()))

    def open(self, token: str, bound_to: str) -> dict[str, Any] | None:
        if len(token) > self._max_chars or not _CANONICAL.fullmatch(token):
            return None
        raw = _b64decode(token)
        if raw is not None and _b64encode(raw) != token:
            return None  # unused trailing bits set: not a spelling seal() produces
        if raw is None or len(raw) < 1 + NONCE_BYTES + 16 or raw[:1] != VERSION:
            return None
        nonce, sealed = raw[1 : 1 + NONCE_BYTES], raw[1 + NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, sealed, bound_to.encode())
            value = json.loads(plain)
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None
        return value if isinstance(value, dict) else None
