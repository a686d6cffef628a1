"""`authgate run`: start N authz workers and Envoy, supervise them, stop them together."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from authgate.check import startup_warnings
from authgate.config import build_runtime, load_settings
from authgate.config.runtime import (
    generate_cookie_secret,
    generate_signing_key_b64,
    missing_secrets_warning,
)
from authgate.envoy.bootstrap import build_bootstrap
from authgate.envoy.process import EnvoyProcess
from authgate.logs import proxy_log_level
from authgate.ops.service import SupervisorOps

WORKER_START_TIMEOUT_S = 30.0


class ChildFailed(RuntimeError):
    pass


def _say(message: str) -> None:
    print(f"authgate: {message}", file=sys.stderr, flush=True)


def _start_workers(
    config: Path, count: int, runtime_dir: Path, env: dict[str, str], shared_dir: Path | None
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """`shared_dir`: where the workers keep the embedded session store; None: the default
    state directory (a temporary runtime dir must not take the sessions with it)."""
    procs: list[subprocess.Popen[bytes]] = []
    endpoints: list[str] = []
    for index in range(count):
        sock = runtime_dir / f"authz-{index}.sock"
        ready = runtime_dir / f"authz-{index}.ready"
        ready.unlink(missing_ok=True)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "authgate",
                    "authz",
                    "-c",
                    str(config),
                    "--listen",
                    f"unix:{sock}",
                    "--ready-file",
                    str(ready),
                    *(("--shared-dir", str(shared_dir)) if shared_dir else ()),
                    "--no-upstream-check",  # `run` has printed those warnings once
                ],
                env=env,
            )
        )
        endpoints.append(f"unix:{sock}")
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    for index, proc in enumerate(procs):
        ready = runtime_dir / f"authz-{index}.ready"
        while not ready.exists():
            if proc.poll() is not None:
                raise ChildFailed(f"authz worker {index} exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise ChildFailed(
                    f"authz worker {index} did not start within {WORKER_START_TIMEOUT_S:.0f}s"
                )
            time.sleep(0.05)
    return procs, endpoints


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 5
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(
    config: Path,
    *,
    workers: int = 1,
    runtime_dir: str | None = None,
    envoy_log_level: str | None = None,
    metrics_address: str | None = None,
) -> int:
    if workers < 1:
        _say("--workers must be at least 1")
        return 2
    settings = load_settings(config)
    env = dict(os.environ)
    if settings.cookie_secret is None:
        env["COOKIE_SECRET"] = generate_cookie_secret()
    if settings.signing_key is None:
        env["SIGNING_KEY"] = generate_signing_key_b64()
    cfg = build_runtime(load_settings(config, environ=env), warn=False)
    secrets_warning = missing_secrets_warning(settings)
    if secrets_warning is not None:
        print(secrets_warning, file=sys.stderr, flush=True)
    for line in startup_warnings(settings):
        print(line, file=sys.stderr, flush=True)
    own_dir = runtime_dir is None
    rdir = Path(runtime_dir) if runtime_dir else Path(tempfile.mkdtemp(prefix="authgate-"))
    rdir.mkdir(parents=True, exist_ok=True)
    # ops: /metrics, /healthz, /readyz in this process; the workers' metrics files.
    ops = SupervisorOps(metrics_address or settings.metrics_address, rdir)
    ops.worker_env(env)

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        # Reload is not there yet: dying here used to leave Envoy and the workers orphaned.
        _say("SIGHUP: reloading is not supported yet; restart authgate to apply a new config")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)

    procs: list[subprocess.Popen[bytes]] = []
    envoy: EnvoyProcess | None = None
    try:
        ops.start()
        shared = None if own_dir else rdir / "shared"
        procs, endpoints = _start_workers(config, workers, rdir, env, shared)
        bootstrap = build_bootstrap(cfg, endpoints, admin_address=f"unix:{rdir / 'admin.sock'}")
        envoy = EnvoyProcess(
            bootstrap, workdir=rdir, log_level=envoy_log_level or proxy_log_level(settings)
        )
        envoy.start()
        envoy.wait_ready()
        for route in cfg.routes:
            _say(
                f"serving {route.origin}{route.route.prefix or route.route.path or '/'} -> "
                f"{route.route.destination}"
            )
        _say(
            f"sign-in at {cfg.authenticate_origin} (listening on {cfg.settings.address}); "
            f"{workers} authz worker(s); Ctrl-C stops"
        )
        while not stopping:
            for index, proc in enumerate(procs):
                if proc.poll() is not None:
                    raise ChildFailed(f"authz worker {index} exited with code {proc.returncode}")
            code = envoy.poll()
            if code is not None:
                raise ChildFailed(f"envoy exited with code {code}")
            time.sleep(0.2)
        return 0
    except ChildFailed as exc:
        _say(f"error: {exc}; stopping")
        return 1
    except (RuntimeError, OSError, ValueError) as exc:
        _say(f"error: {exc}")
        return 1
    finally:
        ops.close()
        if envoy is not None:
            envoy.stop()
        _stop(procs)
        if own_dir:
            shutil.rmtree(rdir, ignore_errors=True)
