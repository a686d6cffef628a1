"""Where the ops endpoint runs and what "ready" means there.

- `authgate run`: in the supervisor. Ready = Envoy says LIVE and at least one authz worker
  accepts connections on its socket. Workers write their metrics to files in the runtime dir
  (PROMETHEUS_MULTIPROC_DIR, emptied per run); /metrics adds them up; /metrics/envoy is
  Envoy's /stats/prometheus through its admin socket.
- `authgate authz` alone (Kubernetes, your own Envoy): in that process. Ready = its gRPC
  server accepts connections."""

import os
import shutil
from pathlib import Path

from authgate.ops.http_server import OpsServer
from authgate.ops.metrics import (
    MULTIPROC_ENV,
    SupervisorStats,
    exposition,
    multiproc_dir,
    registry_for,
    worker_exited,
)
from authgate.ops.probes import accepts, admin_get, envoy_live

# Set for the workers of `authgate run`: the supervisor serves their metrics, they do not.
SUPERVISED_ENV = "AUTHGATE_SUPERVISED"
ADMIN_SOCKET = "admin.sock"
WORKER_SOCKETS = "authz-*.sock"


class SupervisorOps:
    """The supervisor's side. Call sites: `worker_env` before starting workers, `start`,
    `worker_exited` / `reloaded` as they happen, `close` at the end."""

    def __init__(self, address: str | None, runtime_dir: Path) -> None:
        self.address = address
        self.runtime_dir = runtime_dir
        self.files = runtime_dir / "metrics"
        self.stats = SupervisorStats(workers_ready=self.workers_ready)
        self.server: OpsServer | None = None

    def worker_env(self, env: dict[str, str]) -> None:
        env[SUPERVISED_ENV] = "1"
        if self.address is None:
            env.pop(MULTIPROC_ENV, None)
            return
        shutil.rmtree(self.files, ignore_errors=True)  # counts start at zero each run
        self.files.mkdir(parents=True)
        env[MULTIPROC_ENV] = str(self.files)

    def start(self) -> None:
        if self.address is None:
            return
        registry = registry_for(self.files, self.stats)
        self.server = OpsServer(
            self.address,
            lambda: exposition(registry),
            self.readiness,
            self.envoy_metrics,
        ).start()

    def workers_ready(self) -> int:
        return sum(accepts(str(sock)) for sock in self.runtime_dir.glob(WORKER_SOCKETS))

    def readiness(self) -> tuple[bool, str]:
        problem = envoy_live(self.runtime_dir / ADMIN_SOCKET)
        if problem is not None:
            return False, problem
        serving = self.workers_ready()
        if serving == 0:
            return False, "no authz worker is serving"
        return True, f"ready: envoy live, {serving} authz worker(s) serving"

    def envoy_metrics(self) -> bytes:
        status, body = admin_get(self.runtime_dir / ADMIN_SOCKET, "/stats/prometheus", 10.0)
        if status != 200:
            raise OSError(f"envoy admin answered {status}")
        return body

    def worker_exited(self, pid: int, restarted: bool = True) -> None:
        if self.address is not None:
            worker_exited(self.files, pid)
        if restarted:
            self.stats.worker_restarts += 1

    def reloaded(self, ok: bool) -> None:
        self.stats.reloads["success" if ok else "failure"] += 1

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def supervised() -> bool:
    return os.environ.get(SUPERVISED_ENV) == "1"


def start_standalone(address: str, listen: str) -> OpsServer:
    """`authgate authz` on its own: ready while its gRPC server accepts on `listen`."""

    def readiness() -> tuple[bool, str]:
        if accepts(listen):
            return True, f"ready: serving ext_authz on {listen}"
        return False, f"ext_authz not serving on {listen}"

    registry = registry_for(multiproc_dir())
    return OpsServer(address, lambda: exposition(registry), readiness).start()
