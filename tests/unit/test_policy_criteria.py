"""Every PPL criterion and matcher, table-driven, plus each Pomerium documentation example."""

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.errors import ConfigError
from authgate.policy import Identity, PolicyInput, compile_policy, normalize_groups
from authgate.policy.ppl import claim_values
from authgate.policy.timecrit import parse_days, parse_time_of_day

NOON = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday


def ident(
    email: str = "alice@example.com",
    user: str = "u-alice",
    groups: object = None,
    claims: dict[str, Any] | None = None,
) -> Identity:
    return Identity(
        user=user, email=email, name="Alice", groups=normalize_groups(groups), claims=claims or {}
    )


ALICE = ident()


def req(
    identity: Identity | None = ALICE,
    method: str = "GET",
    path: str = "/",
    ip: str = "203.0.113.7",
    now: datetime = NOON,
    headers: dict[str, str] | None = None,
) -> PolicyInput:
    return PolicyInput(
        identity=identity, method=method, path=path, source_ip=ip, now=now, headers=headers or {}
    )


def holds(criterion: dict[str, Any], inp: PolicyInput) -> bool:
    return compile_policy({"allow": {"and": [criterion]}}).allowed(inp)


def from_yaml(text: str) -> Any:
    return compile_policy(yaml.safe_load(text))


# ---- string matchers, on every string criterion --------------------------------------------

STRING_MATCHERS = [
    # (spec, value, expected)
    ({"is": "abc"}, "abc", True),
    ({"is": "abc"}, "abcd", False),
    ("abc", "abc", True),
    ({"not": "abc"}, "abd", True),
    ({"not": "abc"}, "abc", False),
    ({"contains": "b"}, "abc", True),
    ({"contains": "x"}, "abc", False),
    ({"starts_with": "ab"}, "abc", True),
    ({"starts_with": "bc"}, "abc", False),
    ({"ends_with": "bc"}, "abc", True),
    ({"ends_with": "ab"}, "abc", False),
    ({"in": ["x", "abc"]}, "abc", True),
    ({"in": ["x", "y"]}, "abc", False),
    ({"not_in": ["x", "y"]}, "abc", True),
    ({"not_in": ["x", "abc"]}, "abc", False),
    # Pomerium: several operators in one matcher must all hold
    ({"starts_with": "a", "ends_with": "c"}, "abc", True),
    ({"starts_with": "a", "ends_with": "x"}, "abc", False),
    ({"contains": "b", "not": "abc"}, "abc", False),
]


def _with_user(value: str) -> PolicyInput:
    return req(identity=ident(user=value))


def _with_method(value: str) -> PolicyInput:
    return req(method=value)


def _with_path(value: str) -> PolicyInput:
    return req(path="/" + value)


def _path_spec(spec: object) -> object:
    """The same matcher with `/` in front of every value (paths start with /)."""
    if isinstance(spec, str):
        return "/" + spec
    out: dict[str, object] = {}
    for op, value in spec.items():  # type: ignore[attr-defined]
        if op in ("is", "not", "starts_with", "in", "not_in"):
            value = [f"/{v}" for v in value] if isinstance(value, list) else f"/{value}"
        out[op] = value
    return out


@pytest.mark.parametrize(("spec", "value", "expected"), STRING_MATCHERS)
def test_string_matchers_on_user(spec: object, value: str, expected: bool) -> None:
    assert holds({"user": spec}, _with_user(value)) is expected


@pytest.mark.parametrize(("spec", "value", "expected"), STRING_MATCHERS)
def test_string_matchers_on_http_method(spec: object, value: str, expected: bool) -> None:
    assert holds({"http_method": spec}, _with_method(value)) is expected


@pytest.mark.parametrize(("spec", "value", "expected"), STRING_MATCHERS)
def test_string_matchers_on_http_path(spec: object, value: str, expected: bool) -> None:
    assert holds({"http_path": _path_spec(spec)}, _with_path(value)) is expected


@pytest.mark.parametrize(("spec", "value", "expected"), STRING_MATCHERS)
def test_string_matchers_on_email_local_part(spec: object, value: str, expected: bool) -> None:
    """`email` folds case; the matchers behave the same on the whole address."""

    def suffixed(s: object) -> object:
        if isinstance(s, str):
            return s + "@zz.test"
        out: dict[str, object] = {}
        for op, v in s.items():  # type: ignore[attr-defined]
            if op in ("is", "not", "ends_with", "in", "not_in"):
                v = [f"{x}@zz.test" for x in v] if isinstance(v, list) else f"{v}@zz.test"
            out[op] = v
        return out

    inp = req(identity=ident(email=f"{value.upper()}@ZZ.test"))
    assert holds({"email": suffixed(spec)}, inp) is expected


