"""Route options in the schema: Pomerium's names and meanings; each mistake is one clear line."""

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import trustme

from authgate.config import settings_from_mapping
from authgate.config.schema import Route, Settings, check_substitution, compile_re2ish
from authgate.errors import ConfigError

COOKIE_SECRET = base64.b64encode(os.urandom(32)).decode()


def settings(**options: Any) -> Settings:
    route = {"from": "https://app.test", "to": options.pop("to", "https://backend.internal"),
             "allow_any_authenticated_user": True, **options}
    return settings_from_mapping(
        {
            "certificate_file": "cert.pem",
            "certificate_key_file": "key.pem",
            "authenticate_service_url": "https://authenticate.test",
            "idp_provider_url": "https://idp.test",
            "idp_client_id": "authgate",
            "idp_client_secret": "secret",
            "cookie_secret": COOKIE_SECRET,
            "routes": [route],
        },
        environ={},
    )


def route(**options: Any) -> Route:
    return settings(**options).routes[0]


def refused(**options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings(**options)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("routes[0]")
    return info.value


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "private-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


# ---------------------------------------------------------------------------- defaults


def test_defaults_change_nothing() -> None:
    r = route()
    assert r.match_key == ("prefix", "/")
    assert r.regex is None and r.prefix_rewrite is None and r.regex_rewrite_pattern is None
    assert r.host_path_regex_rewrite_pattern is None
    assert r.set_request_headers == {} and r.remove_request_headers == []
    assert r.tls_skip_verify is False and r.tls_server_name is None
    assert r.tls_custom_ca_file is None
    assert r.show_error_details is False


def test_unknown_route_key_is_still_refused() -> None:
    err = refused(regexp="^/x$")
    assert err.key == "routes[0].regexp"
    assert "unknown key" in str(err)


# ---------------------------------------------------------------------------- matching


def test_regex_route() -> None:
    r = route(regex=r"^/(admin|superuser)/.*$")
    assert r.match_key == ("regex", r"^/(admin|superuser)/.*$")


@pytest.mark.parametrize(
    ("options", "found"),
    [
        ({"prefix": "/a", "regex": "/a.*"}, "prefix, regex"),
        ({"path": "/a", "regex": "/a"}, "path, regex"),
        ({"prefix": "/a", "path": "/a"}, "prefix, path"),
    ],
)
def test_one_matcher_only(options: dict[str, str], found: str) -> None:
    message = str(refused(**options))
    assert "set only one of `prefix`, `path` or `regex`" in message
    assert found in message


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("/(?=admin)", "lookahead"),
        ("/(?<!x)admin", "lookbehind"),
        (r"/(a)\1", "back-references"),
        ("/(?P<x>a)(?P=x)", "named back-references"),
        ("/a++", "possessive"),
        ("/(?>a)", "atomic"),
        ("/(unclosed", "not a valid regular expression"),
        ("", "is empty"),
    ],
)
def test_regex_must_be_re2(pattern: str, words: str) -> None:
    err = refused(regex=pattern)
    assert err.key == "routes[0].regex"
    assert words in str(err)
    assert "RE2" in str(err)


@pytest.mark.parametrize(
    "pattern",
    [
        r"^/(admin|superuser)/.*$",
        r"/static/\pL+\z",  # RE2-only escapes Python lacks
        r"/(?<name>[0-9]+)",  # RE2's named group spelling
        r"/\Q(literal)\E",
        r"/[(?=]x",  # `(?=` inside a class is just characters
        r"/a\\1",  # an escaped backslash, then `1`: not a back-reference
    ],
)
def test_re2_syntax_python_lacks_is_accepted(pattern: str) -> None:
    assert route(regex=pattern).regex == pattern


def test_group_count_of_re2_only_syntax() -> None:
    assert compile_re2ish(r"^/(?<a>x)/(\pL+)/(?:y)\z").groups == 2


@pytest.mark.parametrize("key", ["prefix", "path"])
@pytest.mark.parametrize(
    "value", ["/public/../admin", "/a//b", "/a/./b", "/a%2Fb", "/a%5cb", "/a\\b", "/a?x=1"]
)
def test_prefix_and_path_must_be_normalised(key: str, value: str) -> None:
    err = refused(**{key: value})
    assert err.key == f"routes[0].{key}"


def test_routes_differing_only_by_matcher_kind_are_distinct() -> None:
    raw_routes = [
        {"from": "http://a.test", "to": "http://10.0.0.1", "prefix": "/x"},
        {"from": "http://a.test", "to": "http://10.0.0.1", "path": "/x"},
        {"from": "http://a.test", "to": "http://10.0.0.1", "regex": "/x"},
        {"from": "http://a.test", "to": "http://10.0.0.1"},
        {"from": "http://a.test", "to": "http://10.0.0.1", "regex": "/.*"},
    ]
    for r in raw_routes:
        r["allow_any_authenticated_user"] = True
    base = {
        "insecure_server": True, "authenticate_service_url": "http://authenticate.test",
        "idp_provider_url": "https://idp.test", "idp_client_id": "x", "idp_client_secret": "y",
    }
    assert len(settings_from_mapping({**base, "routes": raw_routes}, environ={}).routes) == 5
    with pytest.raises(ConfigError, match=r"routes\[1\] repeats routes\[0\]"):
        settings_from_mapping({**base, "routes": [raw_routes[2], raw_routes[2]]}, environ={})


