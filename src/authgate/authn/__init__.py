"""The login flow (Pomerium's "authenticate" service, kept apart from authorization):
sign-in request, OAuth callback, hand-off to the route host, route callback, sign-out."""

from authgate.authn.errors import LoginError

__all__ = ["LoginError"]