# ---- http_method / http_path ---------------------------------------------------------------

REQUEST_CASES = [
    ({"http_method": {"is": "GET"}}, req(method="GET"), True),
    ({"http_method": {"is": "GET"}}, req(method="POST"), False),
    # Pomerium compares the method exactly: a lower-case spec never matches
    ({"http_method": {"is": "get"}}, req(method="GET"), False),
    ({"http_method": {"in": ["GET", "HEAD"]}}, req(method="HEAD"), True),
    ({"http_path": {"starts_with": "/job/"}}, req(path="/job/x"), True),
    ({"http_path": {"starts_with": "/job/"}}, req(path="/jobs"), False),
    ({"http_path": "/login"}, req(path="/login"), True),
    ({"http_path": "/login"}, req(path="/LOGIN"), False),  # paths are case-sensitive
    # request criteria need no session
    ({"http_method": "GET"}, req(identity=None), True),
    ({"http_path": "/"}, req(identity=None), True),
]


@pytest.mark.parametrize(("criterion", "inp", "expected"), REQUEST_CASES)
def test_request_criteria(criterion: dict[str, Any], inp: PolicyInput, expected: bool) -> None:
    assert holds(criterion, inp) is expected


# ---- source_ip -----------------------------------------------------------------------------

SOURCE_IP_CASES = [
    ("1.2.3.4", "1.2.3.4", True),
    ("1.2.3.4", "1.2.3.5", False),
    ("192.168.1.1/24", "192.168.1.200", True),  # host bits allowed, as in Pomerium
    ("192.168.1.1/24", "192.168.2.1", False),
    ("2001:db8::1", "2001:db8::1", True),
    ("2001:db8::1", "2001:db8::2", False),
    ("2001:db8::/32", "2001:db8:1:2:3:4:5:6", True),
    ("2001:db8::/32", "2001:ffff:1:2:3:4:5:6", False),
    (["10.0.0.1", "10.0.0.2", "10.0.0.3"], "10.0.0.2", True),
    (["10.0.0.1", "10.0.0.2", "10.0.0.3"], "10.0.0.4", False),
    ("10.0.0.0/8", "::ffff:10.1.2.3", True),  # IPv4 client on a dual-stack listener
    ("10.0.0.0/8", "[::ffff:10.1.2.3]", True),
    ("0.0.0.0/0", "2001:db8::1", False),  # an IPv4 range never holds an IPv6 client
    ("10.0.0.0/8", "", False),
    ("10.0.0.0/8", "not-an-ip", False),
]


@pytest.mark.parametrize(("spec", "ip", "expected"), SOURCE_IP_CASES)
def test_source_ip(spec: object, ip: str, expected: bool) -> None:
    assert holds({"source_ip": spec}, req(ip=ip)) is expected
    assert holds({"source_ip": spec}, req(identity=None, ip=ip)) is expected  # no session needed


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("not-an-ip-address", "expected an IP address or CIDR range"),
        ({"key": "value"}, "expected an IP address, a CIDR range or a list"),
        ([{"key": "value"}], "expected an IP address, a CIDR range or a list"),
        ([], "expected an IP address"),
        ("10.0.0.0/33", "expected an IP address or CIDR range"),
    ],
)
def test_source_ip_errors(spec: object, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        compile_policy({"allow": {"and": [{"source_ip": spec}]}})


# ---- cors_preflight / pomerium_routes ------------------------------------------------------

PREFLIGHT = {"origin": "https://app.test", "access-control-request-method": "POST"}

CORS_CASES = [
    (req(method="OPTIONS", headers=PREFLIGHT), True),
    (req(method="OPTIONS", headers=PREFLIGHT, identity=None), True),
    (req(method="GET", headers=PREFLIGHT), False),
    (req(method="OPTIONS", headers={"origin": "https://app.test"}), False),
    (req(method="OPTIONS", headers={"access-control-request-method": "POST"}), False),
    (req(method="OPTIONS", headers={**PREFLIGHT, "origin": ""}), False),
    (req(method="OPTIONS"), False),
]


@pytest.mark.parametrize(("inp", "expected"), CORS_CASES)
def test_cors_preflight(inp: PolicyInput, expected: bool) -> None:
    assert holds({"cors_preflight": True}, inp) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/.pomerium/", True),
        ("/.pomerium/sign_out", True),
        ("/.pomerium", False),
        ("/app/.pomerium/x", False),
        ("/", False),
    ],
)
def test_pomerium_routes(path: str, expected: bool) -> None:
    assert holds({"pomerium_routes": True}, req(path=path)) is expected
    assert holds({"pomerium_routes": True}, req(identity=None, path=path)) is expected


