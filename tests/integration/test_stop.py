"""`authgate run` stops cleanly (issue 12): SIGTERM lets requests in flight finish and exits 0
within 10 s leaving no process; a SIGKILLed run takes its children with it; a second run on a
served port refuses to start.

Two real runs of one config (Envoy + 2 workers each, one test IdP)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from authgate.supervise.ports import refuse_if_served
from tests.support.gate import Gate, cookie_of, eventually, gates
from tests.support.hammer import alive, run_state
from tests.support.resolve import map_hosts
from tests.support.stack import free_port


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gate]]:
    with gates(tmp_path_factory.mktemp("stop"), count=2, workers=2) as found:
        yield found


@pytest.fixture(autouse=True)
def hosts() -> Iterator[None]:
    with map_hosts({"*.test": "127.0.0.1"}):
        yield


def children(gate: Gate) -> list[int]:
    state = run_state(gate.stack.runtime_dir)
    return [state["envoy_pid"], *(w["pid"] for w in state["workers"])]


def test_a_second_run_on_a_served_port_refuses_to_start(two: list[Gate], tmp_path: Path) -> None:
    first = two[0]
    rundir = tmp_path / "second"
    result = subprocess.run(
        [sys.executable, "-m", "authgate", "run", "-c", str(first.stack.config_path),
         "--runtime-dir", str(rundir)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1, result.stderr
    port = first.port
    assert f"127.0.0.1:{port} is already in use (another `authgate run`?)" in result.stderr
    assert not (rundir / "envoy.log").exists()  # no Envoy was started
    assert first.stack.proc is not None and first.stack.proc.poll() is None


def test_a_second_run_in_the_same_runtime_dir_refuses_and_touches_nothing(
    two: list[Gate], tmp_path: Path
) -> None:
    first = two[0]
    config = dict(first.stack.config, address=f"127.0.0.1:{free_port()}")  # a free port
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    state = run_state(first.stack.runtime_dir)
    result = subprocess.run(
        [sys.executable, "-m", "authgate", "run", "-c", str(path),
         "--runtime-dir", str(first.stack.runtime_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "is the runtime directory of another `authgate run`" in result.stderr
    assert run_state(first.stack.runtime_dir) == state  # its sockets and files untouched
    assert all(Path(w["socket"]).exists() for w in state["workers"])
    assert first.get("other.test", "/", "").status_code in (302, 401)  # still answering


def test_sigterm_finishes_requests_in_flight_and_leaves_no_process(two: list[Gate]) -> None:
    gate = two[0]
    with gate.client() as browser:
        gate.login(browser, "jenkins.test", "alice@example.com")
        cookie = cookie_of(browser, "jenkins.test")
    pids = children(gate)
    answers: list[int | str] = []

    def slow_request() -> None:
        try:
            answers.append(gate.get("jenkins.test", "/job/slow?sleep=2", cookie).status_code)
        except httpx.HTTPError as exc:
            answers.append(f"{type(exc).__name__}: {exc}")

    inflight = threading.Thread(target=slow_request)
    inflight.start()
    eventually(lambda: any(r.path.startswith("/job/slow") for r in gate.jenkins.requests),
               within=10)
    proc = gate.stack.proc
    assert proc is not None
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    took = time.monotonic() - started
    inflight.join(10)
    assert answers == [200]  # it was answered, not cut
    assert took < 10
    assert not [pid for pid in pids if alive(pid)]
    assert "stopping: draining requests in flight" in gate.stack.log()
    with pytest.raises(httpx.ConnectError):
        gate.get("jenkins.test", "/", cookie)


def test_a_killed_run_takes_its_children_with_it(two: list[Gate]) -> None:
    gate = two[1]
    pids = children(gate)
    assert all(alive(pid) for pid in pids)
    proc = gate.stack.proc
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=5)
    eventually(lambda: not [pid for pid in pids if alive(pid)], within=10)
    refuse_if_served("127.0.0.1", gate.port)  # the port is free again: a new run could start
