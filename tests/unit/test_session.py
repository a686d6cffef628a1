"""Sealed values and session cookies: anything not ours, or not for here, is simply no session."""

import base64
import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.session import SealedBox, Session
from authgate.session.cookies import (
    clear_cookie,
    cookie_header_without,
    first_cookie,
    parse_cookie_header,
    parse_cookie_headers,
    set_cookie,
    without_cookies,
)
from authgate.session.reference import PURPOSE, ReferenceCodec, SessionRef
from tests.support.sessions import previous_format

MASTER = os.urandom(32)
BOX = SealedBox(MASTER, "authgate session v1")
HOST = "jenkins.test:8443"
PAYLOAD = {"sid": "abc", "email": "alice@example.com", "groups": ["admins"], "n": 1}
B64URL = string.ascii_letters + string.digits + "-_"


def sealed(payload: dict[str, object] | None = None, host: str = HOST) -> str:
    return BOX.seal(PAYLOAD if payload is None else payload, bound_to=host)


# ---- SealedBox -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {},
        PAYLOAD,
        {"name": "Zoë Ünïcödé ✓", "nested": {"list": [1, 2.5, True, None]}},
        {"big": "x" * 3000},
    ],
)
def test_seal_open_round_trip(payload: dict[str, object]) -> None:
    token = BOX.seal(payload, bound_to=HOST)
    assert BOX.open(token, bound_to=HOST) == payload
    assert token.isascii()
    assert set(token) <= set(B64URL)  # cookie- and URL-safe as it is


def test_sealing_twice_gives_different_tokens() -> None:
    assert sealed() != sealed()


def test_every_single_character_change_is_refused() -> None:
    """Changing any character but the last one changes the ciphertext: no session."""
    token = sealed()
    for index in range(len(token) - 1):
        for replacement in (B64URL[(B64URL.index(token[index]) + 1) % 64], "A", "_"):
            if replacement == token[index]:
                continue
            tampered = token[:index] + replacement + token[index + 1 :]
            assert BOX.open(tampered, bound_to=HOST) is None, (index, replacement)


def test_a_change_in_the_last_character_never_opens_as_something_else() -> None:
    # The last base64 character may carry unused bits; it must never yield another payload.
    token = sealed()
    for replacement in B64URL:
        result = BOX.open(token[:-1] + replacement, bound_to=HOST)
        assert result is None or result == PAYLOAD


def test_every_truncation_is_refused() -> None:
    token = sealed()
    for length in range(len(token)):
        assert BOX.open(token[:length], bound_to=HOST) is None, length


def test_appended_data_is_refused() -> None:
    token = sealed()
    for extra in ("A", "AAAA", token[:8], token):
        assert BOX.open(token + extra, bound_to=HOST) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        " ",
        "A",
        "AAAA",
        "=",
        "====",
        "not a token",
        "é" * 40,
        "A" * 65536,
        "Q" * 8193,
        "\x00" * 64,
        "AQ" + "A" * 60,  # right version byte, zero nonce, junk
    ],
    ids=lambda t: repr(t[:12]) + f"..{len(t)}",
)
def test_garbage_is_refused(token: str) -> None:
    assert BOX.open(token, bound_to=HOST) is None


def test_non_ascii_inside_a_real_token_is_refused() -> None:
    token = sealed()
    assert BOX.open(token[:10] + "é" + token[11:], bound_to=HOST) is None
    assert BOX.open(token + "é", bound_to=HOST) is None


def test_huge_token_of_valid_base64_is_refused() -> None:
    token = base64.urlsafe_b64encode(b"\x01" + os.urandom(48 * 1024)).decode()
    assert len(token) >= 64 * 1024
    assert BOX.open(token, bound_to=HOST) is None


def test_other_secret_purpose_or_host_is_refused() -> None:
    token = sealed()
    assert SealedBox(os.urandom(32), "authgate session v1").open(token, bound_to=HOST) is None
    assert SealedBox(MASTER, "authgate hand-off v1").open(token, bound_to=HOST) is None
    assert BOX.open(token, bound_to="status.test:8443") is None
    assert BOX.open(token, bound_to="jenkins.test") is None
    assert BOX.open(token, bound_to="JENKINS.test:8443") is None
    assert BOX.open(token, bound_to="") is None


def test_non_object_plaintext_is_refused() -> None:
    # A value sealed correctly whose plaintext is JSON but not an object: still no session.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from authgate.session.sealed import derive_key

    aead = AESGCM(derive_key(MASTER, "authgate session v1"))
    for plain in (b"[1,2]", b'"text"', b"null", b"not json", b"\xff\xfe"):
        nonce = os.urandom(12)
        raw = b"\x01" + nonce + aead.encrypt(nonce, plain, HOST.encode())
        token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        assert BOX.open(token, bound_to=HOST) is None, plain


