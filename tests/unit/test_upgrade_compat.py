"""Upgrades keep people signed in: values sealed by this release must open in every later one.

The strings below were sealed ONCE by the code of the commit that added them, with the fixed
test secret below, and pasted here as literals; never regenerate them to make this test pass.
If a change makes one of them stop opening, sessions (users signed out) or logins in flight (a
failed sign-in page) break across an upgrade: keep reading the old format beside the new one
instead.

- the session cookie: a `SessionRef` sealed by `ReferenceCodec` (purpose "authgate session
  reference v2"), bound to the host, naming a session in the store;
- the session record the store keeps: `RecordSealer` (purpose "authgate session record v1"),
  bound to the session id (a record that stops opening signs its user out just the same);
- the login flow's tokens: `TokenBox` with the purposes `AuthzState.build` uses today, sealed
  with the raw `SealedBox` in their wire format (`to_wire()` plus "exp") and an expiry in the
  year 2100, since `TokenBox.seal` would use now + ttl.

One deliberate break: the session cookies of the releases before the session store
(`SessionCodec`, purpose "authgate session v1", the whole session sealed in the cookie) are no
longer read. They are kept below to check that they read as "no session" (their users sign in
again), cleanly.

Anything authgate cannot open (another cookie_secret, a format version it does not know) must
read as "no session" / InvalidToken, never as an exception.
"""

import base64
import os

import pytest

from authgate.authn.errors import InvalidToken
from authgate.authn.tokens import (
    CsrfToken,
    HandOff,
    LoginState,
    SignedOutState,
    SignInRequest,
    SignOutRequest,
    TokenBox,
)
from authgate.authz.state import AuthzState
from authgate.config import build_runtime, settings_from_mapping
from authgate.config.runtime import generate_signing_key_b64
from authgate.policy import Identity
from authgate.session import SealedBox, Session
from authgate.session.record import IdpTokens, RecordSealer
from authgate.session.reference import ReferenceCodec, SessionRef

# A fixed test secret: the literals below were sealed with it. Not a secret of any deployment.
COOKIE_SECRET = "GSi1b735FS3wQ5/2gN7esd7F35lLS9cnp6buFUD4wNw="
ROUTE_HOST = "jenkins.example.com"
AUTHN_HOST = "authenticate.example.com"
EXPIRES_2100 = 4102444800  # 2100-01-01T00:00:00Z

SESSION = Session(
    sid="pinned-session-id-0001",
    identity=Identity(
        user="alice-sub-1234",
        email="alice@example.com",
        name="Alice Example",
        groups=("admins", "jenkins-users"),
        claims={
            "sub": "alice-sub-1234",
            "email": "alice@example.com",
            "name": "Alice Example",
            "groups": ["admins", "jenkins-users"],
            "email_verified": True,
        },
    ),
    issued_at=1767225600,  # 2026-01-01T00:00:00Z
    expires_at=EXPIRES_2100,
)
SESSION_REF = SessionRef(SESSION.sid, SESSION.issued_at, SESSION.expires_at)
TOKENS = IdpTokens(
    access_token="access-pinned", refresh_token="refresh-pinned", access_expires_at=4102444800.0
)
SIGN_IN_REQUEST = SignInRequest(
    target="https://jenkins.example.com/job/build/",
    nonce="0123456789abcdef0123456789abcdef",
    route_netloc=ROUTE_HOST,
)

# ---- sealed by the release that introduced the session store (do not regenerate) ----

# The session cookie (a reference) on the Jenkins route host, and on the authenticate host.
SESSION_REF_JENKINS = (
    "ATc6-Up8i2eMQl7oCsitYHX8_WRQwgvqnaa2jdDbhPJcxcRH0g_vNZ52gyglILTKjgZyjcSQ8yhtFbtDsmEo"
    "KjxNqbXfVgkajbzV1BA4zRCW2k_et3K9nyfcQ_LHbEM"
)
SESSION_REF_AUTHN = (
    "AQfDV21Jju7Hf1lpM2EvATxvCUEdR1aJ6M52vdoKBaCILnQcSBdUFFqcZkslNvODB7Z-Iq_TkbRk24i-xJbw"
    "Toz935XqbL_UEK7-Uu3bXak7h5Y23V1an3noOLTjIt4"
)