# ---- groups: Pomerium's list matcher -------------------------------------------------------

LIST_CASES = [
    ({"has": "a"}, ["a", "b"], True),
    ({"has": "c"}, ["a", "b"], False),
    # `is` with one value: the list is exactly that value (Pomerium: count == 1)
    ({"is": "a"}, ["a"], True),
    ({"is": "a"}, ["a", "b"], False),
    ({"is": "a"}, ["a", "a"], False),
    ({"is": "a"}, [], False),
    # `is` with a list: exactly that set
    ({"is": ["a", "b"]}, ["b", "a"], True),
    ({"is": ["a", "b"]}, ["a"], False),
    ({"exclude": "a"}, ["b"], True),
    ({"exclude": "a"}, ["a", "b"], False),
    ({"exclude": "a"}, [], True),
    ({"exclude": ["a", "c"]}, ["b"], True),
    ({"exclude": ["a", "c"]}, ["b", "c"], False),
    # several operators: all must hold
    ({"has": "a", "exclude": "c"}, ["a", "b"], True),
    ({"has": "a", "exclude": "c"}, ["a", "c"], False),
]


@pytest.mark.parametrize(("spec", "groups", "expected"), LIST_CASES)
def test_groups_list_matchers(spec: object, groups: list[str], expected: bool) -> None:
    assert holds({"groups": spec}, req(identity=ident(groups=groups))) is expected


@pytest.mark.parametrize(("spec", "values", "expected"), LIST_CASES)
def test_claim_list_matchers(spec: object, values: list[str], expected: bool) -> None:
    assert holds({"claim/roles": spec}, req(identity=ident(claims={"roles": values}))) is expected


# ---- claim/<name> --------------------------------------------------------------------------

CLAIMS = {
    "family_name": "Smith",
    "example.com/key": "value",
    "address": {"country": "DE", "locality": {"city": "Berlin"}},
    "roles": ["read", "deploy"],
    "email_verified": True,
    "level": 3,
    "nothing": None,
}

CLAIM_CASES = [
    ("claim/family_name", "Smith", True),
    ("claim/family_name", {"has": "Smith"}, True),
    ("claim/family_name", {"is": "Smith"}, True),
    ("claim/family_name", {"exclude": "Smith"}, False),
    ("claim/example.com/key", "value", True),  # a key with / and . is looked up as such first
    ("claim/address/country", "DE", True),  # ... else as a path
    ("claim/address.country", "DE", True),
    ("claim/address/locality/city", "Berlin", True),
    ("claim/address/country", "FR", False),
    ("claim/address/missing", "DE", False),
    ("claim/roles", "deploy", True),
    ("claim/roles", {"is": "deploy"}, False),
    ("claim/email_verified", True, True),
    ("claim/email_verified", "true", False),
    ("claim/level", 3, True),
    ("claim/level", {"has": 3}, True),
    ("claim/nothing", "x", False),
    ("claim/nothing", {"exclude": "x"}, True),
    ("claim/absent", {"exclude": "x"}, True),  # a signed-in user without the claim
]


@pytest.mark.parametrize(("criterion", "spec", "expected"), CLAIM_CASES)
def test_claims(criterion: str, spec: object, expected: bool) -> None:
    assert holds({criterion: spec}, req(identity=ident(claims=CLAIMS))) is expected
    assert holds({criterion: spec}, req(identity=None)) is False


def test_claim_values_shapes() -> None:
    assert claim_values({"a": "x"}, "a") == ("x",)
    assert claim_values({"a": ["x", None, "y"]}, "a") == ("x", "y")
    assert claim_values({"a": None}, "a") == ()
    assert claim_values({}, "a") == ()
    assert claim_values({"a": {"b": 1}}, "a/b") == (1,)
    assert claim_values({"a": "x"}, "a/b") == ()


