"""`authgate run`: Envoy and N authz workers, kept running, reloaded, stopped together.

- A worker or Envoy that exits is restarted with backoff; Envoy keeps Checks away from a dead
  worker meanwhile (envoy/authz_resilience.py). Only a crash loop ends the run (exit 1).
- SIGHUP, or a change to the config file or a file it names (unless --no-watch), reloads: the new
  config is checked first (a bad one is logged and the old keeps serving); a new generation of
  workers starts; Envoy's xDS files are rewritten and Envoy switches in place; the old
  generation finishes its in-flight Checks and stops.
- SIGTERM/SIGINT: Envoy stops accepting, in-flight requests finish (bounded), everything stops,
  exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import httpx

from authgate.check import startup_warnings
from authgate.config.runtime import missing_secrets_warning
from authgate.envoy import EnvoyProcess, xds
from authgate.errors import ConfigError
from authgate.logs import proxy_log_level
from authgate.ops.metrics import MULTIPROC_ENV
from authgate.ops.service import SupervisorOps
from authgate.supervise import envoy_admin
from authgate.supervise.dirlock import DirectoryLock
from authgate.supervise.plan import DRAIN_TIME_S, Plan, envoy_resources, load_plan
from authgate.supervise.ports import refuse_if_served
from authgate.supervise.restarts import CrashLoop, Restarts
from authgate.supervise.watch import FileWatch, files_named_by
from authgate.supervise.workers import Worker, WorkerFailed, WorkerSet, worker_command

TICK_S = 0.1
WATCH_INTERVAL_S = 1.0
SWITCH_TIMEOUT_S = 15.0
# SIGTERM: requests in flight get this long, then Envoy and the workers stop (total < 10 s).
DRAIN_BUDGET_S = 4.0
ENVOY_STOP_TIMEOUT_S = 2.0
WORKER_STOP_TIMEOUT_S = 3.0
STATE_FILE = "state.json"


def say(message: str) -> None:
    print(f"authgate: {message}", file=sys.stderr, flush=True)


class Supervisor:
    """Hooks for operators' tooling: `readiness()`, `liveness()`, `worker_environment()` (every
    worker's environment is built there), `on_child_exit()` (called once per exited worker
    process), and the counters `restarts`, `reloads`, `reload_failures`."""

    def __init__(
        self,
        config: Path,
        *,
        workers: int = 1,
        runtime_dir: Path | None = None,
        envoy_log_level: str | None = None,
        metrics_address: str | None = None,
        watch: bool = True,
    ) -> None:
        self.config = config
        self.worker_count = workers
        self.own_dir = runtime_dir is None
        self.runtime_dir = runtime_dir or Path(tempfile.mkdtemp(prefix="authgate-"))
        # The embedded session store outlives the workers (and a temporary runtime dir).
        self.shared_dir = None if self.own_dir else self.runtime_dir / "shared"
        self.envoy_log_level = envoy_log_level  # None: from the config (proxy_log_level...)
        self.metrics_address = metrics_address
        self.ops: SupervisorOps | None = None  # /metrics /healthz /readyz (authgate.ops)
        self.ops_env: dict[str, str] = {}
        self.watch_enabled = watch
        self.generated: dict[str, str] = {}
        self.plan: Plan | None = None
        self.resources: xds.Resources | None = None  # what Envoy's xDS files say now
        self.xds_dir = self.runtime_dir / "xds"
        self.lock = DirectoryLock(self.runtime_dir)
        self.workers: WorkerSet | None = None
        self.envoy: EnvoyProcess | None = None
        self.envoy_restarts = Restarts("envoy")
        self.envoy_restart_at: float | None = None
        self.watch: FileWatch | None = None
        self.next_watch = 0.0
        self.generation = 0
        self.restarts = 0
        self.reloads = 0
        self.reload_failures = 0
        self.stopping = False
        self.hangup = False

    # ------------------------------------------------------------------ hooks

    def worker_environment(self, env: dict[str, str]) -> dict[str, str]:
        """The environment of every worker process (the one place it is built)."""
        merged = {**env, **self.ops_env}
        if MULTIPROC_ENV not in self.ops_env:  # no metrics endpoint: workers keep none
            merged.pop(MULTIPROC_ENV, None)
        return merged

    def on_child_exit(self, worker: Worker, pid: int, restarted: bool) -> None:
        """Called once for every worker process that exited (`restarted`: it crashed and is
        restarted, rather than stopped by a reload or the end of the run)."""
        if self.ops is not None:
            self.ops.worker_exited(pid, restarted)

    def readiness(self) -> tuple[bool, str]:
        envoy_up = self.envoy is not None and self.envoy.poll() is None
        serving = self.workers.serving_count() if self.workers else 0
        if self.stopping:
            return False, "stopping"
        if not envoy_up:
            return False, "envoy is not running"
        if serving == 0:
            return False, "no authz worker is serving"
        return True, f"envoy up, {serving}/{self.worker_count} authz worker(s) serving"

    def liveness(self) -> tuple[bool, str]:
        return (False, "stopping") if self.stopping else (True, "supervising")

    # ------------------------------------------------------------------ start

    def _new_generation(self, plan: Plan) -> WorkerSet:
        self.generation += 1
        return WorkerSet(
            generation=self.generation,
            count=self.worker_count,
            runtime_dir=self.runtime_dir,
            command=worker_command(self.config, self.shared_dir),
            env=self.worker_environment(plan.env),
            on_exit=self._worker_exited,
            say=say,
        )

    def _worker_exited(self, worker: Worker, pid: int) -> None:
        restarted = not self.stopping and worker.generation == self.generation
        if restarted:
            self.restarts += 1
        self.on_child_exit(worker, pid, restarted)

    def _watch(
        self, plan: Plan, resources: xds.Resources, seen: FileWatch | None = None
    ) -> FileWatch | None:
        """The config, the files it names and every file Envoy reads."""
        if not self.watch_enabled:
            return None
        envoy_files = [*resources.certificate_files, *resources.files]
        return FileWatch([self.config, *files_named_by(plan.settings), *map(Path, envoy_files)],
                         seen)

    def start(self) -> None:
        plan = load_plan(self.config, self.generated)
        warning = missing_secrets_warning(plan.settings)
        if warning is not None:
            print(warning, file=sys.stderr, flush=True)
        for line in startup_warnings(plan.settings):
            print(line, file=sys.stderr, flush=True)
        refuse_if_served(plan.settings.listen_host, plan.settings.listen_port)
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock.acquire()
        for stale in self.runtime_dir.glob("authz-*"):  # a previous run's sockets
            stale.unlink(missing_ok=True)
        self.plan = plan
        self.ops = SupervisorOps(
            self.metrics_address or plan.settings.metrics_address, self.runtime_dir
        )
        self.ops.worker_env(self.ops_env)  # once: it empties the workers' metrics directory
        self.ops.start()
        workers = self._new_generation(plan)
        self.workers = workers
        workers.start()
        workers.wait_ready()
        bootstrap, resources = envoy_resources(
            plan, workers.endpoints(), self.runtime_dir, validate=False
        )
        xds.write(resources, self.xds_dir)
        self.resources = resources
        self.watch = self._watch(plan, resources)
        self.envoy = EnvoyProcess(
            bootstrap,
            workdir=self.runtime_dir,
            log_level=self.envoy_log_level or proxy_log_level(plan.settings),
            extra_args=(
                "--drain-time-s", str(DRAIN_TIME_S), "--drain-strategy", "immediate",
                # xDS files are held to the same rules as a static bootstrap.
                "--reject-unknown-dynamic-fields",
                # The access log reaches the run's stdout within a second, not ten.
                "--file-flush-interval-msec", "1000",
            ),
            stdout_passthrough=True,
        )
        self.envoy.start()
        self.envoy.wait_ready(timeout=30)
        self._check_envoy_took_everything()
        for route in plan.cfg.routes:
            say(
                f"serving {route.origin}{route.route.prefix or route.route.path or '/'} -> "
                f"{route.route.destination}"
            )
        say(
            f"sign-in at {plan.cfg.authenticate_origin} (listening on {plan.settings.address}); "
            f"{self.worker_count} authz worker(s); Ctrl-C stops, SIGHUP reloads"
            + ("" if self.watch_enabled else " (file watch off)")
        )
        self._write_state()

    def _check_envoy_took_everything(self) -> None:
        assert self.envoy is not None
        refused = envoy_admin.rejected_updates(self.envoy)
        if refused:
            raise RuntimeError(
                f"Envoy refused part of its configuration ({', '.join(sorted(refused))}):\n"
                f"{self.envoy.stderr_tail()}"
            )

    # ------------------------------------------------------------------ reload

    def reload(self, reason: str) -> bool:
        """Switch to the config on disk; on any failure keep serving the current one."""
        assert self.workers is not None and self.envoy is not None and self.plan is not None
        say(f"reloading ({reason})")
        started = time.monotonic()
        # Stamped before reading: a file changed from here on triggers the next reload.
        seen = self.watch.snapshot() if self.watch is not None else None
        if seen is not None:
            self.watch = seen  # a refused config is not retried until a file changes again
        try:
            plan = load_plan(self.config, self.generated)
        except ConfigError as exc:
            return self._refused(f"config error: {exc}")
        if (plan.settings.listen_host, plan.settings.listen_port) != (
            self.plan.settings.listen_host,
            self.plan.settings.listen_port,
        ):
            refused = f"address changed to {plan.settings.address}: restart authgate to move it"
            return self._refused(refused)
        new = self._new_generation(plan)
        try:
            _, resources = envoy_resources(
                plan, new.endpoints(), self.runtime_dir, validate=True
            )
        except (ValueError, OSError) as exc:
            self.generation -= 1
            return self._refused(str(exc))
        try:
            new.start()
            new.wait_ready(abort=lambda: self.stopping)  # SIGTERM must not wait for a reload
        except WorkerFailed as exc:
            self.generation -= 1  # first: their exits are no restarts
            new.stop(WORKER_STOP_TIMEOUT_S)
            return self._refused(str(exc))
        ready_after = time.monotonic() - started
        old, old_resources = self.workers, self.resources
        assert old_resources is not None
        try:
            switched = self._switch(old_resources, resources, {str(w.socket) for w in new.workers})
            problem = f"Envoy did not take the new workers:\n{self.envoy.stderr_tail()}"
        except OSError as exc:  # the xDS files could not be written
            switched, problem = False, f"cannot write Envoy's configuration: {exc}"
        if not switched:
            with contextlib.suppress(OSError):
                xds.write(old_resources, self.xds_dir)  # Envoy keeps sending Checks to the old
            self.generation = old.generation
            new.stop(WORKER_STOP_TIMEOUT_S)
            return self._refused(problem)
        switched_after = time.monotonic() - started
        self.workers, self.plan, self.resources = new, plan, resources
        self.watch = self._watch(plan, resources, seen)
        self._reloaded()
        old.stop(WORKER_STOP_TIMEOUT_S)  # they finish the Checks Envoy sent them
        say(f"reloaded: generation {new.generation} serving (workers ready after "
            f"{ready_after:.1f} s, Envoy switched after {switched_after:.1f} s, old generation "
            f"stopped after {time.monotonic() - started:.1f} s)")
        return True

    def _switch(self, old: xds.Resources, new: xds.Resources, sockets: set[str]) -> bool:
        """Envoy from the old workers to the new ones without a Check failing: first both sets
        (the new ones get Checks once they pass a health check), then only the new set (the old
        ones finish what they have). Routes and listeners last: their clusters exist by then."""
        assert self.envoy is not None
        xds.write(new.endpoints_with(old), self.xds_dir, ("sds", "eds", "cds"))
        if not envoy_admin.wait_for_authz_hosts(self.envoy, sockets, SWITCH_TIMEOUT_S, only=False):
            return False
        xds.write(new, self.xds_dir, ("eds",))
        if not envoy_admin.wait_for_authz_hosts(self.envoy, sockets, SWITCH_TIMEOUT_S, only=True):
            return False
        refused_before = envoy_admin.rejected_updates(self.envoy)
        xds.write(new, self.xds_dir, ("rds", "lds"))
        time.sleep(0.2)  # Envoy reads a renamed file at once; a refusal shows in its stats
        refused = envoy_admin.rejected_updates(self.envoy)
        if refused != refused_before:
            say(f"error: Envoy refused the new routes or listeners, it keeps the previous ones:\n"
                f"{self.envoy.stderr_tail()}")
        return True

    def reload_certificates(self, reason: str) -> bool:
        """Only certificate files changed: new SDS secrets, same workers."""
        assert self.workers is not None and self.plan is not None
        say(f"reloading the certificates ({reason})")
        try:
            _, resources = envoy_resources(
                self.plan, self.workers.endpoints(), self.runtime_dir, validate=True
            )
        except (ValueError, OSError) as exc:
            return self._refused(str(exc))
        try:
            xds.write(resources, self.xds_dir, ("sds",))
        except OSError as exc:
            return self._refused(f"cannot write Envoy's configuration: {exc}")
        self.resources = resources
        self._reloaded()
        say("reloaded the certificates: new TLS connections get them")
        return True

    def _reloaded(self) -> None:
        self.reloads += 1
        if self.ops is not None:
            self.ops.reloaded(True)
        self._write_state()

    def _refused(self, why: str) -> bool:
        self.reload_failures += 1
        if self.ops is not None:
            self.ops.reloaded(False)
        say(f"reload refused, still serving the previous configuration: {why}")
        return False

    # ------------------------------------------------------------------ supervise

    def _supervise_envoy(self, now: float) -> None:
        assert self.envoy is not None
        if self.envoy_restart_at is not None:
            if now >= self.envoy_restart_at:
                self.envoy_restart_at = None
                self.envoy.restart()
                self._write_state()
            return
        code = self.envoy.poll()
        if code is None:
            return
        delay = self.envoy_restarts.record_exit(now)
        self.restarts += 1
        say(f"envoy exited with code {code}; restarting in {delay:.2f} s:\n"
            f"{self.envoy.stderr_tail(10)}")
        self.envoy_restart_at = now + delay

    def _tick(self) -> None:
        assert self.workers is not None
        now = time.monotonic()
        if self.hangup:
            self.hangup = False
            self.reload("SIGHUP")
        elif self.watch is not None and now >= self.next_watch:
            self.next_watch = now + WATCH_INTERVAL_S
            changed = self.watch.changed()
            if changed:
                what = ", ".join(str(p) for p in changed) + " changed"
                if set(changed) <= self._certificate_files():
                    self.reload_certificates(what)
                else:
                    self.reload(what)
        pids = self.workers.pids()
        self.workers.supervise(time.monotonic())
        self._supervise_envoy(time.monotonic())
        if self.workers.pids() != pids:
            self._write_state()

    def _certificate_files(self) -> set[Path]:
        """The files that only Envoy's SDS holds (a change needs no new workers)."""
        assert self.plan is not None and self.resources is not None
        settings = self.plan.settings
        named = (settings.certificate_file, settings.certificate_key_file)
        return {
            Path(os.path.abspath(f))
            for f in (*self.resources.certificate_files, *named)
            if f
        }

    def _write_state(self) -> None:
        """state.json in the runtime dir: the live pids, for operators and tests."""
        assert self.workers is not None
        state = {
            "pid": os.getpid(),
            "envoy_pid": self.envoy.pid if self.envoy else None,
            "generation": self.workers.generation,
            "workers": [
                {"index": w.index, "pid": w.proc.pid if w.proc else None, "socket": str(w.socket)}
                for w in self.workers.workers
            ],
            "restarts": self.restarts,
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
        }
        target = self.runtime_dir / STATE_FILE
        partial = target.with_name(STATE_FILE + ".tmp")
        partial.write_text(json.dumps(state))
        partial.replace(target)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Drain through Envoy (bounded), then stop Envoy, then the workers."""
        self.stopping = True
        if self.envoy is not None:
            if self.envoy.poll() is None:
                left = envoy_admin.drain(self.envoy, DRAIN_BUDGET_S)
                if left:
                    say(f"stopping with {left} request(s) still in flight")
            self.envoy.stop(ENVOY_STOP_TIMEOUT_S)
        if self.workers is not None:
            self.workers.stop(WORKER_STOP_TIMEOUT_S)
        if self.ops is not None:
            self.ops.close()
        if not self.lock.held:
            return  # the directory is another run's: touch nothing
        if self.own_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        else:
            (self.runtime_dir / STATE_FILE).unlink(missing_ok=True)
        self.lock.release()

    # ------------------------------------------------------------------ main loop

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self.hangup = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            self.start()
            while not self.stopping:
                self._tick()
                time.sleep(TICK_S)
            say("stopping: draining requests in flight")
            return 0
        except CrashLoop as exc:
            say(f"error: {exc}; stopping")
            return 1
        except (WorkerFailed, RuntimeError, OSError, ValueError, httpx.HTTPError) as exc:
            say(f"error: {exc}")
            return 1
        finally:
            self.stop()
