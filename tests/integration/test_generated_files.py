"""Committed generated files match a fresh run of their generator (a subprocess each).

* src/authgate/_pb: scripts/gen_protos.py (protoc over the vendored protos);
* envoy/compose.yaml: scripts/gen_compose_envoy.py (the bootstrap for docker-compose.yaml).

The checks that only read these files: tests/unit/test_protos_fresh.py and
tests/unit/test_compose_files.py. No stack is started here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- ext_authz stubs

COMMITTED_STUBS = REPO_ROOT / "src" / "authgate" / "_pb"
REGENERATE_STUBS = "python scripts/gen_protos.py"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    fresh_dir = tmp_path / "_pb"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_protos.py"), "--out", str(fresh_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"gen_protos.py failed:\n{result.stdout}\n{result.stderr}"

    fresh, committed = _tree(fresh_dir), _tree(COMMITTED_STUBS)
    missing = sorted(fresh.keys() - committed.keys())
    extra = sorted(committed.keys() - fresh.keys())
    assert not missing and not extra, (
        f"src/authgate/_pb is out of date (missing: {missing}, unexpected: {extra}); "
        f"run `{REGENERATE_STUBS}` and commit the result"
    )
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, (
        f"src/authgate/_pb differs from the vendored protos in {stale}; "
        f"run `{REGENERATE_STUBS}` and commit the result"
    )


# ---------------------------------------------------------------------------- compose bootstrap

ENVOY_BOOTSTRAP = REPO_ROOT / "envoy" / "compose.yaml"
GENERATOR = REPO_ROOT / "scripts" / "gen_compose_envoy.py"
REGENERATE_BOOTSTRAP = "python scripts/gen_compose_envoy.py"


def test_committed_envoy_bootstrap_matches_a_fresh_generation(tmp_path: Path) -> None:
    fresh = tmp_path / "compose.yaml"
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(fresh)],
        cwd=tmp_path,  # the output must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{GENERATOR.name} failed:\n{result.stdout}\n{result.stderr}"
    assert ENVOY_BOOTSTRAP.exists(), f"envoy/compose.yaml is missing; run `{REGENERATE_BOOTSTRAP}`"
    assert fresh.read_text(encoding="utf-8") == ENVOY_BOOTSTRAP.read_text(encoding="utf-8"), (
        f"envoy/compose.yaml is stale (deploy/compose/config.yaml or the bootstrap generator "
        f"changed); run `{REGENERATE_BOOTSTRAP}` and commit the result"
    )
