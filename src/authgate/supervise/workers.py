"""One generation of authz workers: `authgate authz` processes, each on its own Unix socket.

A reload starts the next generation beside this one; the sockets carry the generation number so
Envoy can be pointed from one set to the other."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from authgate.supervise.lifeline import die_with_parent
from authgate.supervise.restarts import Restarts

WORKER_START_TIMEOUT_S = 30.0
# SIGTERM gives in-flight Checks authgate.authz.server.STOP_GRACE_S; then SIGKILL.
WORKER_STOP_TIMEOUT_S = 4.0


class WorkerFailed(RuntimeError):
    pass


@dataclass
class Worker:
    generation: int
    index: int
    socket: Path
    ready_file: Path
    restarts: Restarts
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None  # set while waiting to restart after an exit

    @property
    def name(self) -> str:
        return f"authz worker {self.index} (generation {self.generation})"

    @property
    def endpoint(self) -> str:
        return f"unix:{self.socket}"

    def serving(self) -> bool:
        """Started and listening (it writes its ready file once its server is up)."""
        return self.proc is not None and self.proc.poll() is None and self.ready_file.exists()


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class WorkerSet:
    generation: int
    count: int
    runtime_dir: Path
    command: Callable[[Worker], list[str]]
    env: dict[str, str]
    on_exit: Callable[[Worker, int], None]
    say: Callable[[str], None]
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        for index in range(self.count):
            stem = f"authz-{self.generation}-{index}"
            self.workers.append(
                Worker(
                    self.generation,
                    index,
                    self.runtime_dir / f"{stem}.sock",
                    self.runtime_dir / f"{stem}.ready",
                    Restarts(f"authz worker {index}"),
                )
            )

    def endpoints(self) -> list[str]:
        return [w.endpoint for w in self.workers]

    def pids(self) -> list[int | None]:
        return [w.proc.pid if w.proc else None for w in self.workers]

    def _spawn(self, worker: Worker) -> None:
        worker.ready_file.unlink(missing_ok=True)
        worker.restart_at = None
        worker.proc = subprocess.Popen(
            self.command(worker),
            env=self.env,
            stdin=subprocess.DEVNULL,
            process_group=0,  # Ctrl-C reaches the supervisor only; it stops the workers in order
            preexec_fn=die_with_parent(),
        )

    def start(self) -> None:
        for worker in self.workers:
            self._spawn(worker)

    def wait_ready(
        self, timeout: float = WORKER_START_TIMEOUT_S, abort: Callable[[], bool] = lambda: False
    ) -> None:
        """WorkerFailed if one exits or is not serving within `timeout`, or once `abort()`."""
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            while not worker.serving():
                assert worker.proc is not None
                if abort():
                    raise WorkerFailed("stopping")
                if worker.proc.poll() is not None:
                    raise WorkerFailed(f"{worker.name} {_exit_text(worker.proc.returncode)}")
                if time.monotonic() > deadline:
                    raise WorkerFailed(f"{worker.name} did not start within {timeout:.0f} s")
                time.sleep(0.05)

    def supervise(self, now: float) -> None:
        """Notice exits and restart with backoff; CrashLoop (from Restarts) ends the run."""
        for worker in self.workers:
            if worker.restart_at is not None:
                if now >= worker.restart_at:
                    self._spawn(worker)
                continue
            if worker.proc is None or worker.proc.poll() is None:
                continue
            code = worker.proc.returncode
            self.on_exit(worker, worker.proc.pid)
            worker.ready_file.unlink(missing_ok=True)
            delay = worker.restarts.record_exit(now)
            self.say(
                f"{worker.name} (pid {worker.proc.pid}) {_exit_text(code)}; "
                f"restarting in {delay:.2f} s"
            )
            worker.restart_at = now + delay

    def serving_count(self) -> int:
        return sum(1 for w in self.workers if w.serving())

    def stop(self, timeout: float = WORKER_STOP_TIMEOUT_S) -> None:
        """SIGTERM (the worker finishes its in-flight Checks), then SIGKILL after `timeout`."""
        running = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for worker in running:
            assert worker.proc is not None
            worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if worker.proc is None:
                continue
            try:
                worker.proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            if worker in running:
                self.on_exit(worker, worker.proc.pid)
            worker.ready_file.unlink(missing_ok=True)
            worker.socket.unlink(missing_ok=True)
            worker.restart_at = None


def worker_command(config: Path, shared_dir: Path | None) -> Callable[[Worker], list[str]]:
    def command(worker: Worker) -> list[str]:
        return [
            sys.executable, "-m", "authgate", "authz",
            "-c", str(config),
            "--listen", worker.endpoint,
            "--ready-file", str(worker.ready_file),
            *(("--shared-dir", str(shared_dir)) if shared_dir else ()),
            "--no-upstream-check",  # `run` has printed those warnings once
        ]

    return command