# The session record's sealed data, as the store keeps it (SESSION's identity and TOKENS).
RECORD = (
    "AaYWWf0n_NrrzfefQtfcmFljq7W1Nq3JklGz5fN-g1yn-Gjcj3b6he96pdaKfn8WXEaK5VgLbpC8O2iQTtJT"
    "iysOcxhE3N-Xhpc6NkC3WLV0uA-xSNK7650lyJHHzq57THz_PgHQelyH81o4NxXlzB8yzOXrlj3lXyLcsiNX"
    "fLDMWtplPG5Q6L9ageXxSR8xy_esFCsHyFyBlc0ZDxt5DknkjU_GQMI--6m9kYu8XjdSJ68xQNQHHgYq73OC"
    "kZN_OjJi_2oac7esLZAocawrBvPdl1IXHeD_9x-_i4KuRmtwbqgQZrxCROhuMYOh8yzUmNfbr6yGeqSf6ZOh"
    "oGXpP0AnNzq9Fwx0HyTkYypG1jh8eIlnx5YfIFJY3FNNeHw78JZHFLrT0ap-_ncuQ5RiMsVemTGKEJFVy3T0"
    "4rHBaNn3ceVjo9b-4De3KdF00zBWiCVzri4tWzpqM8NuqQG7dq8tC35T"
)

# Hand-off (authenticate host -> route host) carrying the session's reference, bound to the
# route host.
HANDOFF_REF = (
    "AXGBBQvzUJ4gkX7GnFoXnQbYTqYZcBDlhZL0-sCkjbRMPQlU9iwcJDISV-lI2vKYKUVUaD7nIT8d3X75On9l"
    "QAZQ_bG9WqF2uVV30J3JzJQ2EQ-_3_POfsGAx-s3PU7SNMtIcjCcMYq332Nz-4QQZTmE1m9BohzYxjZWsveo"
    "iV-9bEFeui8CtccyJnnyLElJIHdMhMVDMq2t99Nx1kCCFIDQdhnssGVoqBTGuUwkcwTSRQzW-twUGb2SId9P"
    "FRy7PjR-y_Yxd2iuqpCrAKlj7TCKIIBBHsH6YCF13Y5YzDhEfd7pJm9Ebw"
)

# ---- sealed by the release that introduced this test (do not regenerate) ----

# The session cookie of that release (`SessionCodec`, the whole session sealed) on the Jenkins
# route host, and on the authenticate host: no longer read since the session store.
SESSION_JENKINS = (
    "AZ2fYyl3gNTlnHbEaOX4u_Vv-a2izdcLw-dH9IzGE3KG5ECpHPqViJ2YLCyzgr34bQKysRl2yOl6fcICzMLo"
    "lZo_nHPEt_cGVRUV3acbBG6PGY5e-8B73woN71hntVnsMQ3WBpQz7BURMeWRxVCLaDpPI01KqFka6q340baR"
    "-pYMQHQLH-kt911aF6tRSwiVdcWlXbWSz_7VH18FxL4m5HuawL1GkI9f2LIAJ6fToYXF1xdiqMGf92qAHLZf"
    "jSmEDzBm-6WoCLjODt4qse2E9gq-9Wf3alvDCvyxeOLMbYuTuIMkjeZ45lFBlXevdvt1jUeDPp_fZaChLyKg"
    "EErhrF5rggoE24R4PSEovAPXqn39ltpdpURPRx38jAD-rFiexDhnmAuxKRhhVLSWIfNY64TAW6O66UlCDb1S"
    "jgjwE4oz7US_T-7neB6kZpGKFPuV58gnucmolxInqxD-3w"
)
SESSION_AUTHN = (
    "AZQpCLFBKKG2hBTTJNgAPnGEgvU8S0mmVLEf6dziPwLFbUcGo7mx1zNGVejf2n7qYX8ng3gGUHIUtWfu5Vz9"
    "fbdR0ZqAXI1XF9pKrXXKOw15nLNuQwtBuBwy_eWxIzNVCn0OvZrP_ZuWSX4NLoRdkyz_rHIwGlCt_n1CZsz2"
    "8IjBMi6rdxol3v_bzo_PzyoNWn1O7obtuo6avvUPyiHGamTc-dK1Am8FhURBHi1rpPZrxekVU86HNeRt_Bg9"
    "B8HkL6binZBnXBMaNeDaKqrPbNnZRsCO3Q9fQk4r3PUv2RX_OzaSeitExZqb--q2wVFLIulUrRrYy-B1zlfC"
    "HR6Ez_9jxl2srxiQHAAovBqxMREb1mvp3uGGFnfGUMCz_svVVkjCdGftLmdTCmuu46zyW511rIWLpzJDdSt2"
    "4WgtfmG6E3uMtVZJgx7Igvk9b4dqTRe3TIm5HUbBVi0I5w"
)

