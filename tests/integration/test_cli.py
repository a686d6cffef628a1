"""`python -m authgate` as a user runs it, in a subprocess: a bad config is one line and exit 2.

The same configs loaded in-process: tests/unit/test_config.py. No stack is started here.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.config import Settings
from authgate.config.schema import parse_signing_key
from tests.support.sample_config import (
    P384_KEY,
    b64,
    example,
    load_and_build,
    public_numbers,
    set_key,
    set_route_key,
    yaml_with,
)


def _clean_env() -> dict[str, str]:
    """The test process's environment minus anything that would override config keys."""
    return {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authgate", *args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CLI_BAD_CONFIGS = [
    pytest.param(yaml_with(set_key("colour", "blue")), "colour", id="unknown-key"),
    pytest.param(yaml_with(set_key("signing_key", P384_KEY)), "signing_key", id="p384"),
    pytest.param(
        yaml_with(set_key("cookie_secret", b64(os.urandom(8)))), "cookie_secret", id="cookie-secret"
    ),
    pytest.param(
        yaml_with(set_route_key(0, "to", "ftp://files.test/")), "routes[0].to", id="ftp-upstream"
    ),
    pytest.param(
        yaml_with(set_route_key(0, "policy", [{"allow": {"or": [{"emial": "a@b.c"}]}}])),
        "emial",
        id="unknown-criterion",
    ),
    pytest.param("address: 1\nroutes: [\n", "not valid YAML", id="bad-yaml"),
]


@pytest.mark.parametrize(("text", "named"), CLI_BAD_CONFIGS)
def test_cli_bad_config_is_one_line_and_exit_2(tmp_path: Path, text: str, named: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    result = run_cli("envoy-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("authgate: config error:")
    assert named in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["authz", "run"])
def test_other_commands_report_config_errors_the_same_way(tmp_path: Path, command: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml_with(set_key("colour", "blue")))
    result = run_cli(command, "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("authgate: config error: colour: unknown key")


def test_cli_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    result = run_cli("envoy-config", "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("authgate: config error: cannot read config file")


def test_cli_keygen_prints_a_p256_signing_key(tmp_path: Path) -> None:
    result = run_cli("keygen", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    pem = base64.b64decode(line, validate=True)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = parse_signing_key(pem)
    assert isinstance(key.curve, ec.SECP256R1)
    # ... and it is accepted as `signing_key` as printed.
    raw = example()
    raw["signing_key"] = line
    runtime = load_and_build(raw)
    assert public_numbers(runtime.signing_key) == public_numbers(key)