# ---- time criteria -------------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def at_berlin(hour: int, minute: int = 0, second: int = 0, day: int = 18) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=BERLIN).astimezone(UTC)


OFFICE = {"time_of_day": {"timezone": "Europe/Berlin", "after": "09:00", "before": "17:00"}}
NIGHT = {"time_of_day": {"timezone": "Europe/Berlin", "after": "22:00", "before": "6:00"}}

TIME_CASES = [
    (OFFICE, at_berlin(8, 59, 59), False),
    (OFFICE, at_berlin(9, 0, 0), True),  # after is inclusive
    (OFFICE, at_berlin(12), True),
    (OFFICE, at_berlin(16, 59, 59), True),
    (OFFICE, at_berlin(17, 0, 0), False),  # before is exclusive
    (OFFICE, datetime(2026, 11, 18, 8, 30, tzinfo=UTC), True),  # 09:30 in Berlin (CET)
    (OFFICE, datetime(2026, 7, 1, 7, 30, tzinfo=UTC), True),  # 09:30 in Berlin (CEST)
    (OFFICE, datetime(2026, 7, 1, 6, 30, tzinfo=UTC), False),  # 08:30 CEST
    (NIGHT, at_berlin(23), True),
    (NIGHT, at_berlin(2), True),
    (NIGHT, at_berlin(6), False),
    (NIGHT, at_berlin(12), False),
    ({"time_of_day": {"timezone": "UTC", "after": "3PM"}}, NOON + timedelta(hours=3), True),
    ({"time_of_day": {"timezone": "UTC", "after": "3PM"}}, NOON, False),
    ({"time_of_day": {"timezone": "UTC", "before": "12:00:01"}}, NOON, True),
]


@pytest.mark.parametrize(("criterion", "now", "expected"), TIME_CASES)
def test_time_of_day(criterion: dict[str, Any], now: datetime, expected: bool) -> None:
    assert holds(criterion, req(now=now)) is expected
    assert holds(criterion, req(identity=None, now=now)) is expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3:04 PM", 15 * 3600 + 4 * 60),
        ("3:04PM", 15 * 3600 + 4 * 60),
        ("3 PM", 15 * 3600),
        ("3PM", 15 * 3600),
        ("12 AM", 0),
        ("12:30 PM", 12 * 3600 + 30 * 60),
        ("4:30pm", 16 * 3600 + 30 * 60),
        ("15:04:05.999999999", 15 * 3600 + 4 * 60 + 5.999999999),
        ("15:04:05", 15 * 3600 + 4 * 60 + 5),
        ("15:04", 15 * 3600 + 4 * 60),
        ("09:00", 9 * 3600),
        ("0:00", 0),
        # YAML 1.1 reads unquoted 17:00 as 1020 and 2:20:00 as 8400: decoded back exactly
        (1020, 17 * 3600),
        (540, 9 * 3600),
        (8400, 2 * 3600 + 20 * 60),
        (54245.5, 15 * 3600 + 4 * 60 + 5.5),
    ],
)
def test_time_formats(value: object, seconds: float) -> None:
    assert parse_time_of_day(value, "t") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["9", "17:00", "2:20:00", "15:04:05.5", "23:59", "1:00"])
def test_unquoted_yaml_times_mean_what_they_say(text: str) -> None:
    raw = yaml.safe_load(f"t: {text}")["t"]
    if text == "9":
        with pytest.raises(ConfigError, match="is not a time of day"):
            parse_time_of_day(raw, "t")
        return
    assert parse_time_of_day(raw, "t") == pytest.approx(parse_time_of_day(text, "t"))


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ({"after": "9:00"}, "`timezone` is required"),
        ({"timezone": "Mars/Olympus", "after": "9:00"}, "unknown timezone"),
        ({"timezone": "UTC"}, "needs `after`, `before` or both"),
        ({"timezone": "UTC", "after": "25:00"}, "not a time of day"),
        ({"timezone": "UTC", "after": "13 PM"}, "not a time of day"),
        ({"timezone": "UTC", "after": "noon"}, "not a time of day"),
        ({"timezone": "UTC", "after": True}, "not a time of day"),
        ({"timezone": "UTC", "at": "9:00"}, "unknown key `at`"),
        ("9:00", "expected an object"),
    ],
)
def test_time_of_day_errors(spec: object, text: str) -> None:
    with pytest.raises(ConfigError, match=text) as info:
        compile_policy({"allow": {"and": [{"time_of_day": spec}]}})
    assert info.value.key == "policy.allow.and[0].time_of_day"