# Sign-in request (route host -> authenticate host), bound to the authenticate host.
SIGN_IN = (
    "AfY8fkOoAx8oNKjiRY-dZRSZBT2xBrZBBJkRkjSYGdU9450_7hA7CIpu6u_tIdCPlmE1oncKKylRac-Kvnkb"
    "ZmJcONrEoscWsRsp8PQyNNetIjUHZmiaqrA4co2oR73M8MenXZ_-me1DQFNalwnQ6GjshQC53q3myY-1rIpd"
    "m0UVzmC9eZraVn9xunnv_wdlheuNh412GE1dFgtG2A"
)

# The authenticate host's in-flight IdP login (a cookie there).
LOGIN = (
    "AcTYJq-O5JpaCFJO4jxnURFcxx1cP3qNj9ij4oSE0d7feul8iENN7nTakOKIv7aYiKd1a6lTQmsCI04KcvGq"
    "TwBMwyChAxJssGtgpKS7oSzTWL1ZLtUzyW_fUnHtkhovpl7mbs5uJd1Y9gNThlVXlpy1hdMOzsFjuFhHty3w"
    "vPDCANQl9x0QJf959AIiXk81sxgFLRsaHDsUH4Igz7R6HYwmr61q8z0WgmoXmqoA_PgdEiv-KVypJYS2i2QI"
    "CXz2IiJaRI6Hd8W4yi5Mp9YMPcuRmRtYGLSSPXBhkAc4PJBo54Osq-0euXdFNAotioXS4VbDHAoViA"
)

# Hand-off (authenticate host -> route host) carrying the whole session, bound to the route
# host.
HANDOFF = (
    "AWth9qJL1DxnI6d6bOIank3lfiVif90TGaYuOoTgDb3H8KN2er8_jhEIxKk3bhdTR_hPJ2YrQ7oI74i760p2"
    "VO4acCi0rsNLzcD6_92tc6rgQUeNL719znOgmvBzXySJQODTjIkM_kA79zCnj6qlaBXDgsMJDyveDs-q8xdp"
    "DZ8kOnCyB_0Wq4TcVWWH1kgTN4pUSp1fpHoDDZv6QSlsN08HZpDNTX3e205LjMZj-nsmfIDT6BPkJI4H9DU9"
    "m-Xl32VBEZeiXBV2JInerqoOAhJisER6zsJND40cKTT1PgsGaJbhAj9f8tLN-bIukWRjH2GRmrRzFFoaPimV"
    "YcyiYUXcPwBUyKwpoH5xKJ438OKq86zugNTL8gLYx29SioXdJdpGXi_hGRv06c0Pq2ZMS0QmYCFy3k0mDlrC"
    "vWPXgM-y8hBBL8rNX8iza9FC4Jtegp4X_8_CM5b_GY2la51DekVt_4jbNWJBGW5HEU0V8_Vm-BliRXbAy0A-"
    "gZ6TRgeF0zYA1VY67ws2RoXFcldCY8GsjrGXgwJE1xIOKNFkPvM0lVxURTzT9o5FAGyMreyM9DR4sbO6puIu"
    "PsyRKAPdPbv88EmWR-iswVRR5UyFZxuX-F0FzdJqjmq2SfLP6fM31a8V"
)

