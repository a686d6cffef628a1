"""Config loading as a user meets it: a Pomerium-style file loads; each mistake is one line.

The same mistakes through `python -m authgate` (a subprocess): tests/integration/test_cli.py.
"""

import base64
import copy
import os
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authgate.cli import main
from authgate.config import Settings, build_runtime, load_settings, settings_from_mapping
from authgate.config.schema import decode_base64
from authgate.errors import ConfigError
from tests.support.sample_config import (
    COOKIE_SECRET,
    EXAMPLE_YAML,
    P256_KEY,
    P384_KEY,
    SIGNING_KEY,
    Mutation,
    b64,
    drop_keys,
    example,
    load_and_build,
    pem_of,
    public_numbers,
    set_key,
    set_route_key,
)


@pytest.fixture(autouse=True)
def _no_config_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys can be overridden from the environment: keep the developer's out of these tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


# ---- the example from Pomerium's Jenkins guide loads ---------------------------------------


def test_example_config_loads_and_builds(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(EXAMPLE_YAML)
    # The certificate files do not exist: the schema only records their paths (Envoy reads them).
    assert not (tmp_path / "tls").exists()

    settings = load_settings(path, environ={})
    assert settings.listen_host == "127.0.0.1"
    assert settings.listen_port == 8443
    assert settings.tls is True
    assert settings.idp_client_secret == "secret"
    assert settings.cookie_name == "_pomerium"
    assert settings.cookie_expire.total_seconds() == 14 * 3600
    assert list(settings.idp_scopes) == ["openid", "profile", "email", "offline_access"]

    jenkins, status = settings.routes
    assert jenkins.from_ == "https://jenkins.test:8443"
    assert jenkins.from_netloc == "jenkins.test:8443"
    assert jenkins.from_host == "jenkins.test"
    (upstream,) = jenkins.upstreams
    assert (upstream.scheme, upstream.path) == ("unix", "/run/jenkins/jenkins.socket")
    assert jenkins.pass_identity_headers is True
    assert jenkins.host_rewrite_header is True
    assert jenkins.allow_websockets is True
    assert status.allow_public_unauthenticated_access is True
    (status_upstream,) = status.upstreams
    assert (status_upstream.scheme, status_upstream.host, status_upstream.port) == (
        "http",
        "127.0.0.1",
        8081,
    )

    runtime = build_runtime(settings, warn=False)
    assert [r.id for r in runtime.routes] == ["route-0", "route-1"]
    assert [r.public for r in runtime.routes] == [False, True]
    assert runtime.routes_by_id["route-0"].origin == "https://jenkins.test:8443"
    assert runtime.hosts["status.test:8443"].id == "route-1"
    assert runtime.authenticate_origin == "https://authenticate.test:8443"
    assert runtime.assertion_issuer == "authenticate.test"
    assert runtime.cookie_name == "__Host-_pomerium"  # TLS: the __Host- prefix
    assert runtime.cookie_key == base64.b64decode(COOKIE_SECRET)
    assert public_numbers(runtime.signing_key) == public_numbers(P256_KEY)
    assert runtime.client_secret == "secret"


def test_comma_separated_lists_and_durations_as_pomerium_writes_them() -> None:
    raw = example()
    raw["idp_scopes"] = "openid, email"
    raw["cookie_expire"] = "1h30m"
    raw["routes"][1] = {
        "from": "https://status.test:8443",
        "to": "http://127.0.0.1:8081",
        "allowed_domains": "example.com, example.org",
        "timeout": "90s",
    }
    runtime = load_and_build(raw)
    assert list(runtime.settings.idp_scopes) == ["openid", "email"]
    assert runtime.settings.cookie_expire.total_seconds() == 5400
    # scopes as OAuth writes them, separated by spaces
    raw["idp_scopes"] = "openid profile  email groups"
    scoped = load_and_build(raw)
    assert list(scoped.settings.idp_scopes) == ["openid", "profile", "email", "groups"]
    route = runtime.settings.routes[1]
    assert route.allowed_domains == ["example.com", "example.org"]
    assert route.timeout.total_seconds() == 90


# ---- every mistake: a ConfigError naming the key and the fix ---------------------------------

RSA_KEY = b64(pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048)))

