"""Property-based fuzzing of the config loader and the policy compiler (bounded, runs in CI):
any input is accepted or refused with a ConfigError naming the problem, nothing else escapes,
and a compiled policy always decides.

The contracts live in fuzz/targets.py, shared with the atheris harness (`make fuzz`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authgate.config import Route, Settings, load_settings, settings_from_mapping
from authgate.errors import ConfigError
from authgate.policy import Identity, compile_policy
from fuzz import targets
from tests.security_summary import fuzzed

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TMP = Path(tempfile.mkdtemp(prefix="authgate-fuzz-"))
(TMP / "secret").write_text("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n")

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "",
            "true",
            "1s",
            "-5m",
            "14h",
            "1h30m",
            "0",
            "https://x.test",
            "http://127.0.0.1:9",
            "unix:///tmp/x.sock",
            "unix://",
            "https://x.test:99999",
            "https://x.test/path",
            "openid email",
            "c2VjcmV0",
            "secret",
            ".*",
            "(",
            "[a-",
            "\\",
            "../x",
            "/x",
            "*",
        ]
    )
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(["is", "in", "has", "allow"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=15,
)

SETTINGS_KEYS = sorted(
    set(Settings.model_fields)
    | {"cookie_secret_file", "signing_key_file", "idp_client_secret_file"}
)
ROUTE_KEYS = sorted((f.alias or name) for name, f in Route.model_fields.items())


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(SETTINGS_KEYS) | st.text(max_size=10), json_values, max_size=4
    ),
    route_changes=st.dictionaries(
        st.sampled_from(ROUTE_KEYS) | st.text(max_size=10), json_values, max_size=4
    ),
)
def test_fuzz_config_mapping(changes: dict[str, object], route_changes: dict[str, object]) -> None:
    fuzzed("config loader")
    targets.check_config_mapping(targets.config_with(changes, route_changes), TMP)


@FUZZ
@given(raw=json_values)
def test_fuzz_config_any_document(raw: object) -> None:
    fuzzed("config loader")
    targets.check_config_mapping(raw, TMP)


yaml_texts = (
    st.text(max_size=300)
    | json_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True))
    | st.builds(
        lambda base, extra: yaml.safe_dump(base, sort_keys=False) + extra,
        st.just(targets.base_config()),
        st.text(max_size=60),
    )
)


@FUZZ
@given(text=yaml_texts)
def test_fuzz_config_file_text(text: str) -> None:
    fuzzed("config loader")
    targets.check_config_text(text, TMP)


CRITERIA = [
    "accept",
    "reject",
    "authenticated_user",
    "email",
    "domain",
    "user",
    "groups",
    "claim/dept",
    "claim/",
    "http_method",
    "http_path",
    "source_ip",
    "cors_preflight",
    "pomerium_routes",
    "date",
    "day_of_week",
    "time_of_day",
    "device",
    "invalid_client_certificate",
]
OPERATORS = ["and", "or", "not", "nor"]
MATCHERS = [
    "is",
    "not",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "ends_with",
    "has",
    "exclude",
    "after",
    "before",
    "timezone",
]

policy_leaves = json_values | st.builds(
    lambda m, v: {m: v}, st.sampled_from(MATCHERS), scalars | st.lists(scalars, max_size=3)
)
criteria = st.builds(lambda name, spec: {name: spec}, st.sampled_from(CRITERIA), policy_leaves)
blocks = st.recursive(
    st.lists(criteria, max_size=4),
    lambda inner: st.lists(
        criteria | st.builds(lambda op, items: {op: items}, st.sampled_from(OPERATORS), inner),
        max_size=4,
    ),
    max_leaves=12,
)
rules = st.dictionaries(
    st.sampled_from(["allow", "deny"]) | st.text(max_size=6),
    st.dictionaries(st.sampled_from(OPERATORS) | st.text(max_size=5), blocks, max_size=3)
    | json_values,
    max_size=2,
)
documents = st.lists(rules, max_size=3) | rules | json_values
identities = st.none() | st.builds(
    Identity,
    user=st.text(max_size=20),
    email=st.text(max_size=30)
    | st.sampled_from(["a@example.com", "A@EXAMPLE.COM", "a@b@c", "@", ""]),
    name=st.text(max_size=10),
    groups=st.lists(st.text(max_size=8), max_size=3).map(tuple),
    claims=st.dictionaries(
        st.sampled_from(["dept", "x"]) | st.text(max_size=5), json_values, max_size=3
    ),
)


@FUZZ
@given(
    document=documents,
    identity=identities,
    method=st.sampled_from(["GET", "POST", "OPTIONS"]) | st.text(max_size=6),
    path=st.text(max_size=30).map(lambda p: "/" + p),
)
def test_fuzz_policy_compiler(
    document: object, identity: Identity | None, method: str, path: str
) -> None:
    fuzzed("policy compiler")
    targets.check_policy(document, identity, method, path)


@FUZZ
@given(text=st.text(max_size=200) | documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)))
def test_fuzz_policy_yaml(text: str) -> None:
    fuzzed("policy compiler")
    targets.check_policy_yaml(text)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("timeout", 1e20),
        ("idle_timeout", 10**18),
        ("timeout", "99999999999999h"),
        ("cookie_expire", float("inf")),
    ],
)
def test_huge_duration_is_a_config_error(key: str, value: object) -> None:
    changes = {key: value} if key == "cookie_expire" else {}
    route_changes = {} if key == "cookie_expire" else {key: value}
    with pytest.raises(ConfigError, match=key):
        settings_from_mapping(targets.config_with(changes, route_changes), base=TMP, environ={})


def _nested_policy(depth: int) -> object:
    doc: object = {"email": {"is": "a@example.com"}}
    for _ in range(depth):
        doc = {"and": [doc]}
    return [{"allow": doc}]


@pytest.mark.parametrize("what", ["yaml", "policy"])
def test_deeply_nested_config_is_a_config_error(what: str) -> None:
    if what == "yaml":
        path = TMP / "deep.yaml"
        path.write_text("routes: " + "[" * 5000)
        with pytest.raises(ConfigError):
            load_settings(path, environ={})
    else:
        with pytest.raises(ConfigError):
            compile_policy(_nested_policy(3000), where="routes[0].policy")


def _pem_with_unknown_curve() -> bytes:
    """A PKCS#8 EC key whose curve OID (P-256, 1.2.840.10045.3.1.7) is changed by one byte:
    what the atheris config target found first."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = der.replace(bytes.fromhex("2a8648ce3d030107"), bytes.fromhex("2a8648ce3d030108"))
    body = base64.encodebytes(der)
    return b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"


def test_signing_key_on_an_unknown_curve_is_a_config_error() -> None:
    import base64

    raw = targets.base_config()
    raw["signing_key"] = base64.b64encode(_pem_with_unknown_curve()).decode()
    with pytest.raises(ConfigError, match="signing_key"):
        settings_from_mapping(raw, environ={})
