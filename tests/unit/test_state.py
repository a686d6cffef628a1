"""Per-worker state: where the embedded session store lives, and that the workers of one run
share it (single use of hand-offs and OAuth state is the store's `first_use`, tested in
tests/integration/test_session_store.py)."""

import base64
import os
import time
from pathlib import Path

import pytest

from authgate.authz.state import AuthzState, default_state_dir
from authgate.config import build_runtime, settings_from_mapping
from authgate.config.runtime import RuntimeConfig
from authgate.session.store import SqliteStore


def _cfg() -> RuntimeConfig:
    raw = {
        "address": "127.0.0.1:8080",
        "insecure_server": True,
        "authenticate_service_url": "http://authenticate.test:8080",
        "idp_provider_url": "http://127.0.0.1:9",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
        "routes": [
            {
                "from": "http://app.test:8080",
                "to": "http://127.0.0.1:9",
                "allow_public_unauthenticated_access": True,
            }
        ],
    }
    return build_runtime(settings_from_mapping(raw, environ={}), warn=False)


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert default_state_dir() == tmp_path / "a"  # systemd's first StateDirectory
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "authgate"


async def test_workers_of_one_run_share_the_store_through_the_shared_dir(
    tmp_path: Path,
) -> None:
    """What the old per-directory `SeenTokens` promised: a token used at one worker is refused
    at every other, and a session started at one is known at the other."""
    cfg = _cfg()
    worker_a = AuthzState.build(cfg, shared_dir=tmp_path)
    worker_b = AuthzState.build(cfg, shared_dir=tmp_path)
    try:
        store = worker_a.sessions.store
        assert isinstance(store, SqliteStore) and store.path == tmp_path / "sessions.db"
        expires = time.time() + 60
        assert await worker_a.sessions.store.first_use("handoff:1", expires)
        assert not await worker_b.sessions.store.first_use("handoff:1", expires)
        assert await worker_b.sessions.store.first_use("handoff:2", expires)
        assert (tmp_path / "sessions.db").exists()
    finally:
        await worker_a.sessions.aclose()
        await worker_b.sessions.aclose()