def test_reencoded_token_never_opens_as_something_else() -> None:
    """Standard base64, padding: the same bytes in another spelling give nothing new."""
    for _ in range(20):
        token = sealed()
        variants = [
            token.replace("-", "+").replace("_", "/"),
            token + "=" * (-len(token) % 4),
            token + "==",
            base64.b64encode(base64.urlsafe_b64decode(token + "==")).decode(),
        ]
        for variant in variants:
            assert BOX.open(variant, bound_to=HOST) in (None, PAYLOAD)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_open_arbitrary_text_is_none(text: str) -> None:
    assert BOX.open(text, bound_to=HOST) is None


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=B64URL + "=+/", max_size=300))
def test_open_arbitrary_base64_is_none(text: str) -> None:
    assert BOX.open(text, bound_to=HOST) is None


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_open_arbitrary_bytes_is_none(raw: bytes) -> None:
    for data in (raw, b"\x01" + raw):
        token = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        assert BOX.open(token, bound_to=HOST) is None


# ---- Session, and the session cookie (ReferenceCodec) ----------------------------------------

NOW = 1_800_000_000


def make_session(email: str = "alice@example.com", lifetime: int = 3600, now: int = NOW) -> Session:
    return Session.from_claims(
        {
            "sub": "u-alice",
            "email": email,
            "name": "Alice",
            "groups": "admins",
            "department": "eng",
            "iss": "https://idp.test",
            "aud": "authgate",
            "nonce": "n",
            "exp": now + 60,
        },
        lifetime,
        now=now,
    )


def test_session_from_claims_keeps_identity_and_drops_token_claims() -> None:
    session = make_session()
    ident = session.identity
    assert (ident.user, ident.email, ident.name, ident.groups) == (
        "u-alice",
        "alice@example.com",
        "Alice",
        ("admins",),
    )
    assert ident.claims == {
        "sub": "u-alice",
        "email": "alice@example.com",
        "name": "Alice",
        "groups": "admins",
        "department": "eng",
    }
    assert (session.issued_at, session.expires_at) == (NOW, NOW + 3600)
    assert session.sid
    assert make_session().sid != session.sid


def test_session_from_claims_without_optional_claims() -> None:
    session = Session.from_claims({"sub": "x"}, 60, now=NOW)
    assert (session.identity.email, session.identity.name, session.identity.groups) == ("", "", ())


def make_ref(lifetime: int = 3600, now: int = NOW, sid: str | None = None) -> SessionRef:
    """The reference a session cookie carries (what `SessionManager.cookie_value` seals)."""
    session = make_session(lifetime=lifetime, now=now)
    return SessionRef(sid or session.sid, session.issued_at, session.expires_at)


def test_reference_round_trip() -> None:
    codec = ReferenceCodec(MASTER)
    ref = make_ref()
    cookie = codec.encode(ref, HOST)
    assert codec.decode(cookie, HOST, now=NOW + 1) == ref
    assert SessionRef.from_wire(ref.to_wire()) == ref
    # A fresh codec (no cache) opens it the same.
    assert ReferenceCodec(MASTER).decode(cookie, HOST, now=NOW + 1) == ref


def test_reference_cookie_carries_no_identity() -> None:
    """The cookie names the session; who it is lives in the store (no groups in the cookie)."""
    ref = make_ref()
    cookie = ReferenceCodec(MASTER).encode(ref, HOST)
    opened = SealedBox(MASTER, PURPOSE).open(cookie, bound_to=HOST)
    assert opened == {"sid": ref.sid, "iat": NOW, "exp": NOW + 3600}
    assert len(cookie) < 200


def test_reference_respects_expiry_even_when_cached() -> None:
    codec = ReferenceCodec(MASTER)
    cookie = codec.encode(make_ref(lifetime=3600), HOST)
    assert codec.decode(cookie, HOST, now=NOW) is not None
    assert codec.decode(cookie, HOST, now=NOW + 3599) is not None
    assert codec.decode(cookie, HOST, now=NOW + 3600) is None
    assert codec.decode(cookie, HOST, now=NOW + 10**6) is None
    # issued in the future beyond the allowed clock skew
    assert codec.decode(cookie, HOST, now=NOW - 61) is None
    assert codec.decode(cookie, HOST, now=NOW - 59) is not None


