"""`authgate run` keeps serving when a worker dies (issue 12): Envoy sends Checks to the live
worker, the dead one is restarted, and only a crash loop ends the run.

One real run (Envoy + 2 workers + the test IdP); the crash-loop test ends it, so it comes last."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gate import Gate, cookie_of, eventually, gates
from tests.support.hammer import Hammer, alive, run_state
from tests.support.resolve import map_hosts


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    with gates(tmp_path_factory.mktemp("supervision"), workers=2) as (gate,):
        yield gate


@pytest.fixture(scope="module")
def alice(gate: Gate) -> str:
    with map_hosts({"*.test": "127.0.0.1"}), gate.client() as browser:
        landed = gate.login(browser, "jenkins.test", "alice@example.com")
        assert landed.status_code == 200, landed.text[-800:]
        return cookie_of(browser, "jenkins.test")


@pytest.fixture(autouse=True)
def hosts() -> Iterator[None]:
    with map_hosts({"*.test": "127.0.0.1"}):
        yield


def host_successes(gate: Gate, socket: str) -> int:
    """Envoy's count of Checks a worker socket answered."""
    transport = httpx.HTTPTransport(uds=str(gate.stack.runtime_dir / "admin.sock"))
    with httpx.Client(transport=transport, base_url="http://admin", timeout=5) as admin:
        text = admin.get("/clusters").text
    prefix = f"authgate_authz::{socket}::rq_success::"
    return sum(int(line.removeprefix(prefix)) for line in text.splitlines()
               if line.startswith(prefix))


def envoy_stats(gate: Gate, word: str) -> list[str]:
    transport = httpx.HTTPTransport(uds=str(gate.stack.runtime_dir / "admin.sock"))
    with httpx.Client(transport=transport, base_url="http://admin", timeout=5) as admin:
        text = admin.get("/stats").text
    return [line for line in text.splitlines()
            if "authgate_authz" in line and word in line and not line.endswith(": 0")]


def test_a_killed_worker_is_replaced_while_the_other_serves(gate: Gate, alice: str) -> None:
    rdir = gate.stack.runtime_dir
    before = run_state(rdir)
    victim = before["workers"][0]
    with Hammer(gate, "jenkins.test", "/job/x", alice, threads=4) as load:
        eventually(lambda: load.total() > 20, within=20)
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)

        def replaced() -> bool:
            return run_state(rdir)["workers"][0]["pid"] != victim["pid"]

        eventually(replaced, within=5)
        ready = rdir / Path(victim["socket"]).name.replace(".sock", ".ready")
        eventually(ready.exists, within=5)
        served = host_successes(gate, victim["socket"])
        eventually(lambda: host_successes(gate, victim["socket"]) > served,
                   within=max(0.5, 5 - (time.monotonic() - killed_at)), step=0.1)
        served_after = time.monotonic() - killed_at
        # ... and the run goes on serving with both.
        count = load.total()
        eventually(lambda: load.total() > count + 20, within=10)
    assert load.errors == [], load.errors[:5]
    failed = {status: n for status, n in load.statuses.items() if status != 200}
    # At most the Checks the killed worker had in flight (one per client thread) fail, as 503.
    assert set(failed) <= {503} and sum(failed.values()) <= 4, load.statuses
    assert load.statuses[200] > 40
    after = run_state(rdir)
    assert after["restarts"] == before["restarts"] + 1
    assert after["workers"][1]["pid"] == before["workers"][1]["pid"]
    assert after["envoy_pid"] == before["envoy_pid"]
    assert "was killed by SIGKILL; restarting" in gate.stack.log()
    print(f"worker killed under load: {dict(load.statuses)}, replacement serving "
          f"{served_after:.2f} s after the kill; {envoy_stats(gate, 'retry')}")


def test_a_killed_envoy_is_restarted(gate: Gate, alice: str) -> None:
    rdir = gate.stack.runtime_dir
    before = run_state(rdir)
    os.kill(before["envoy_pid"], signal.SIGKILL)
    eventually(lambda: run_state(rdir)["envoy_pid"] != before["envoy_pid"], within=5)
    eventually(lambda: gate.get("jenkins.test", "/job/x", alice).status_code == 200
               if _answers(gate) else False, within=10, step=0.1)
    assert gate.stack.proc is not None and gate.stack.proc.poll() is None
    assert "envoy exited with code -9; restarting" in gate.stack.log()


def _answers(gate: Gate) -> bool:
    try:
        gate.get("jenkins.test", "/", "")
    except httpx.HTTPError:
        return False
    return True


def test_a_crash_loop_ends_the_run_with_the_reason(gate: Gate) -> None:
    """The same worker killed 20 times within a minute: exit 1, naming it; nothing left."""
    rdir = gate.stack.runtime_dir
    proc = gate.stack.proc
    assert proc is not None
    state = run_state(rdir)
    children = [state["envoy_pid"], *(w["pid"] for w in state["workers"])]
    killed: set[int] = set()
    deadline = time.monotonic() + 50
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            current = run_state(rdir)
        except (OSError, ValueError):  # the run has ended and removed it
            break
        pid = current["workers"][1]["pid"]  # worker 0 has died once already
        if pid not in killed:
            children.append(pid)
            killed.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    assert proc.wait(timeout=15) == 1
    assert len(killed) == 20
    assert "authz worker 1 exited 20 times within 60 s: giving up" in gate.stack.log()
    assert not [pid for pid in children if alive(pid)]
