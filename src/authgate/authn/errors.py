"""One exception root for the login flow; each error knows the answer the browser gets."""


class LoginError(Exception):
    """Anything that stops a sign-in, hand-off or sign-out. `str(error)` is safe to show."""

    status = 400
    title = "Sign-in failed"
    code = "login_failed"

    def __init__(self, message: str, retry: str = "") -> None:
        super().__init__(message)
        self.retry = retry  # a URL that starts over (the page the user first asked for)


class InvalidToken(LoginError):
    """A sealed token that is not ours, not for this host, or malformed."""


class ExpiredToken(InvalidToken):
    """A sealed token past its lifetime."""


class IdpUnavailable(LoginError):
    status = 502


class IdpRefused(LoginError):
    """The IdP answered the authorization request with an error."""

    status = 403


class IdTokenRejected(LoginError):
    status = 401


class IssuerMismatch(LoginError):
    """RFC 9207: the authorization response names another issuer, or none when it must."""

    code = "issuer_mismatch"


class SignOutRefused(LoginError):
    """A sign-out POST that did not come from our own page."""

    status = 403
    title = "Sign-out refused"
    code = "csrf"
