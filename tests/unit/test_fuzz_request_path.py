"""Property-based fuzzing of the request path (bounded, runs in CI): cookie codec, hand-off
parser, redirect validator, header sanitiser, and whole Check requests through decide().

The contracts live in fuzz/targets.py, shared with the atheris harness (`make fuzz`).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import targets
from tests.security_summary import fuzzed

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_CORPUS = Path(__file__).resolve().parents[1] / "data/open-redirects.txt"
REDIRECT_SEEDS = [line for line in _CORPUS.read_text(encoding="utf-8").split("\n") if line]

b64_text = st.from_regex(r"[A-Za-z0-9_\-]{0,600}", fullmatch=True)
sealed_like = st.binary(min_size=0, max_size=300).map(
    lambda raw: base64.urlsafe_b64encode(b"\x01" + raw).rstrip(b"=").decode()
)
any_text = st.text(max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


# ---------------------------------------------------------------------------- cookie codec


@FUZZ
@given(value=any_text | b64_text | sealed_like)
def test_fuzz_cookie_values_never_open(value: str) -> None:
    fuzzed("cookie codec")
    targets.check_cookie_value(value)


@FUZZ
@given(position=st.integers(0, 10_000), replacement=st.text(max_size=4), cut=st.integers(0, 500))
def test_fuzz_mutated_genuine_cookie_never_opens(position: int, replacement: str, cut: int) -> None:
    fuzzed("cookie codec")
    targets.check_cookie_mutation(position, replacement, cut)


cookie_names = st.sampled_from(
    [
        "__Host-_pomerium",
        "__Host-_pomerium_login",
        "_pomerium",
        "JSESSIONID",
        "a",
        " __Host-_pomerium",
    ]
) | st.text(max_size=12)
cookie_pairs = st.lists(st.tuples(cookie_names, st.text(max_size=20)), max_size=8)


@FUZZ
@given(
    pairs=cookie_pairs,
    separator=st.sampled_from(["; ", ";", " ; ", ";;", "; ;"]),
    raw=any_text,
    use_raw=st.booleans(),
)
def test_fuzz_cookie_header_stripping(
    pairs: list[tuple[str, str]], separator: str, raw: str, use_raw: bool
) -> None:
    fuzzed("cookie header")
    header = raw if use_raw else separator.join(f"{n}={v}" for n, v in pairs)
    targets.check_cookie_header(header)


# ---------------------------------------------------------------------------- hand-off


nonces = st.from_regex(r"[0-9a-f]{32}", fullmatch=True) | st.text(max_size=40)


@FUZZ
@given(token=any_text | b64_text | sealed_like, nonce=nonces)
def test_fuzz_handoff_tokens_nobody_sealed(token: str, nonce: str) -> None:
    fuzzed("hand-off parser")
    targets.check_handoff_token(token.replace("&", "%26").replace("#", "%23"), nonce)


def _session_payloads() -> st.SearchStrategy[object]:
    """What a hand-off says of its session: a reference (sid, iat, exp). `good` names the one
    session in the worker's store, so every part of it counts."""
    good = targets.genuine_ref().to_wire()
    return (
        st.fixed_dictionaries(
            {},
            optional={k: st.just(v) | json_values for k, v in good.items()},
        )
        | st.just(good)
        | st.just({**good, "exp": int(time.time()) - 1})  # the reference says it has ended
        | json_values
    )


def _handoff_payloads(nonce: str) -> st.SearchStrategy[object]:
    now = int(time.time())
    parts: dict[str, st.SearchStrategy[object]] = {
        "s": _session_payloads(),
        "t": st.sampled_from(
            [
                targets.ORIGIN + "/x",
                "/x",
                "https://evil.test/",
                "//evil.test/",
                "javascript:alert(1)",
                "https://public.test:8443/",
            ]
        )
        | st.sampled_from(REDIRECT_SEEDS)
        | any_text,
        "n": st.just(nonce) | nonces,
        "exp": st.sampled_from([now + 60, now - 1, str(now + 60), float(now + 60)]) | json_values,
        "jti": st.uuids().map(str) | json_values,
    }
    # A hand-off the server would make (a new jti each), then the same with one part drawn
    # from the above: the accepted path is reached, and every part's refusal is tried alone.
    right = st.uuids().map(
        lambda jti: {
            "s": targets.genuine_ref().to_wire(),
            "t": targets.ORIGIN + "/x",
            "n": nonce,
            "exp": now + 60,
            "jti": str(jti),
        }
    )
    one_part = st.sampled_from(sorted(parts)).flatmap(lambda k: st.tuples(st.just(k), parts[k]))
    one_part_changed = st.tuples(right, one_part).map(lambda t: {**t[0], t[1][0]: t[1][1]})
    one_part_missing = st.tuples(right, st.sampled_from(sorted(parts))).map(
        lambda t: {k: v for k, v in t[0].items() if k != t[1]}
    )
    return (
        st.fixed_dictionaries({}, optional=parts)
        | right
        | one_part_changed
        | one_part_missing
        | json_values
    )


