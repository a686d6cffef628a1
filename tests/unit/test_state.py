"""Per-worker state: single-use token memory is bounded and forgets expired ids."""

import time

from authgate.authz.state import SeenTokens


def test_seen_tokens_refuses_a_replay() -> None:
    seen = SeenTokens(limit=10)
    assert seen.first_use("a", time.time() + 60)
    assert not seen.first_use("a", time.time() + 60)


def test_seen_tokens_is_bounded() -> None:
    seen = SeenTokens(limit=100)
    for i in range(5000):
        seen.first_use(f"id-{i}", time.time() + 60)
    assert len(seen) <= 100


def test_seen_tokens_forgets_expired_ids() -> None:
    seen = SeenTokens(limit=100)
    seen.first_use("old", time.time() - 1)
    seen.first_use("new", time.time() + 60)
    assert len(seen) == 1


def test_seen_tokens_shared_by_workers_through_a_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    worker_a = SeenTokens(directory=tmp_path)
    worker_b = SeenTokens(directory=tmp_path)
    assert worker_a.first_use("handoff-1", time.time() + 60)
    assert not worker_b.first_use("handoff-1", time.time() + 60)
    assert worker_b.first_use("handoff-2", time.time() + 60)