DATE_CASES = [
    ({"after": "2026-01-01T00:00:00Z"}, NOON, True),
    ({"after": "2027-01-01"}, NOON, False),
    ({"before": "2026-11-18T12:00:00Z"}, NOON, False),  # before is exclusive
    ({"before": "2026-11-18T12:00:01Z"}, NOON, True),
    ({"after": "2026-11-18T12:00:00"}, NOON, True),  # naive = UTC; after is inclusive
    ({"after": "2026-11-18T13:00:00+02:00"}, NOON, True),
    ({"after": "2020-01-02T16:20:00", "before": "2150-01-02T16:20:00"}, NOON, True),
    ({"after": datetime(2026, 11, 18, 12, 0, 1)}, NOON, False),  # as YAML hands it over
    ({"before": date(2026, 11, 19)}, NOON, True),
]


@pytest.mark.parametrize(("spec", "now", "expected"), DATE_CASES)
def test_date(spec: dict[str, Any], now: datetime, expected: bool) -> None:
    assert holds({"date": spec}, req(now=now)) is expected


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ({"after": "yesterday"}, "not an ISO-8601 date"),
        ({"since": "2026-01-01"}, "unknown key `since`"),
        ("2026-01-01", "expected an object"),
        ({"after": 20260101}, "not an ISO-8601 date"),
    ],
)
def test_date_errors(spec: object, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        compile_policy({"allow": {"and": [{"date": spec}]}})


WEDNESDAY = NOON
SUNDAY = NOON + timedelta(days=4)
DAY_CASES = [
    ("*", SUNDAY, True),
    ("mon-fri", WEDNESDAY, True),
    ("mon-fri", SUNDAY, False),
    ("tue-fri", WEDNESDAY, True),
    ("Monday,Wednesday", WEDNESDAY, True),
    ("mon,fri", WEDNESDAY, False),
    ("fri-mon", SUNDAY, True),  # wraps
    ("fri-mon", WEDNESDAY, False),
    ("MON-wed,sun", SUNDAY, True),
    # Sunday 23:30 UTC is Monday in Berlin
    ({"days": "mon", "timezone": "Europe/Berlin"}, SUNDAY.replace(hour=23, minute=30), True),
    ("mon", SUNDAY.replace(hour=23, minute=30), False),
]


@pytest.mark.parametrize(("spec", "now", "expected"), DAY_CASES)
def test_day_of_week(spec: object, now: datetime, expected: bool) -> None:
    assert holds({"day_of_week": spec}, req(now=now)) is expected


def test_parse_days() -> None:
    assert parse_days("sat-tue", "d") == frozenset({5, 6, 0, 1})
    assert parse_days("wed-wed", "d") == frozenset({2})
    with pytest.raises(ConfigError, match="unknown day 'funday'"):
        parse_days("mon,funday", "d")
    with pytest.raises(ConfigError, match="empty day"):
        parse_days("mon,", "d")


def test_time_criteria_use_the_current_time_when_none_is_given() -> None:
    policy = compile_policy({"allow": {"and": [{"date": {"after": "2000-01-01"}}]}})
    assert policy.allowed(PolicyInput(identity=None))


# ---- Pomerium's documentation examples -----------------------------------------------------

AT_A_GLANCE = """
allow:
  and:
    - domain:
        is: example.com
deny:
  or:
    - email:
        is: user2@example.com
    - email:
        is: user3@example.com
"""


def test_doc_at_a_glance() -> None:
    policy = from_yaml(AT_A_GLANCE)
    assert policy.allowed(req(identity=ident(email="user1@example.com")))
    assert not policy.allowed(req(identity=ident(email="user2@example.com")))
    assert not policy.allowed(req(identity=ident(email="user3@example.com")))
    assert not policy.allowed(req(identity=ident(email="user1@other.com")))
    assert not policy.allowed(req(identity=None))


LOGICAL = """
allow:
  {op}:
    - domain:
        is: example.com
    - claim/groups: admin
"""


@pytest.mark.parametrize(
    ("op", "domain_ok", "admin", "expected"),
    [
        ("and", True, True, True),
        ("and", True, False, False),
        ("or", False, True, True),
        ("or", False, False, False),
        ("not", False, False, True),  # ¬A and ¬B
        ("not", True, False, False),
        ("nor", True, False, True),  # ¬A or ¬B
        ("nor", True, True, False),
    ],
)
def test_doc_logical_operators(op: str, domain_ok: bool, admin: bool, expected: bool) -> None:
    policy = from_yaml(LOGICAL.format(op=op))
    who = ident(
        email="a@example.com" if domain_ok else "a@other.com",
        claims={"groups": ["admin"] if admin else ["dev"]},
    )
    assert policy.allowed(req(identity=who)) is expected


MULTIPLE_OPERATORS = """
allow:
  and:
    - claim/family_name: Smith
  or:
    - domain:
        is: domain1.com
    - domain:
        is: domain2.com
"""

MULTIPLE_ALLOWS = """
- allow:
    and:
      - claim/family_name: Smith
- allow:
    or:
      - domain:
          is: domain1.com
      - domain:
          is: domain2.com
"""


@pytest.mark.parametrize(
    ("email", "family", "expected"),
    [
        ("a@other.com", "Smith", True),
        ("a@domain1.com", "Jones", True),
        ("a@domain2.com", "Jones", True),
        ("a@other.com", "Jones", False),
    ],
)
def test_doc_multiple_operators_equal_multiple_allows(
    email: str, family: str, expected: bool
) -> None:
    who = req(identity=ident(email=email, claims={"family_name": family}))
    assert from_yaml(MULTIPLE_OPERATORS).allowed(who) is expected
    assert from_yaml(MULTIPLE_ALLOWS).allowed(who) is expected


CRITERIA_EXAMPLE = """
allow:
  and:
    - claim/family_name: Smith
deny:
  not:
    - http_method:
        is: GET
"""


def test_doc_criteria_example() -> None:
    policy = from_yaml(CRITERIA_EXAMPLE)
    smith = ident(claims={"family_name": "Smith"})
    assert policy.allowed(req(identity=smith, method="GET"))
    assert not policy.allowed(req(identity=smith, method="POST"))
    assert not policy.allowed(req(identity=ident(), method="GET"))


def test_doc_route_policy_example() -> None:
    policy = from_yaml(
        """
- allow:
    and:
      - domain:
          is: pomerium.com
      - user:
          is: user
"""
    )
    assert policy.allowed(req(identity=ident(email="x@pomerium.com", user="user")))
    assert not policy.allowed(req(identity=ident(email="x@pomerium.com", user="other")))


def test_doc_day_of_week() -> None:
    policy = from_yaml("allow:\n  and:\n    - day_of_week: tue-fri\n")
    assert policy.allowed(req(now=WEDNESDAY))
    assert not policy.allowed(req(now=SUNDAY))


def test_doc_date() -> None:
    policy = from_yaml(
        "allow:\n  and:\n    - date:\n        after: 2020-01-02T16:20:00\n"
        "        before: 2150-01-02T16:20:00\n"
    )
    assert policy.allowed(req(now=NOON))
    assert not policy.allowed(req(now=datetime(2020, 1, 2, 16, 19, tzinfo=UTC)))


def test_doc_string_matchers() -> None:
    admin = from_yaml("allow:\n  and:\n    - email:\n        starts_with: 'admin@'\n")
    assert admin.allowed(req(identity=ident(email="admin@example.com")))
    assert not admin.allowed(req(identity=ident(email="user@example.com")))
    listed = from_yaml(
        "allow:\n  and:\n    - email:\n        in: ['user1@company.com', 'user2.company.com']\n"
    )
    assert listed.allowed(req(identity=ident(email="user1@company.com")))
    assert not listed.allowed(req(identity=ident(email="user2@company.com")))


def test_doc_not_in_under_deny() -> None:
    """The docs' allowlist-by-deny pattern (with http_method standing in for mcp_tool)."""
    policy = from_yaml(
        "- allow:\n    and:\n      - authenticated_user: true\n"
        "- deny:\n    and:\n      - http_method:\n          not_in: ['GET', 'HEAD']\n"
    )
    assert policy.allowed(req(method="HEAD"))
    assert not policy.allowed(req(method="POST"))


def test_doc_groups_has() -> None:
    policy = from_yaml("allow:\n  and:\n    - groups:\n        has: '00gv40ki4gmtCyl5d4x6'\n")
    assert policy.allowed(req(identity=ident(groups=["00gv40ki4gmtCyl5d4x6"])))
    assert not policy.allowed(req(identity=ident(groups=["other"])))


def test_doc_time_of_day() -> None:
    """Written exactly as in the docs: `after: 2:20:00` unquoted (YAML reads 8400)."""
    policy = from_yaml(
        "allow:\n  and:\n    - time_of_day:\n        timezone: UTC\n        after: 2:20:00\n"
        "        before: 4:30PM\n"
    )
    day = datetime(2026, 11, 18, tzinfo=UTC)
    assert not policy.allowed(req(now=day + timedelta(hours=2, minutes=19)))
    assert policy.allowed(req(now=day + timedelta(hours=2, minutes=20)))
    assert policy.allowed(req(now=day + timedelta(hours=16, minutes=29)))
    assert not policy.allowed(req(now=day + timedelta(hours=16, minutes=30)))


@pytest.mark.parametrize(
    "doc",
    [
        "- allow:\n    or:\n      - device:\n          type: any\n",
        "allow:\n  and:\n    - record:\n        type: pomerium.io/ExternalDataSource\n"
        "        exists: true\n",
        "deny:\n  and:\n    - mcp_tool:\n        not_in: ['query', 'list_tables']\n",
    ],
)
def test_doc_examples_authgate_cannot_enforce_are_config_errors(doc: str) -> None:
    with pytest.raises(ConfigError, match="is not supported"):
        from_yaml(doc)


# ---- properties ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    after=st.integers(0, 24 * 3600 - 1),
    before=st.integers(0, 24 * 3600 - 1),
    at=st.integers(0, 24 * 3600 - 1),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/Phoenix", "Asia/Kolkata"]),
)
def test_time_of_day_matches_a_reference(after: int, before: int, at: int, zone: str) -> None:
    def clock(s: int) -> str:
        return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"

    window = {"timezone": zone, "after": clock(after), "before": clock(before)}
    policy = compile_policy({"allow": {"and": [{"time_of_day": window}]}})
    local = datetime(2026, 3, 3, tzinfo=ZoneInfo(zone)) + timedelta(seconds=at)
    expected = (after <= at < before) if after <= before else not (before <= at < after)
    assert policy.allowed(req(now=local.astimezone(UTC))) is expected