# ---------------------------------------------------------------------------- path rewriting


def test_prefix_rewrite() -> None:
    r = route(prefix="/admin", prefix_rewrite="/")
    assert r.prefix_rewrite == "/"


def test_prefix_rewrite_must_start_with_slash() -> None:
    err = refused(prefix="/admin", prefix_rewrite="inner")
    assert err.key == "routes[0].prefix_rewrite"


def test_regex_rewrite_as_pomerium_documents_it() -> None:
    r = route(regex_rewrite_pattern="^/service/([^/]+)(/.*)$",
              regex_rewrite_substitution="\\2/instance/\\1")
    assert r.regex_rewrite_substitution == r"\2/instance/\1"


@pytest.mark.parametrize("prefix", ["regex_rewrite", "host_path_regex_rewrite"])
def test_pattern_and_substitution_go_together(prefix: str) -> None:
    assert f"add {prefix}_substitution" in str(refused(**{f"{prefix}_pattern": "^/(.*)$"}))
    assert f"add {prefix}_pattern" in str(refused(**{f"{prefix}_substitution": "/x"}))


def test_empty_substitution_is_a_substitution() -> None:
    r = route(regex_rewrite_pattern="^/strip", regex_rewrite_substitution="")
    assert r.regex_rewrite_substitution == ""


@pytest.mark.parametrize("prefix", ["regex_rewrite", "host_path_regex_rewrite"])
def test_substitution_refers_to_existing_groups(prefix: str) -> None:
    message = str(refused(**{f"{prefix}_pattern": "^/(a)/(b)$", f"{prefix}_substitution": r"\3"}))
    assert "group \\3" in message and "only 2" in message


def test_substitution_knows_only_group_references() -> None:
    with pytest.raises(ValueError, match=r"`\\n` is not a group reference"):
        check_substitution(r"/a\n", 1, "regex_rewrite_substitution")
    check_substitution(r"/\0/\1/\\", 1, "regex_rewrite_substitution")


def test_rewrite_patterns_must_be_re2() -> None:
    err = refused(regex_rewrite_pattern="^/(?=x)", regex_rewrite_substitution="/")
    assert err.key == "routes[0].regex_rewrite_pattern"


def test_prefix_rewrite_and_regex_rewrite_exclude_each_other() -> None:
    message = str(
        refused(prefix_rewrite="/", regex_rewrite_pattern="^/a", regex_rewrite_substitution="/")
    )
    assert "prefix_rewrite" in message and "regex_rewrite_pattern" in message


def test_a_path_in_to_points_at_prefix_rewrite() -> None:
    err = refused(to="http://10.0.0.1:8080/jenkins")
    assert "prefix_rewrite" in str(err)


# ---------------------------------------------------------------------------- host


def test_host_path_regex_rewrite() -> None:
    r = route(host_path_regex_rewrite_pattern="^/(.+)/.+$",
              host_path_regex_rewrite_substitution="\\1")
    assert r.host_path_regex_rewrite_substitution == r"\1"


def test_host_rewrite_header_keeps_both_spellings() -> None:
    assert route(host_rewrite_header=True).host_rewrite_header is True
    assert route(host_rewrite_header="X-Target").host_rewrite_header == "X-Target"


# ---------------------------------------------------------------------------- request headers


def test_set_and_remove_request_headers() -> None:
    r = route(set_request_headers={"X-Team": "blue", "X-Empty": "", "Authorization": "Basic x"},
              remove_request_headers=["X-Debug", "x-pomerium-claim-email"])
    assert r.set_request_headers == {"X-Team": "blue", "X-Empty": "", "Authorization": "Basic x"}
    assert r.remove_request_headers == ["X-Debug", "x-pomerium-claim-email"]


def test_remove_request_headers_as_a_comma_separated_string() -> None:
    assert route(remove_request_headers="X-A, X-B").remove_request_headers == ["X-A", "X-B"]


def test_yaml_scalars_become_text_as_in_pomerium() -> None:
    r = route(set_request_headers={"X-Flag": True, "X-Count": 3, "X-Ratio": 0.5})
    assert r.set_request_headers == {"X-Flag": "true", "X-Count": "3", "X-Ratio": "0.5"}