def test_cookie_for_one_host_is_no_session_on_another() -> None:
    codec = ReferenceCodec(MASTER)
    cookie = codec.encode(make_ref(), "a.test:8443")
    assert codec.decode(cookie, "a.test:8443", now=NOW) is not None
    assert codec.decode(cookie, "b.test:8443", now=NOW) is None
    assert codec.decode(cookie, "a.test", now=NOW) is None
    assert codec.decode(cookie, "a.test:9443", now=NOW) is None


def test_cookie_from_another_secret_is_no_session() -> None:
    cookie = ReferenceCodec(os.urandom(32)).encode(make_ref(), HOST)
    assert ReferenceCodec(MASTER).decode(cookie, HOST, now=NOW) is None


def test_value_sealed_for_another_purpose_is_no_session() -> None:
    ref = make_ref()
    handoff = SealedBox(MASTER, "authgate hand-off v1").seal(ref.to_wire(), HOST)
    assert ReferenceCodec(MASTER).decode(handoff, HOST, now=NOW) is None


def test_cookie_of_the_previous_format_is_no_session() -> None:
    """The releases before the session store sealed the whole session ("authgate session v1");
    such a cookie is no session now (its user signs in again), even though it holds a sid, iat
    and exp."""
    session = make_session()
    old = SealedBox(MASTER, "authgate session v1").seal(previous_format(session), HOST)
    codec = ReferenceCodec(MASTER)
    assert codec.decode(old, HOST, now=NOW) is None
    assert codec.cached == 0


@pytest.mark.parametrize("value", ["", "junk", "é", "A" * 65536, "AQ" + "A" * 60])
def test_garbage_cookie_is_no_session(value: str) -> None:
    codec = ReferenceCodec(MASTER)
    assert codec.decode(value, HOST, now=NOW) is None
    assert codec.cached == 0


def test_tampered_cookie_is_no_session() -> None:
    codec = ReferenceCodec(MASTER)
    cookie = codec.encode(make_ref(), HOST)
    middle = len(cookie) // 2
    flipped = "A" if cookie[middle] != "A" else "B"
    assert codec.decode(cookie[:middle] + flipped + cookie[middle + 1 :], HOST, now=NOW) is None
    assert codec.decode(cookie[:-5], HOST, now=NOW) is None
    for index in range(len(cookie) - 1):  # every character but the last (spare bits)
        changed = "A" if cookie[index] != "A" else "B"
        tampered = cookie[:index] + changed + cookie[index + 1 :]
        assert codec.decode(tampered, HOST, now=NOW) is None, index


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"sid": "s", "iat": NOW},  # no exp
        {"sid": "s", "exp": NOW + 60},  # no iat
        {"iat": NOW, "exp": NOW + 60},  # no sid
        {"sid": "", "iat": NOW, "exp": NOW + 60},
        {"sid": 5, "iat": NOW, "exp": NOW + 60},
        {"sid": ["s"], "iat": NOW, "exp": NOW + 60},
        {"sid": "s", "iat": "now", "exp": NOW + 60},
        {"sid": "s", "iat": NOW, "exp": None},
        {"sid": "s", "iat": NOW, "exp": NOW + 60.5},
        {"sid": "s", "iat": True, "exp": NOW + 60},
    ],
)
def test_malformed_reference_is_no_session(payload: dict[str, object]) -> None:
    assert SessionRef.from_wire(payload) is None
    codec = ReferenceCodec(MASTER)
    cookie = SealedBox(MASTER, PURPOSE).seal(payload, HOST)
    assert codec.decode(cookie, HOST, now=NOW) is None
    assert codec.cached == 0


def test_decode_cache_is_bounded() -> None:
    codec = ReferenceCodec(MASTER, cache_size=100)
    cookies = [codec.encode(make_ref(), HOST) for _ in range(1000)]
    assert len(set(cookies)) == 1000
    for cookie in cookies:
        assert codec.decode(cookie, HOST, now=NOW) is not None
        assert codec.cached <= 100
    assert codec.cached == 100
    # an evicted cookie still decodes (it is simply decrypted again)
    assert codec.decode(cookies[0], HOST, now=NOW) is not None
    assert codec.cached <= 100


def test_cached_reference_is_still_host_bound() -> None:
    codec = ReferenceCodec(MASTER)
    cookie = codec.encode(make_ref(), "a.test")
    assert codec.decode(cookie, "a.test", now=NOW) is not None
    assert codec.decode(cookie, "b.test", now=NOW) is None