@settings(max_examples=200, deadline=None)
@given(
    network=st.ip_addresses(v=4).flatmap(
        lambda a: st.integers(0, 32).map(lambda p: f"{a}/{p}")
    ),
    client=st.ip_addresses(v=4),
)
def test_source_ip_matches_ipaddress(network: str, client: Any) -> None:
    import ipaddress

    expected = client in ipaddress.ip_network(network, strict=False)
    assert holds({"source_ip": network}, req(ip=str(client))) is expected
    assert holds({"source_ip": network}, req(ip=f"::ffff:{client}")) is expected


# ---- addresses that only look like ours ----------------------------------------------------

LOOKALIKE_DOMAINS = {
    "trailing space": "mallory@kestrel.example ",
    "leading space": " mallory@kestrel.example",
    "trailing tab": "mallory@kestrel.example\t",
    "trailing newline": "mallory@kestrel.example\n",
    "trailing nbsp": "mallory@kestrel.example\u00a0",
    "trailing ideographic space": "mallory@kestrel.example\u3000",
    "zero-width space": "mallory@kestrel.example\u200b",
    "kelvin sign": "mallory@\u212aestrel.example",  # str.lower() makes this ASCII 'k'
    "cyrillic e": "mallory@k\u0435strel.example",
    "fullwidth": "mallory@\uff4b\uff45\uff53\uff54\uff52\uff45\uff4c.example",
    "ideographic full stop": "mallory@kestrel\u3002example",
    "combining mark": "mallory@ke\u0301strel.example",
    "trailing dot": "mallory@kestrel.example.",
    "nul": "mallory@kestrel.example\x00.evil.test",
    "two at signs": "mallory@evil.test@kestrel.example",
}