@pytest.mark.parametrize(
    "name",
    ["X-Pomerium-Jwt-Assertion", "x-pomerium-claim-email", "X_POMERIUM_CLAIM_EMAIL",
     "x-Pomerium_Claim-Groups", "x-pomerium-anything"],
)
def test_identity_namespace_cannot_be_set(name: str) -> None:
    err = refused(set_request_headers={name: "spoof"})
    assert err.key == "routes[0].set_request_headers"
    assert str(err).startswith(f"routes[0].set_request_headers: {name}: ")
    assert "x-pomerium- header namespace belongs to authgate" in str(err)
    assert "pass_identity_headers" in str(err)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("Host", "host_rewrite"),
        (":authority", "pseudo-header"),
        (":path", "prefix_rewrite"),
        ("Connection", "hop-by-hop"),
        ("Transfer-Encoding", "hop-by-hop"),
        ("Upgrade", "allow_websockets"),
        ("Content-Length", "framing"),
        ("TE", "hop-by-hop"),
        ("Bad Name", "not a valid header name"),
        ("X-Ümlaut", "not a valid header name"),
    ],
)
def test_headers_envoy_owns_cannot_be_set(name: str, words: str) -> None:
    assert words in str(refused(set_request_headers={name: "x"}))


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\0b"])
def test_header_values_cannot_break_lines(value: str) -> None:
    assert "line break" in str(refused(set_request_headers={"X-A": value}))


def test_header_set_twice_in_other_case() -> None:
    assert "set twice" in str(refused(set_request_headers={"X-A": "1", "x-a": "2"}))


def test_pomerium_token_substitution_is_accepted_and_unknown_tokens_refused() -> None:
    ok = route(set_request_headers={"Authorization": "Bearer ${pomerium.id_token}"})
    assert ok.set_request_headers["Authorization"] == "Bearer ${pomerium.id_token}"
    message = str(refused(set_request_headers={"Authorization": "Bearer ${pomerium.secret}"}))
    assert "${pomerium.secret} does not exist" in message and "${pomerium.jwt}" in message


def test_percent_signs_are_allowed_and_sent_literally() -> None:
    # The generator escapes them for Envoy; see test_envoy_bootstrap.
    assert route(set_request_headers={"X-A": "100% %REQ(x)%"}).set_request_headers["X-A"]


@pytest.mark.parametrize(
    "name", ["x-pomerium-jwt-assertion", "X-Pomerium-JWT-Assertion", "x_pomerium_jwt_assertion"]
)
def test_assertion_cannot_be_removed(name: str) -> None:
    err = refused(remove_request_headers=[name])
    assert err.key == "routes[0].remove_request_headers"
    assert "turn pass_identity_headers off" in str(err)


@pytest.mark.parametrize(("name", "words"), [("host", "host_rewrite"), (":path", "pseudo-header"),
                                             ("connection", "hop-by-hop")])
def test_headers_envoy_owns_cannot_be_removed(name: str, words: str) -> None:
    assert words in str(refused(remove_request_headers=[name]))


def test_same_header_set_and_removed_is_refused() -> None:
    message = str(refused(set_request_headers={"X-A": "1"}, remove_request_headers=["x-a"]))
    assert "both set_request_headers and remove_request_headers" in message


# ---------------------------------------------------------------------------- upstream TLS


def test_tls_options(ca_file: Path) -> None:
    r = route(tls_server_name="backend.internal", tls_custom_ca_file=str(ca_file))
    assert r.tls_server_name == "backend.internal"
    assert r.tls_custom_ca_file == str(ca_file)
    assert route(tls_skip_verify=True).tls_skip_verify is True


@pytest.mark.parametrize("value", ["https://backend.internal", "backend.internal:8443", "", "-x"])
def test_tls_server_name_is_a_host_name(value: str) -> None:
    err = refused(tls_server_name=value)
    assert err.key == "routes[0].tls_server_name"
    assert "no scheme or port" in str(err)


def test_tls_custom_ca_file_must_exist(tmp_path: Path) -> None:
    err = refused(tls_custom_ca_file=str(tmp_path / "missing.pem"))
    assert err.key == "routes[0].tls_custom_ca_file"
    assert "cannot read" in str(err) and "missing.pem" in str(err)


def test_tls_custom_ca_file_must_hold_a_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    assert "no PEM certificate" in str(refused(tls_custom_ca_file=str(junk)))


def test_tls_custom_ca_file_relative_to_working_directory(
    ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ca_file.parent)
    assert route(tls_custom_ca_file=ca_file.name).tls_custom_ca_file == ca_file.name


@pytest.mark.parametrize(
    "options", [{"tls_skip_verify": True}, {"tls_server_name": "backend.internal"}]
)
@pytest.mark.parametrize("to", ["http://10.0.0.1:8080", "unix:///run/app.sock"])
def test_tls_options_need_an_https_upstream(options: dict[str, Any], to: str) -> None:
    message = str(refused(to=to, **options))
    assert "https:// upstreams only" in message


def test_skip_verify_and_custom_ca_exclude_each_other(ca_file: Path) -> None:
    message = str(refused(tls_skip_verify=True, tls_custom_ca_file=str(ca_file)))
    assert "keep only one" in message


def test_skip_verify_is_visible_as_a_warning() -> None:
    (note,) = settings(tls_skip_verify=True).config_warnings()
    assert note.startswith("routes[0].tls_skip_verify:")
    assert "NOT verified" in note and "https://backend.internal" in note
    assert settings().config_warnings() == []


# ---------------------------------------------------------------------------- error pages


def test_show_error_details() -> None:
    assert route(show_error_details=True).show_error_details is True
