"""Post-login / post-sign-out redirect targets: only ever back to the route's own origin."""

from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authgate.authz.redirects import safe_redirect

ORIGIN = "https://jenkins.test:8443"

_SHARED = Path(__file__).resolve().parents[2].parent / "shared/corpora/open-redirects.txt"
_COPY = Path(__file__).resolve().parents[1] / "data/open-redirects.txt"
CORPUS_FILE = _SHARED if _SHARED.is_file() else _COPY


def corpus() -> list[str]:
    # Split on "\n" only: a payload may hold other characters str.splitlines() would split on.
    text = CORPUS_FILE.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


PAYLOADS = corpus()


def test_corpus_is_complete() -> None:
    assert len(PAYLOADS) >= 559
    assert PAYLOADS[0] == ""  # the first line is empty on purpose


def assert_stays_home(result: str | None) -> None:
    if result is None:
        return
    assert result.startswith(ORIGIN + "/")
    parts = urlsplit(result)
    assert (parts.scheme, parts.hostname, parts.port) == ("https", "jenkins.test", 8443)
    assert parts.username is None and parts.password is None
    # however a browser resolves it, it stays on the origin
    resolved = urlsplit(urljoin(ORIGIN + "/somewhere/", result))
    assert resolved.netloc == "jenkins.test:8443"
    assert not any(c in result for c in "\\\t\r\n ")


@pytest.mark.parametrize("payload", PAYLOADS, ids=[f"line{n + 1}" for n in range(len(PAYLOADS))])
def test_open_redirect_corpus(payload: str) -> None:
    result = safe_redirect(payload, ORIGIN)
    assert_stays_home(result)
    if result is not None:
        assert safe_redirect(result, ORIGIN) == result  # a safe answer is a fixed point


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("/", ORIGIN + "/"),
        ("/job/x?y=1", ORIGIN + "/job/x?y=1"),
        ("/job/x/build?delay=0sec&token=abc", ORIGIN + "/job/x/build?delay=0sec&token=abc"),
        ("/job/a%2Fb/", ORIGIN + "/job/a%2Fb/"),
        (ORIGIN, ORIGIN + "/"),
        (ORIGIN + "/", ORIGIN + "/"),
        (ORIGIN + "/job/x?y=1", ORIGIN + "/job/x?y=1"),
        ("https://JENKINS.test:8443/job/x", ORIGIN + "/job/x"),
        ("/job/x#section", ORIGIN + "/job/x"),
    ],
)
def test_same_origin_targets_are_kept(candidate: str, expected: str) -> None:
    assert safe_redirect(candidate, ORIGIN) == expected


@pytest.mark.parametrize(
    "candidate",
    [
        None,
        "",
        "//evil.com",
        "//evil.com/",
        "///evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "/\t/evil.com",
        " /job",
        "https://jenkins.test:8443@evil.com/",
        "https://user@jenkins.test:8443/",
        "https://user:pw@jenkins.test:8443/",
        "https://jenkins.test.evil.com:8443/",
        "https://evil.com/https://jenkins.test:8443/",
        "https://jenkins.test:8443//evil.com",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "http://jenkins.test:8443/",
        "https://jenkins.test:9443/",
        "https://jenkins.test/",
        "https://jenkins.test:08443/",
        "https:jenkins.test:8443/",
        "https:/jenkins.test:8443/",
        "jenkins.test:8443/job",
        "job/x",
        "https://status.test:8443/",
        "/" + "a" * 5000,
    ],
)
def test_other_targets_are_refused(candidate: str | None) -> None:
    assert safe_redirect(candidate, ORIGIN) is None


def test_origin_without_port() -> None:
    assert safe_redirect("/x", "https://jenkins.test") == "https://jenkins.test/x"
    assert safe_redirect("https://jenkins.test/x", "https://jenkins.test") == (
        "https://jenkins.test/x"
    )
    assert safe_redirect("https://jenkins.test:8443/x", "https://jenkins.test") is None


@settings(max_examples=200, deadline=None)
@given(candidate=st.text(max_size=100))
def test_arbitrary_text_stays_home(candidate: str) -> None:
    assert_stays_home(safe_redirect(candidate, ORIGIN))


_url_chars = st.sampled_from([*"/\\:@.%?#&=-_ \t", "//", "evil.com", "jenkins.test", "8443"])


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(_url_chars, max_size=12), absolute=st.booleans())
def test_url_like_text_stays_home(parts: list[str], absolute: bool) -> None:
    candidate = "".join(parts)
    if absolute:
        candidate = "https://" + candidate
    assert_stays_home(safe_redirect(candidate, ORIGIN))