@pytest.mark.parametrize("email", LOOKALIKE_DOMAINS.values(), ids=LOOKALIKE_DOMAINS.keys())
def test_lookalike_domains_never_match(email: str) -> None:
    for spec in ("kestrel.example", {"ends_with": "kestrel.example"}, {"in": ["kestrel.example"]}):
        assert not holds({"domain": spec}, req(identity=ident(email=email)))
    assert not holds({"email": {"ends_with": "@kestrel.example"}}, req(identity=ident(email=email)))
    ok = ident(email="Mallory@KESTREL.example")
    assert holds({"domain": "kestrel.example"}, req(identity=ok))


@pytest.mark.parametrize(
    "email",
    ["\u212aim@kestrel.example", "kim@kestrel.example ", "\tkim@kestrel.example",
     "k\u0456m@kestrel.example", "\uff4bim@kestrel.example", "k\u200dim@kestrel.example"],
)
def test_lookalike_emails_never_match(email: str) -> None:
    assert not holds({"email": "kim@kestrel.example"}, req(identity=ident(email=email)))
    assert holds({"email": "kim@kestrel.example"}, req(identity=ident(email="KIM@kestrel.example")))


@settings(max_examples=300, deadline=None)
@given(local=st.text(min_size=0, max_size=6), domain=st.text(min_size=0, max_size=12),
       spec=st.sampled_from(["kestrel.example", "KESTREL.example", "k.example"]))
