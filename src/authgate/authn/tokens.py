"""The login flow's sealed tokens, typed.

Each token is a frozen dataclass sealed by its own `TokenBox` (its own HKDF purpose, bound to
where it may be used) with its lifetime inside the seal: `open` checks the expiry, so no caller
does. The wire format (purposes and JSON keys) is the one earlier releases wrote, so tokens in
flight during an upgrade keep working.
"""

import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

from authgate.authn.errors import ExpiredToken, InvalidToken
from authgate.session import SealedBox


class WireToken(Protocol):
    def to_wire(self) -> dict[str, Any]: ...

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Self: ...


T = TypeVar("T", bound=WireToken)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise InvalidToken(f"{key!r} is missing")
    return value


@dataclass(frozen=True, slots=True)
class SignInRequest:
    """Route host -> authenticate host: where to return, and the browser's login nonce."""

    target: str  # the URL first asked for (programmatic: the CLI's loopback URL)
    nonce: str  # the value of the route host's login cookie in that browser
    route_netloc: str
    programmatic: bool = False  # a CLI's login: end with a token at `target`, not a hand-off

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": self.target, "n": self.nonce, "h": self.route_netloc}
        if self.programmatic:
            wire["p"] = 1
        return wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "SignInRequest":
        return cls(_text(data, "t"), _text(data, "n"), _text(data, "h"), data.get("p") == 1)


@dataclass(frozen=True, slots=True)
class LoginState:
    """The authenticate host's in-flight IdP login (a cookie there)."""

    state: str
    nonce: str
    code_verifier: str
    request: SignInRequest

    def to_wire(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "nonce": self.nonce,
            "pkce": self.code_verifier,
            "req": self.request.to_wire(),
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "LoginState":
        request = data.get("req")
        if not isinstance(request, dict):
            raise InvalidToken("'req' is missing")
        return cls(
            _text(data, "state"),
            _text(data, "nonce"),
            _text(data, "pkce"),
            SignInRequest.from_wire(request),
        )


@dataclass(frozen=True, slots=True)
class HandOff:
    """Authenticate host -> route host: the session, for the browser holding `nonce`."""

    session: dict[str, Any]  # SessionRef.to_wire(): the session in the store
    target: str
    nonce: str
    token_id: str  # single use

    def to_wire(self) -> dict[str, Any]:
        return {"s": self.session, "t": self.target, "n": self.nonce, "jti": self.token_id}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "HandOff":
        session = data.get("s")
        if not isinstance(session, dict):
            raise InvalidToken("'s' is missing")
        return cls(session, _text(data, "t"), _text(data, "n"), _text(data, "jti"))


@dataclass(frozen=True, slots=True)
class SignOutRequest:
    """Route host -> authenticate host: sign this session out, then go to `redirect`."""

    redirect: str
    session_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"rd": self.redirect, "sid": self.session_id}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "SignOutRequest":
        return cls(_text(data, "rd"), str(data.get("sid", "")))


@dataclass(frozen=True, slots=True)
class SignedOutState:
    """The `state` the IdP's logout returns with: where to go at the end."""

    redirect: str

    def to_wire(self) -> dict[str, Any]:
        return {"rd": self.redirect}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "SignedOutState":
        return cls(_text(data, "rd"))


@dataclass(frozen=True, slots=True)
class CsrfToken:
    """A route host's sign-out form token, naming the session it may sign out."""

    session_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"sid": self.session_id}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "CsrfToken":
        return cls(_text(data, "sid"))


@dataclass(frozen=True, slots=True)
class Opened(Generic[T]):
    value: T
    expires_at: int


class TokenBox(Generic[T]):
    """Seal a `kind` token for `ttl_s` seconds; open it only where it was bound, only before
    it expires."""

    def __init__(self, master: bytes, purpose: str, kind: type[T], ttl_s: int) -> None:
        self.box = SealedBox(master, purpose)
        self.kind = kind
        self.ttl_s = ttl_s

    def seal(self, token: T, bound_to: str) -> str:
        expires = int(time.time()) + self.ttl_s
        return self.box.seal({**token.to_wire(), "exp": expires}, bound_to=bound_to)

    def open(self, sealed: str | None, bound_to: str) -> Opened[T]:
        """The token, or InvalidToken (not ours, not for here, malformed) / ExpiredToken."""
        data = self.box.open(sealed or "", bound_to=bound_to)
        if data is None:
            raise InvalidToken("not sealed here")
        expires = data.get("exp")
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise InvalidToken("no expiry")
        if expires < time.time():
            raise ExpiredToken("expired")
        return Opened(self.kind.from_wire(data), expires)

    def open_expired(self, sealed: str | None, bound_to: str) -> T | None:
        """An authentic token whatever its age, or None: only to offer a way to start over."""
        data = self.box.open(sealed or "", bound_to=bound_to)
        try:
            return self.kind.from_wire(data) if data is not None else None
        except InvalidToken:
            return None