# ---- cookie headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", []),
        ("a=1", [("a", "1")]),
        ("a=1; b=2", [("a", "1"), ("b", "2")]),
        ("a=1;b=2", [("a", "1"), ("b", "2")]),
        ("  a=1 ;  b=2  ", [("a", "1"), ("b", "2")]),
        ('a="quoted"', [("a", "quoted")]),
        ("a=; b=2", [("a", ""), ("b", "2")]),
        ("a=x=y", [("a", "x=y")]),
        ("a=1; a=2", [("a", "1"), ("a", "2")]),
        ("junk; a=1; =nameless; ;; b=2; trailing;", [("a", "1"), ("b", "2")]),
        ("é=ü; a=1", [("é", "ü"), ("a", "1")]),
        (";;;", []),
    ],
)
def test_parse_cookie_header(header: str, expected: list[tuple[str, str]]) -> None:
    assert parse_cookie_header(header) == expected


@settings(max_examples=200, deadline=None)
@given(header=st.text(max_size=200))
def test_parse_cookie_header_never_raises(header: str) -> None:
    for name, value in parse_cookie_header(header):
        assert name
        assert ";" not in name and ";" not in value


def test_first_cookie() -> None:
    pairs = parse_cookie_header("a=1; s=first; s=second")
    assert first_cookie(pairs, "s") == "first"
    assert first_cookie(pairs, "missing") is None


OURS = frozenset({"_pomerium", "_pomerium_login"})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("JSESSIONID=abc; _pomerium=xyz; other=1", "JSESSIONID=abc; other=1"),
        ("_pomerium=xyz", ""),
        ("_pomerium=xyz; _pomerium_login=n", ""),
        ("_pomerium=a; keep=1; _pomerium=b", "keep=1"),
        ("a=1; b=2", "a=1; b=2"),
        # look-alikes and values that mention our name stay; our names go in any case
        (
            "_pomerium2=1; x_pomerium=2; _POMERIUM=3; v=_pomerium=4",
            "_pomerium2=1; x_pomerium=2; v=_pomerium=4",
        ),
        ("junk; _pomerium=x; a=1", "junk; a=1"),
        # the app's bytes are kept as sent, blanks included
        (" a=1 ;  _pomerium=x ;b=2 ", "a=1 ;b=2"),
        # every spelling of ours goes: comma joins (Envoy's for repeated headers), blanks
        ("a=1,_pomerium=x", "a=1"),
        ("_pomerium=x,a=1; b=2", "a=1; b=2"),
        ("a=1; _pomerium =x; \t_pomerium\t=y", "a=1"),
        # a comma inside an app's value stays
        ("d=Mon, 01 Jan 2024; _pomerium=x", "d=Mon, 01 Jan 2024"),
        ("", ""),
    ],
)
def test_cookie_header_without(header: str, expected: str) -> None:
    assert cookie_header_without(header, OURS) == expected


def test_cookie_bytes_outside_utf8_are_kept() -> None:
    header = b"x=\xff\xfe; _pomerium=abc; y=\x80z"
    assert without_cookies(header, OURS) == b"x=\xff\xfe; y=\x80z"
    assert parse_cookie_headers([b"a=1", header])[2] == ("_pomerium", "abc")


cookie_names = st.text(
    alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12
)
cookie_values = st.text(alphabet=string.ascii_letters + string.digits + "_-=.%/+", max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.one_of(st.sampled_from(sorted(OURS)), cookie_names), cookie_values),
        max_size=8,
    )
)
def test_cookie_header_without_removes_exactly_ours(pairs: list[tuple[str, str]]) -> None:
    header = "; ".join(f"{name}={value}" for name, value in pairs)
    result = cookie_header_without(header, OURS)
    assert parse_cookie_header(result) == [
        (name, value) for name, value in parse_cookie_header(header) if name.lower() not in OURS
    ]


def _attributes(header: str) -> tuple[str, list[str]]:
    first, *rest = header.split("; ")
    return first, rest


@pytest.mark.parametrize("secure", [True, False])
def test_set_cookie_attributes(secure: bool) -> None:
    first, attrs = _attributes(set_cookie("__Host-_pomerium", "v4lue", max_age=600, secure=secure))
    assert first == "__Host-_pomerium=v4lue"
    assert "HttpOnly" in attrs
    assert "SameSite=Lax" in attrs
    assert "Path=/" in attrs
    assert "Max-Age=600" in attrs
    assert ("Secure" in attrs) is secure
    assert not any(a.lower().startswith("domain") for a in attrs)  # required by __Host-


@pytest.mark.parametrize("secure", [True, False])
def test_clear_cookie(secure: bool) -> None:
    first, attrs = _attributes(clear_cookie("_pomerium", secure=secure))
    assert first == "_pomerium="
    assert "Max-Age=0" in attrs
    assert "Path=/" in attrs
    assert ("Secure" in attrs) is secure