def test_domain_matches_only_ascii_case_folding(local: str, domain: str, spec: str) -> None:
    """Reference: exactly one @, non-empty parts, nothing but visible characters, and equal
    once A-Z (only) are lower-cased — which is what bytes.lower() does to UTF-8."""

    def visible(text: str) -> bool:
        return all(c.isprintable() and c != " " for c in text)

    email = f"{local}@{domain}"
    same = domain.encode().lower() == spec.encode().lower()
    expected = email.count("@") == 1 and bool(local) and visible(email) and same
    assert holds({"domain": {"is": spec}}, req(identity=ident(email=email))) is expected
    other = f"X@{domain}"
    expected = other.count("@") == 1 and visible(other) and same
    assert holds({"email": {"is": f"x@{spec}"}}, req(identity=ident(email=other))) is expected


# ---- operator laws over every kind of criterion --------------------------------------------

MIXED = [
    {"accept": True},
    {"reject": True},
    {"authenticated_user": True},
    {"domain": "example.com"},
    {"email": {"not_in": ["eve@evil.org"]}},
    {"groups": {"exclude": "banned"}},
    {"claim/dept": {"is": "eng"}},
    {"http_method": {"in": ["GET", "HEAD"]}},
    {"http_path": {"starts_with": "/admin"}},
    {"source_ip": "10.0.0.0/8"},
    {"cors_preflight": True},
    {"pomerium_routes": True},
    {"time_of_day": {"timezone": "Europe/Berlin", "after": "9:00", "before": "17:00"}},
    {"day_of_week": "mon-fri"},
    {"date": {"before": "2026-11-20"}},
]

inputs = st.builds(
    req,
    identity=st.sampled_from(
        [None, ALICE, ident(email="eve@evil.org", groups=["banned"], claims={"dept": "eng"})]
    ),
    method=st.sampled_from(["GET", "POST", "OPTIONS"]),
    path=st.sampled_from(["/", "/admin/x", "/.pomerium/"]),
    ip=st.sampled_from(["10.1.2.3", "203.0.113.7", ""]),
    now=st.datetimes(
        min_value=datetime(2026, 11, 1), max_value=datetime(2026, 12, 1), timezones=st.just(UTC)
    ),
    headers=st.sampled_from([{}, PREFLIGHT]),
)
mixed = st.sampled_from(MIXED)


def _value(expr: dict[str, Any], inp: PolicyInput) -> bool:
    """Pomerium's operator semantics evaluated directly over the tree."""
    ((name, items),) = expr.items()
    if name in ("and", "or", "not", "nor"):
        results = [_value(item, inp) for item in items]
        return {
            "and": all(results), "or": any(results),
            "not": not any(results), "nor": not all(results),
        }[name]
    return holds(expr, inp)


mixed_expressions = st.recursive(
    mixed,
    lambda children: st.builds(
        lambda op, items: {op: items},
        st.sampled_from(["and", "or", "not", "nor"]),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(allow=mixed_expressions, deny=mixed_expressions, inp=inputs)
def test_allow_and_deny_over_mixed_criteria_match_the_reference(
    allow: dict[str, Any], deny: dict[str, Any], inp: PolicyInput
) -> None:
    policy = compile_policy([{"allow": {"and": [allow]}}, {"deny": {"or": [deny]}}])
    expected = _value(allow, inp) and not _value(deny, inp)
    assert policy.allowed(inp) is expected
    assert policy.explain(inp).allowed is expected