# (id, mutation, key named in the error, words of the fix that must appear)
BAD_CONFIGS: list[tuple[str, Mutation, str, tuple[str, ...]]] = [
    ("unknown top-level key", set_key("colour", "blue"), "colour", ("unknown key", "spelling")),
    (
        "unknown route key",
        set_route_key(1, "allowed_domain", ["example.com"]),
        "routes[1].allowed_domain",
        ("unknown key", "spelling"),
    ),
    (
        "from without scheme",
        set_route_key(0, "from", "jenkins.test:8443"),
        "routes[0].from",
        ("https://host[:port]",),
    ),
    (
        "from with a path",
        set_route_key(0, "from", "https://jenkins.test:8443/jenkins"),
        "routes[0].from",
        ("remove the path",),
    ),
    (
        "from with a bad port",
        set_route_key(0, "from", "https://jenkins.test:99999"),
        "routes[0].from",
        ("1 to 65535",),
    ),
    ("to ftp", set_route_key(1, "to", "ftp://files.test/"), "routes[1].to", ("unix:///path.sock",)),
    (
        "to relative unix path",
        set_route_key(0, "to", "unix://run/jenkins.sock"),
        "routes[0].to",
        ("unix:///absolute/path.sock",),
    ),
    (
        "to unix without slashes",
        set_route_key(0, "to", "unix:run/jenkins.sock"),
        "routes[0].to",
        ("unix:///absolute/path.sock",),
    ),
    ("signing_key P-384", set_key("signing_key", P384_KEY), "signing_key", ("P-256", "keygen")),
    ("signing_key RSA", set_key("signing_key", RSA_KEY), "signing_key", ("P-256", "keygen")),
    (
        "signing_key not base64",
        set_key("signing_key", "not base64 at all!"),
        "signing_key",
        ("base64", "keygen"),
    ),
    (
        "signing_key base64 of junk",
        set_key("signing_key", b64(b"hello world")),
        "signing_key",
        ("PEM", "keygen"),
    ),
    (
        "cookie_secret 16 bytes",
        set_key("cookie_secret", b64(os.urandom(16))),
        "cookie_secret",
        ("16 bytes", "32", "head -c32 /dev/urandom | base64"),
    ),
    (
        "cookie_secret 64 bytes",
        set_key("cookie_secret", b64(os.urandom(64))),
        "cookie_secret",
        ("64 bytes", "32", "head -c32 /dev/urandom | base64"),
    ),
    (
        "cookie_secret not base64",
        set_key("cookie_secret", "this is not base64!"),
        "cookie_secret",
        ("base64", "head -c32 /dev/urandom | base64"),
    ),
    (
        "missing authenticate_service_url",
        drop_keys("authenticate_service_url"),
        "authenticate_service_url",
        ("is required", "add it"),
    ),
    (
        "authenticate_service_url without scheme",
        set_key("authenticate_service_url", "authenticate.test:8443"),
        "authenticate_service_url",
        ("https://host[:port]",),
    ),
    ("missing idp_client_id", drop_keys("idp_client_id"), "idp_client_id", ("is required",)),
    (
        "missing idp_client_secret",
        drop_keys("idp_client_secret"),
        "idp_client_secret",
        ("idp_client_secret_file",),
    ),
    ("bad duration", set_key("cookie_expire", "14 hours"), "cookie_expire", ("30s", "1h30m")),
    ("bad route duration", set_route_key(0, "timeout", "soon"), "routes[0].timeout", ("30s",)),
    ("negative duration", set_key("cookie_expire", -5), "cookie_expire", ("negative",)),
    ("bad address", set_key("address", "localhost"), "address", ("127.0.0.1:8443",)),
    (
        "unknown PPL criterion",
        set_route_key(0, "policy", [{"allow": {"and": [{"emial": {"is": "a@example.com"}}]}}]),
        "routes[0].policy[0].allow.and[0].emial",
        ("unknown criterion `emial`", "email"),
    ),
    (
        "unknown PPL operator",
        set_route_key(0, "policy", [{"allow": {"xor": [{"accept": True}]}}]),
        "routes[0].policy[0].allow.xor",
        ("unknown operator `xor`", "and, or, not or nor"),
    ),
    (
        "http route behind TLS",
        set_route_key(1, "from", "http://status.test:8443"),
        "routes[1].from",
        ("https",),
    ),
]