# Sign-out request, bound to the authenticate host.
SIGN_OUT = (
    "AfLSbYoiq80bz4fReS8ObLCf6aLP6huQmKiVQgXhv7vIRJx4M6vEQW5B0CiUfAqbWqOpAvWOolE9qhy2pzaX"
    "gcsDr9jTiOuVEkFbEf4S7ZJuFatwg7qSD0IMrjJwyO0PR3R6JrioJNZ-9FkN7CqEeD43"
)

# The `state` through the IdP's logout, bound to "<authenticate host>/signed_out".
SIGNED_OUT = (
    "AXERh550u9HmohSNVukjeYmggoLzQTaibhtb8FJC3arpDdV8lxY66hYQb7uZcPc6_YJTkMCT7ThFhDOqeGMn"
    "FqSj51gxxiJYESx_nnHSG_EvY2I"
)

# A route host's sign-out form token.
CSRF = (
    "AW41ePyoLs6pVont2jUYz1H6MrOr0Cra7rpkr4ZmmdJIGginxRQEAyOCRDnBRODwhibHZHqfb4p35rAnSiP_"
    "b99VsgHf3jLpKXTJ0Q8O"
)


def _state(cookie_secret: str = COOKIE_SECRET) -> AuthzState:
    """The boxes exactly as a worker builds them today (purposes, keys, bindings)."""
    settings = settings_from_mapping(
        {
            "authenticate_service_url": f"https://{AUTHN_HOST}",
            "certificate_file": "/etc/authgate/tls/cert.pem",
            "certificate_key_file": "/etc/authgate/tls/key.pem",
            "idp_provider_url": "https://idp.example.com",
            "idp_client_id": "authgate",
            "idp_client_secret": "client-secret",
            "cookie_secret": cookie_secret,
            "signing_key": generate_signing_key_b64(),
            "routes": [
                {
                    "from": f"https://{ROUTE_HOST}",
                    "to": "unix:///run/jenkins/jenkins.socket",
                    "allow_any_authenticated_user": True,
                }
            ],
        },
        environ={},  # no COOKIE_SECRET etc. from the environment running the tests
    )
    return AuthzState.build(build_runtime(settings, warn=False))


def _tokens(state: AuthzState) -> list[tuple[str, TokenBox, str, object]]:  # type: ignore[type-arg]
    """(literal, today's box for it, where it is bound, what it must open to)."""
    return [
        (SIGN_IN, state.sign_in_box, AUTHN_HOST, SIGN_IN_REQUEST),
        (
            LOGIN,
            state.login_box,
            AUTHN_HOST,
            LoginState(
                state="state-pinned",
                nonce="nonce-pinned",
                code_verifier="verifier-pinned-0123456789",
                request=SIGN_IN_REQUEST,
            ),
        ),
        (
            SIGN_OUT,
            state.signout_box,
            AUTHN_HOST,
            SignOutRequest(redirect="https://jenkins.example.com/", session_id=SESSION.sid),
        ),
        (
            SIGNED_OUT,
            state.signed_out_box,
            f"{AUTHN_HOST}/signed_out",
            SignedOutState(redirect="https://jenkins.example.com/"),
        ),
        (CSRF, state.csrf_box, ROUTE_HOST, CsrfToken(session_id=SESSION.sid)),
    ]


def test_session_cookies_sealed_by_an_earlier_release_still_open() -> None:
    state = _state()
    for value, host in ((SESSION_REF_JENKINS, ROUTE_HOST), (SESSION_REF_AUTHN, AUTHN_HOST)):
        assert state.sessions.reference(value, host) == SESSION_REF
        # The same through a codec of its own (no cache shared with the state above).
        assert ReferenceCodec(state.cfg.cookie_key).decode(value, host) == SESSION_REF
    # Still bound to its host.
    assert state.sessions.reference(SESSION_REF_JENKINS, AUTHN_HOST) is None
    assert state.sessions.reference(SESSION_REF_AUTHN, ROUTE_HOST) is None