@FUZZ
@given(data=st.data())
def test_fuzz_handoff_payloads_sealed_with_the_real_key(data: st.DataObject) -> None:
    fuzzed("hand-off parser")
    nonce = "0123456789abcdef0123456789abcdef"
    payload = data.draw(_handoff_payloads(nonce))
    targets.check_handoff_payload(payload, nonce)


# ---------------------------------------------------------------------------- redirects


redirect_candidates = (
    any_text
    | st.sampled_from(REDIRECT_SEEDS)
    | st.tuples(
        st.sampled_from(REDIRECT_SEEDS),
        st.integers(0, 200),
        st.sampled_from(list("/\\@:.%#?\t \x00")),
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :])
    | st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from(["", "/", "//", "https://app.test:8443", "https://app.test:8443@", "/\\"]),
        any_text,
    )
)


@FUZZ
@given(candidate=redirect_candidates)
def test_fuzz_redirect_validator(candidate: str) -> None:
    fuzzed("redirect validator")
    targets.check_redirect(candidate)


# ---------------------------------------------------------------------------- headers

header_names = (
    st.sampled_from(
        [
            "x-pomerium-jwt-assertion",
            "x-pomerium-claim-email",
            "x-pomerium-claim-groups",
            "x_pomerium_claim_email",
            "x-pomerium_jwt_assertion",
            "x-pomerium",
            "x-pomeriumx",
            "x-pomerium-anything",
            "cookie",
            "accept",
            "authorization",
        ]
    )
    | st.from_regex(r"[a-z0-9_\-]{1,30}", fullmatch=True).map(lambda s: "x-pomerium" + s)
    | st.from_regex(r"[a-z0-9_\-]{1,30}", fullmatch=True)
)
header_values = st.text(max_size=60) | st.builds(
    lambda a, b: f"{a}={b}",
    st.sampled_from(["__Host-_pomerium", "__Host-_pomerium_login", "x"]),
    st.text(max_size=20),
)


@FUZZ
@given(headers=st.dictionaries(header_names, header_values, max_size=12), signed_in=st.booleans())
def test_fuzz_header_sanitiser(headers: dict[str, str], signed_in: bool) -> None:
    fuzzed("header sanitiser")
    targets.check_forward(headers, signed_in)


# ---------------------------------------------------------------------------- whole Check


internal_paths = st.sampled_from(
    [
        "/.pomerium/callback?handoff=",
        "/.pomerium/sign_out?csrf=",
        "/.pomerium/sign_out?pomerium_redirect_uri=",
        "/.pomerium/",
        "/.well-known/pomerium/jwks.json",
        "/.well-known/pomerium",
        "/.pomerium/sign_in?req=",
        "/oauth2/callback?state=",
        "/oauth2/callback?code=x&state=",
        "/.pomerium/signed_out?state=",
        "/",
    ]
)


@FUZZ
@given(
    kind=st.sampled_from(["route", "internal", "authenticate"]) | st.text(max_size=10),
    route_id=st.sampled_from(["route-0", "route-1", "__authenticate__"]) | st.text(max_size=10),
    method=st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PUT"]) | st.text(max_size=8),
    host=st.sampled_from(["app.test:8443", "public.test:8443", "authenticate.test:8443"])
    | st.text(max_size=20),
    path=st.builds(lambda p, q: p + q, internal_paths, any_text | b64_text | sealed_like)
    | st.text(max_size=100).map(lambda s: "/" + s),
    headers=st.dictionaries(
        header_names | st.sampled_from(["origin", "sec-fetch-site"]), header_values, max_size=6
    ),
    cookie=st.sampled_from(["", "genuine", "junk"]),
)
def test_fuzz_whole_check_requests(
    kind: str,
    route_id: str,
    method: str,
    host: str,
    path: str,
    headers: dict[str, str],
    cookie: str,
) -> None:
    fuzzed("Check pipeline")
    if cookie == "genuine":
        headers = {**headers, "cookie": f"__Host-_pomerium={targets.genuine_cookie()}"}
    elif cookie == "junk":
        headers = {**headers, "cookie": "__Host-_pomerium=AQ" + "A" * 60}
    targets.check_request(kind, route_id, method, host, path, headers)


@FUZZ
@given(a=st.text(max_size=40), b=st.text(max_size=40), same=st.booleans())
def test_fuzz_constant_time_text_equality(a: str, b: str, same: bool) -> None:
    """The comparison used for nonces, state and session ids takes any text (hmac's own raises
    TypeError on non-ASCII str, which a client could send: a 503 before this helper)."""
    fuzzed("constant-time comparison")
    from authgate.session import same_text

    other = a if same else b
    assert same_text(a, other) is (a == other)