@pytest.mark.parametrize(
    ("mutate", "key", "fix_words"),
    [pytest.param(m, k, w, id=name) for name, m, k, w in BAD_CONFIGS],
)
def test_bad_config_names_key_and_fix(
    mutate: Mutation, key: str, fix_words: tuple[str, ...]
) -> None:
    raw = example()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        load_and_build(raw)
    err = info.value
    assert err.key == key
    message = str(err)
    assert message.startswith(f"{key}: ")
    for word in fix_words:
        assert word in message
    assert "\n" not in message


def test_no_certificates_without_insecure_server_says_how_to_fix() -> None:
    raw = example()
    del raw["certificate_file"], raw["certificate_key_file"]
    with pytest.raises(ConfigError) as info:
        load_and_build(raw)
    message = str(info.value)
    assert "certificate_file" in message
    assert "certificate_key_file" in message
    assert "insecure_server: true" in message


def test_only_one_certificate_file_is_refused() -> None:
    raw = example()
    del raw["certificate_key_file"]
    with pytest.raises(ConfigError, match="certificate_key_file"):
        load_and_build(raw)


def test_insecure_server_needs_no_certificates() -> None:
    raw = example()
    del raw["certificate_file"], raw["certificate_key_file"]
    raw["insecure_server"] = True
    raw["authenticate_service_url"] = "http://authenticate.test:8080"
    for route in raw["routes"]:
        route["from"] = route["from"].replace("https://", "http://")
    runtime = load_and_build(raw)
    assert runtime.settings.tls is False
    assert runtime.cookie_name == "_pomerium"  # no __Host- prefix without TLS


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "the config file must be a YAML mapping"),
        ("just text", "the config file must be a YAML mapping"),
    ],
)
def test_config_that_is_not_a_mapping(document: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping(document, environ={})


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("address: 127.0.0.1:8443\nroutes: [\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_settings(path, environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_route_cannot_share_the_authenticate_host() -> None:
    raw = example()
    raw["routes"][1]["from"] = "https://authenticate.test:8443"
    with pytest.raises(ConfigError) as info:
        load_and_build(raw)
    assert "routes[1].from" in str(info.value)
    assert "own hostname" in str(info.value)


def test_duplicate_routes_are_refused() -> None:
    raw = example()
    raw["routes"].append(copy.deepcopy(raw["routes"][1]))
    with pytest.raises(ConfigError, match=r"routes\[2\] repeats routes\[1\]"):
        load_and_build(raw)


def test_public_access_cannot_be_combined_with_a_policy() -> None:
    raw = example()
    raw["routes"][1]["allowed_domains"] = ["example.com"]
    with pytest.raises(ConfigError) as info:
        load_and_build(raw)
    assert info.value.key == "routes[1]"
    assert "allow_public_unauthenticated_access" in str(info.value)


# ---- environment overrides -----------------------------------------------------------------


def test_cookie_secret_from_environment_overrides_the_file() -> None:
    other = b64(os.urandom(32))
    settings = settings_from_mapping(example(), environ={"COOKIE_SECRET": other})
    assert settings.cookie_secret == other
    assert build_runtime(settings, warn=False).cookie_key == base64.b64decode(other)


def test_idp_client_secret_from_environment() -> None:
    raw = example()
    del raw["idp_client_secret"]
    settings = settings_from_mapping(raw, environ={"IDP_CLIENT_SECRET": "from-env"})
    assert settings.idp_client_secret == "from-env"
    assert build_runtime(settings, warn=False).client_secret == "from-env"


def test_load_settings_passes_environ(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(EXAMPLE_YAML)
    other = b64(os.urandom(32))
    settings = load_settings(path, environ={"COOKIE_SECRET": other, "IDP_CLIENT_SECRET": "env"})
    assert settings.cookie_secret == other
    assert settings.idp_client_secret == "env"


def test_empty_environment_value_is_ignored() -> None:
    settings = settings_from_mapping(example(), environ={"COOKIE_SECRET": ""})
    assert settings.cookie_secret == COOKIE_SECRET


def test_bad_environment_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(example(), environ={"COOKIE_SECRET": b64(b"short")})
    assert info.value.key == "cookie_secret"
    assert "must be 32" in str(info.value)


def test_explicit_environ_ignores_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COOKIE_SECRET", "garbage!")
    assert settings_from_mapping(example(), environ={}).cookie_secret == COOKIE_SECRET
    with pytest.raises(ConfigError, match="cookie_secret"):
        settings_from_mapping(example())  # environ=None reads the process environment


# ---- secrets from files --------------------------------------------------------------------


def test_cookie_secret_file_relative_to_the_config(tmp_path: Path) -> None:
    secret = b64(os.urandom(32))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "cookie").write_text(secret + "\n")
    raw = example()
    del raw["cookie_secret"]
    raw["cookie_secret_file"] = "secrets/cookie"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    settings = load_settings(config, environ={})
    assert settings.cookie_secret == secret
    assert build_runtime(settings, warn=False).cookie_key == base64.b64decode(secret)


def test_signing_key_file_with_a_pem(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem_file = tmp_path / "signing.pem"
    pem_file.write_bytes(pem_of(key))
    raw = example()
    del raw["signing_key"]
    raw["signing_key_file"] = str(pem_file)  # absolute path
    runtime = load_and_build(raw, base=tmp_path / "elsewhere")
    assert public_numbers(runtime.signing_key) == public_numbers(key)


def test_signing_key_file_with_base64(tmp_path: Path) -> None:
    (tmp_path / "signing.b64").write_text(SIGNING_KEY + "\n")
    raw = example()
    del raw["signing_key"]
    raw["signing_key_file"] = "signing.b64"
    runtime = load_and_build(raw, base=tmp_path)
    assert public_numbers(runtime.signing_key) == public_numbers(P256_KEY)


def test_signing_key_file_with_a_p384_pem_is_refused(tmp_path: Path) -> None:
    (tmp_path / "signing.pem").write_bytes(pem_of(ec.generate_private_key(ec.SECP384R1())))
    raw = example()
    del raw["signing_key"]
    raw["signing_key_file"] = "signing.pem"
    with pytest.raises(ConfigError) as info:
        load_and_build(raw, base=tmp_path)
    assert info.value.key == "signing_key"
    assert "P-256" in str(info.value)


def test_idp_client_secret_file(tmp_path: Path) -> None:
    (tmp_path / "client-secret").write_text("s3cret\n")
    raw = example()
    del raw["idp_client_secret"]
    raw["idp_client_secret_file"] = "client-secret"
    runtime = load_and_build(raw, base=tmp_path)
    assert runtime.settings.idp_client_secret == "s3cret"
    assert runtime.client_secret == "s3cret"


def test_unreadable_secret_file_names_the_key(tmp_path: Path) -> None:
    raw = example()
    del raw["cookie_secret"]
    raw["cookie_secret_file"] = "missing"
    with pytest.raises(ConfigError) as info:
        load_and_build(raw, base=tmp_path)
    assert info.value.key == "cookie_secret_file"
    assert "cannot read" in str(info.value)
    assert "fix the path" in str(info.value)


def test_secret_and_secret_file_together_is_refused(tmp_path: Path) -> None:
    (tmp_path / "client-secret").write_text("s3cret")
    raw = example()
    raw["idp_client_secret_file"] = "client-secret"
    with pytest.raises(ConfigError) as info:
        load_and_build(raw, base=tmp_path)
    assert info.value.key == "idp_client_secret"
    assert "keep only one" in str(info.value)


def test_bad_secret_file_content_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "cookie").write_text(b64(os.urandom(16)))
    raw = example()
    del raw["cookie_secret"]
    raw["cookie_secret_file"] = "cookie"
    with pytest.raises(ConfigError) as info:
        load_and_build(raw, base=tmp_path)
    assert info.value.key == "cookie_secret"


# ---- the command line, in-process -----------------------------------------------------------


def test_keygen_cookie_secret_is_32_bytes_of_base64(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--cookie-secret"]) == 0
    line = capsys.readouterr().out.strip()
    assert len(base64.b64decode(line, validate=True)) == 32
    raw = example()
    raw["cookie_secret"] = line
    assert load_and_build(raw).cookie_key == decode_base64(line)


def test_keygen_gives_a_new_value_each_time(capsys: pytest.CaptureFixture[str]) -> None:
    main(["keygen", "--cookie-secret"])
    main(["keygen", "--cookie-secret"])
    main(["keygen"])
    main(["keygen"])
    lines = capsys.readouterr().out.split()
    assert len(set(lines)) == 4