def test_session_records_sealed_by_an_earlier_release_still_open() -> None:
    sealer = RecordSealer(_state().cfg.cookie_key)
    data = sealer.open(SESSION.sid, RECORD.encode("ascii"))
    assert data is not None
    assert data.identity == SESSION.identity
    assert data.identity.groups == ("admins", "jenkins-users")
    assert data.tokens == TOKENS
    # Bound to its session id: the same blob is nothing for another session.
    assert sealer.open("another-session-id", RECORD.encode("ascii")) is None


def test_session_cookies_of_the_releases_before_the_store_are_no_session() -> None:
    """By design since the session store: the old cookies (the whole session sealed) read as
    "no session", cleanly, and their users sign in again."""
    state = _state()
    for value, host in ((SESSION_JENKINS, ROUTE_HOST), (SESSION_AUTHN, AUTHN_HOST)):
        # They are genuine cookies of that release (the old purpose opens them) ...
        old = SealedBox(state.cfg.cookie_key, "authgate session v1").open(value, bound_to=host)
        assert old is not None
        assert (old["sid"], old["email"], old["exp"]) == (
            SESSION.sid,
            SESSION.identity.email,
            EXPIRES_2100,
        )
        # ... and no session now, with no exception.
        assert state.sessions.reference(value, host) is None
        assert ReferenceCodec(state.cfg.cookie_key).decode(value, host) is None


def test_login_tokens_sealed_by_an_earlier_release_still_open() -> None:
    state = _state()
    for value, box, bound_to, expected in _tokens(state):
        opened = box.open(value, bound_to=bound_to)
        assert opened.value == expected, box.box.purpose
        assert opened.expires_at == EXPIRES_2100


def test_a_hand_off_sealed_by_an_earlier_release_still_opens() -> None:
    state = _state()
    for value, jti in ((HANDOFF_REF, "handoff-jti-pinned-v2"), (HANDOFF, "handoff-jti-pinned")):
        opened = state.handoff_box.open(value, bound_to=ROUTE_HOST)
        handoff = opened.value
        assert isinstance(handoff, HandOff)
        assert (handoff.target, handoff.nonce, handoff.token_id) == (
            SIGN_IN_REQUEST.target,
            SIGN_IN_REQUEST.nonce,
            jti,
        )
        # The session it hands off, read as the callback reads it: a reference. (The older
        # hand-off carries the whole session, whose sid, iat and exp are that reference; the
        # session it names is not in a store that release never wrote, so the callback refuses
        # it: a sign-in in flight during that upgrade starts over.)
        assert SessionRef.from_wire(handoff.session) == SESSION_REF
        assert opened.expires_at == EXPIRES_2100


def _with_version(value: str, version: int) -> str:
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return base64.urlsafe_b64encode(bytes([version]) + raw[1:]).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "variant",
    ["another cookie_secret", "future format version 0x02", "format version 0x00"],
)
def test_what_cannot_be_opened_is_no_session_never_an_error(variant: str) -> None:
    if variant == "another cookie_secret":
        state = _state(base64.b64encode(os.urandom(32)).decode())

        def change(value: str) -> str:
            return value

    else:
        state = _state()
        version = 0x02 if "0x02" in variant else 0x00

        def change(value: str) -> str:
            return _with_version(value, version)

    cookies = (
        (SESSION_REF_JENKINS, ROUTE_HOST),
        (SESSION_REF_AUTHN, AUTHN_HOST),
        (SESSION_JENKINS, ROUTE_HOST),
        (SESSION_AUTHN, AUTHN_HOST),
    )
    for value, host in cookies:
        assert state.sessions.reference(change(value), host) is None
    # The same through a codec of its own (no cache shared with the state above).
    codec = ReferenceCodec(state.cfg.cookie_key)
    assert codec.decode(change(SESSION_REF_JENKINS), ROUTE_HOST) is None
    assert RecordSealer(state.cfg.cookie_key).open(SESSION.sid, change(RECORD).encode()) is None
    for value, box, bound_to, _expected in [
        *_tokens(state),
        (HANDOFF, state.handoff_box, ROUTE_HOST, None),
        (HANDOFF_REF, state.handoff_box, ROUTE_HOST, None),
    ]:
        with pytest.raises(InvalidToken):
            box.open(change(value), bound_to=bound_to)
