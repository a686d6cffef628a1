"""The login flow's typed tokens: expiry inside the box, binding, and the earlier wire format."""

import base64
import os
import time

import pytest

from authgate.authn.errors import ExpiredToken, InvalidToken, LoginError
from authgate.authn.tokens import HandOff, LoginState, SignInRequest, SignOutRequest, TokenBox
from authgate.config import build_runtime, settings_from_mapping
from authgate.config.runtime import generate_signing_key_b64
from authgate.session import SealedBox

MASTER = os.urandom(32)


def test_a_token_opens_where_it_was_bound_and_before_it_expires() -> None:
    box = TokenBox(MASTER, "authgate sign-in request v1", SignInRequest, ttl_s=60)
    request = SignInRequest(target="https://a.test/x", nonce="n" * 32, route_netloc="a.test")
    sealed = box.seal(request, bound_to="auth.test")
    opened = box.open(sealed, bound_to="auth.test")
    assert opened.value == request
    assert time.time() + 55 < opened.expires_at <= time.time() + 60
    with pytest.raises(InvalidToken):
        box.open(sealed, bound_to="other.test")
    with pytest.raises(InvalidToken):
        box.open(sealed[:-2], bound_to="auth.test")
    with pytest.raises(InvalidToken):
        box.open(None, bound_to="auth.test")


def test_an_expired_token_is_refused_by_the_box_itself() -> None:
    box = TokenBox(MASTER, "authgate hand-off v1", HandOff, ttl_s=-1)
    sealed = box.seal(HandOff({"sid": "s"}, "https://a.test/", "n", "jti"), bound_to="a.test")
    with pytest.raises(ExpiredToken) as caught:
        box.open(sealed, bound_to="a.test")
    assert isinstance(caught.value, LoginError)  # one root for the package


@pytest.mark.parametrize(
    "payload",
    [
        {"t": "https://a.test/", "n": "x"},  # no route host
        {"t": 1, "n": "x", "h": "a.test"},  # wrong type
        {"t": "https://a.test/", "n": "x", "h": "a.test", "exp": "soon"},  # expiry not a number
        {"t": "https://a.test/", "n": "x", "h": "a.test", "exp": True},
    ],
)
def test_a_malformed_token_sealed_with_the_real_key_is_invalid(payload: dict[str, object]) -> None:
    payload = {"exp": int(time.time()) + 60, **payload}
    sealed = SealedBox(MASTER, "authgate sign-in request v1").seal(payload, bound_to="auth.test")
    box = TokenBox(MASTER, "authgate sign-in request v1", SignInRequest, ttl_s=60)
    with pytest.raises(InvalidToken):
        box.open(sealed, bound_to="auth.test")


def test_tokens_sealed_in_the_earlier_format_still_open() -> None:
    """Upgrades: a login in flight (sealed by the previous release as a plain dict) goes on."""
    exp = int(time.time()) + 60
    earlier = {
        "authgate sign-in request v1": {"t": "https://a.test/j", "n": "nn", "h": "a.test"},
        "authgate login state v1": {
            "state": "s",
            "nonce": "n",
            "pkce": "v",
            "req": {"t": "https://a.test/j", "n": "nn", "h": "a.test"},
        },
        "authgate hand-off v1": {"s": {"sid": "x"}, "t": "https://a.test/", "n": "n", "jti": "j"},
        "authgate sign-out v1": {"rd": "https://a.test/", "sid": "x"},
    }
    kinds = {
        "authgate sign-in request v1": SignInRequest,
        "authgate login state v1": LoginState,
        "authgate hand-off v1": HandOff,
        "authgate sign-out v1": SignOutRequest,
    }
    for purpose, payload in earlier.items():
        sealed = SealedBox(MASTER, purpose).seal({**payload, "exp": exp}, bound_to="h")
        opened = TokenBox(MASTER, purpose, kinds[purpose], ttl_s=60).open(sealed, bound_to="h")  # type: ignore[type-var]
        assert opened.value.to_wire() == payload
        assert opened.expires_at == exp


def test_repr_of_the_runtime_config_shows_no_secret() -> None:
    cookie_secret = base64.b64encode(os.urandom(32)).decode()
    signing_key = generate_signing_key_b64()
    settings = settings_from_mapping(
        {
            "authenticate_service_url": "https://auth.test",
            "certificate_file": __file__,
            "certificate_key_file": __file__,
            "idp_provider_url": "https://idp.test",
            "idp_client_id": "c",
            "idp_client_secret": "very-secret-client-value",
            "cookie_secret": cookie_secret,
            "signing_key": signing_key,
            "routes": [{"from": "https://a.test", "to": "http://127.0.0.1:1"}],
        }
    )
    cfg = build_runtime(settings, warn=False)
    shown = repr(cfg) + repr(settings) + str(settings)
    for secret in ("very-secret-client-value", cookie_secret, signing_key[:40]):
        assert secret not in shown
    assert repr(cfg.cookie_key) not in shown
