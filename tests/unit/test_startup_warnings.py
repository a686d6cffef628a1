"""What `authgate run` and `authgate authz` print on stderr as they start: the secrets that are
not set (exactly those), and upstream host names that do not resolve (one line per host,
never fatal). Nothing is started: the authz server and the worker processes are replaced.

Names under .invalid never resolve (RFC 6761); 127.0.0.1 always does.
"""

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import authgate.authz.server
import authgate.runner
from authgate.cli import main
from authgate.config import Settings, build_runtime, settings_from_mapping
from authgate.config.runtime import (
    generate_cookie_secret,
    generate_signing_key_b64,
    missing_secrets_warning,
)

Capture = pytest.CaptureFixture[str]

COOKIE = generate_cookie_secret()
SIGNING_KEY = generate_signing_key_b64()


@pytest.fixture(autouse=True)
def _no_config_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def config(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "address": "127.0.0.1:8443",
        "insecure_server": True,
        "authenticate_service_url": "http://authenticate.test:8443",
        "idp_provider_url": "https://idp.example.com",
        "idp_client_id": "authgate",
        "idp_client_secret": "a-client-secret-from-the-idp",
        "cookie_secret": COOKIE,
        "signing_key": SIGNING_KEY,
        "routes": [
            {"from": "http://app.test:8443", "to": "http://127.0.0.1:8080",
             "allowed_domains": ["example.com"]},
        ],
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}


def settings_of(raw: dict[str, Any]) -> Settings:
    return settings_from_mapping(raw, environ={})


def write(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


UNRESOLVED_ROUTES = [
    {"from": "http://ci.test:8443", "to": "http://ci.invalid:8080",
     "allowed_domains": ["example.com"]},
    {"from": "http://ci2.test:8443", "to": "http://ci.invalid:8080",
     "allowed_domains": ["example.com"]},
    {"from": "http://wiki.test:8443", "to": "http://wiki.invalid:8080",
     "allowed_domains": ["example.com"]},
    {"from": "http://ok.test:8443", "to": "http://127.0.0.1:8081",
     "allowed_domains": ["example.com"]},
]


def upstream_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "upstream host" in line]


# ---- cookie_secret / signing_key -----------------------------------------------------------


@pytest.mark.parametrize(
    ("unset", "named", "not_named"),
    [
        (["cookie_secret"], "cookie_secret not set; using a random value", "signing_key"),
        (["signing_key"], "signing_key not set; using a random value", "cookie_secret"),
        (["cookie_secret", "signing_key"],
         "cookie_secret and signing_key not set; using random values", None),
    ],
)
def test_missing_secrets_warning_names_exactly_the_missing_keys(
    unset: list[str], named: str, not_named: str | None, capsys: Capture
) -> None:
    settings = settings_of(config(**dict.fromkeys(unset)))
    warning = missing_secrets_warning(settings)
    assert warning is not None
    assert warning.startswith(f"authgate: warning: {named} for this run (")
    assert " or " not in warning
    if not_named is not None:
        assert not_named not in warning
    # build_runtime prints the same line, once
    build_runtime(settings)
    assert capsys.readouterr().err == warning + "\n"


def test_no_secrets_warning_when_both_are_set(capsys: Capture) -> None:
    settings = settings_of(config())
    assert missing_secrets_warning(settings) is None
    build_runtime(settings)
    assert capsys.readouterr().err == ""


# ---- authgate authz ------------------------------------------------------------------------


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    started: list[Any] = []
    monkeypatch.setattr(authgate.authz.server, "run_server", lambda *a, **k: started.append(a))
    return started


def test_authz_warns_once_per_unresolved_upstream_host(
    tmp_path: Path, capsys: Capture, no_server: list[Any]
) -> None:
    path = write(tmp_path, config(routes=UNRESOLVED_ROUTES, signing_key=None))
    assert main(["authz", "-c", path]) == 0
    assert no_server, "the server still starts: the warning is not fatal"
    err = capsys.readouterr().err
    lines = upstream_lines(err)
    assert len(lines) == 2, err
    ci, wiki = lines
    assert ci.startswith("authgate: warning: routes[0].to: upstream host 'ci.invalid' of ")
    assert "routes[0] (http://ci.test:8443), routes[1] (http://ci2.test:8443)" in ci
    assert "'no healthy upstream'" in ci
    assert wiki.startswith("authgate: warning: routes[2].to: upstream host 'wiki.invalid'")
    assert "authgate: warning: signing_key not set" in err
    assert "cookie_secret" not in err


def test_authz_is_quiet_when_upstreams_resolve(
    tmp_path: Path, capsys: Capture, no_server: list[Any]
) -> None:
    routes = [{**UNRESOLVED_ROUTES[0], "to": "http://localhost:8080"}, UNRESOLVED_ROUTES[3]]
    assert main(["authz", "-c", write(tmp_path, config(routes=routes))]) == 0
    assert capsys.readouterr().err == ""


def test_authz_started_by_run_leaves_the_upstream_check_to_run(
    tmp_path: Path, capsys: Capture, no_server: list[Any]
) -> None:
    path = write(tmp_path, config(routes=UNRESOLVED_ROUTES))
    assert main(["authz", "-c", path, "--no-upstream-check"]) == 0
    assert capsys.readouterr().err == ""


# ---- authgate run --------------------------------------------------------------------------


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    """run() installs SIGINT/SIGTERM handlers for its own life; give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class _DeadWorker:
    returncode = 3

    def __init__(self, argv: list[str], **_: Any) -> None:
        self.argv = argv

    def poll(self) -> int:
        return self.returncode

    def terminate(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


def test_run_warns_once_then_its_workers_do_not(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch,
    keep_signal_handlers: None,
) -> None:
    workers: list[_DeadWorker] = []

    def popen(argv: list[str], **kwargs: Any) -> _DeadWorker:
        workers.append(_DeadWorker(argv, **kwargs))
        return workers[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    path = write(tmp_path, config(routes=UNRESOLVED_ROUTES, cookie_secret=None))
    assert main(["run", "-c", path, "--workers", "2"]) == 1  # the fake workers exit at once
    err = capsys.readouterr().err
    lines = upstream_lines(err)
    assert [line.split(": ")[2] for line in lines] == ["routes[0].to", "routes[2].to"], err
    secrets = [line for line in err.splitlines() if "not set" in line]
    assert len(secrets) == 1, err
    assert secrets[0].startswith("authgate: warning: cookie_secret not set; using a random value")
    assert "signing_key" not in secrets[0]
    assert len(workers) == 2
    assert all("--no-upstream-check" in w.argv for w in workers)
