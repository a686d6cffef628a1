"""The processes under test: nginx upstream, authz workers (authgate or no-op), Envoy bootstraps.

Every process started here is recorded by pid in `Processes` and stopped by that pid only.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.config import Settings, build_runtime, load_settings
from authgate.config.runtime import RuntimeConfig, generate_cookie_secret, generate_signing_key_b64
from authgate.envoy import EnvoyProcess, build_bootstrap
from authgate.envoy.bootstrap import AUTHZ_CLUSTER, EXT_AUTHZ_FILTER, ROUTER_FILTER
from authgate.session.manager import SessionManager
from authgate.session.record import IdpTokens
from authgate.authz.state import session_store_for

BENCH_DIR = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
JWT_ISSUER = "bench-issuer.example.com"
ENVOY_CONCURRENCY = 2
WORKER_START_TIMEOUT_S = 60.0

# Sent by the load generator on every request: spoofed identity headers authgate must strip.
SPOOFED_HEADERS = {
    "X-Pomerium-Claim-Email": "mallory@evil.example",
    "X-Pomerium-Jwt-Assertion": "forged.assertion.value",
    "X-Pomerium-Claim-Groups": "admins",
}
USER_CLAIMS = {
    "sub": "alice",
    "email": "alice@example.com",
    "name": "Alice Example",
    "groups": ["devs", "ops"],
}
# Several criteria, all evaluated for an allowed request (an `and`).
# The fast-lane stack (config 7): a pass outlives a whole measurement (10 min, the most the
# config allows; a session's refresh also ends a pass, hence the hour).
FAST_LANE_KEYS: dict[str, Any] = {
    "fast_lane": True, "fast_lane_ttl": "10m", "session_refresh_interval": "1h",
}
APP_POLICY = [
    {
        "allow": {
            "and": [
                {"domain": {"is": "example.com"}},
                {"groups": {"has": "devs"}},
                {"email": {"ends_with": "@example.com"}},
            ]
        }
    }
]


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The environment minus anything authgate would read as a config override."""
    names = {name.upper() for name in Settings.model_fields}
    return {k: v for k, v in os.environ.items() if k not in names}


# ---------------------------------------------------------------------------- /proc accounting


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime, stime are fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def system_cpu() -> tuple[float, float, float]:
    """(busy, total, process) jiffies of the whole machine from /proc/stat; `process` is
    user+nice+system+irq+softirq: what the tasks' utime+stime add up to (a tick that lands in
    an interrupt is charged to the interrupted task's stime too)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total, values[0] + values[1] + values[2] + values[5] + values[6]


def machine_process_cores(seconds: float = 1.0) -> float:
    """How many cores' worth of process CPU the machine spends right now."""
    _, _, before = system_cpu()
    time.sleep(seconds)
    _, _, after = system_cpu()
    return (after - before) / CLK_TCK / seconds


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


# ---------------------------------------------------------------------------- process registry


@dataclass
class Processes:
    """Everything this benchmark started, stopped by pid (SIGTERM, then SIGKILL)."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    envoys: list[EnvoyProcess] = field(default_factory=list)

    def start(self, cmd: list[str], log: Path, env: dict[str, str] | None = None,
              ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_envoy(self, envoy: EnvoyProcess) -> None:
        envoy.stop()
        if envoy in self.envoys:
            self.envoys.remove(envoy)

    def stop_all(self) -> None:
        for envoy in list(self.envoys):
            self.stop_envoy(envoy)
        for proc in list(reversed(self.procs)):
            self.stop(proc)


# ---------------------------------------------------------------------------- upstream


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen unix:{sock};
        location / {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
        # What the upstream received, for the sanity checks (never used under load).
        location = /__bench/echo {{
            default_type text/plain;
            return 200 "assertion=$http_x_pomerium_jwt_assertion\\nemail=$http_x_pomerium_claim_email\\ngroups=$http_x_pomerium_claim_groups\\ncookie=$http_cookie\\n";
        }}
    }}
}}
"""


@dataclass
class Upstream:
    """Debian's nginx on a Unix socket: the same static 200 for every configuration."""

    sock: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, procs: Processes, workdir: Path) -> Upstream:
        sock = workdir / "upstream.sock"
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=workdir, sock=sock))
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (bench/install-deps.sh)")
        proc = procs.start([binary, "-p", str(workdir), "-e", str(workdir / "nginx-error.log"),
                            "-c", str(conf)], workdir / "nginx.log")
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(workdir / 'nginx.log').read_text()}"
                                   f"{_read(workdir / 'nginx-error.log')}")
            time.sleep(0.02)
        return cls(sock, proc)

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------- authgate config


@dataclass
class BenchConfig:
    """One authgate config.yaml for the whole run (ports change per stack, keys do not)."""

    workdir: Path
    upstream_sock: Path
    cookie_secret: str = field(default_factory=generate_cookie_secret)
    signing_key: str = field(default_factory=generate_signing_key_b64)
    # The session store keys (databroker_storage_*); empty: the embedded store.
    session_store: dict[str, str] = field(default_factory=dict)

    def write(self, port: int, extra: dict[str, Any] | None = None) -> tuple[Path, RuntimeConfig]:
        """`extra`: more top-level keys (the fast-lane stack's)."""
        path = self.workdir / f"config-{port}.yaml"
        doc = {
            "address": f"127.0.0.1:{port}",
            "insecure_server": True,
            "authenticate_service_url": f"http://authenticate.localhost:{port}",
            "idp_provider_url": "https://idp.example.com",
            "idp_client_id": "authgate",
            "idp_client_secret": "bench-secret",
            # The headers the sanity check reads (Pomerium sends none unless listed).
            "jwt_claims_headers": ["email", "groups"],
            "cookie_secret": self.cookie_secret,
            "signing_key": self.signing_key,
            **self.session_store,
            **(extra or {}),
            "routes": [
                {
                    "id": "app",
                    "from": f"http://app.localhost:{port}",
                    "to": f"unix://{self.upstream_sock}",
                    "pass_identity_headers": True,
                    "policy": APP_POLICY,
                },
                {
                    "id": "public",
                    "from": f"http://public.localhost:{port}",
                    "to": f"unix://{self.upstream_sock}",
                    "allow_public_unauthenticated_access": True,
                },
            ],
        }
        path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
        cfg = build_runtime(load_settings(path, environ={}), warn=False)
        return path, cfg


def mint_cookies(cfg: RuntimeConfig, store_dir: Path, many_claims: list[dict[str, Any]],
                 host: str) -> list[str]:
    """Sessions started in the embedded session store at `store_dir` (a stack's shared dir, as
    a login there would start them), and their cookie values for `host`."""
    async def go() -> list[str]:
        sessions = SessionManager(cfg.cookie_key, session_store_for(cfg, store_dir, 5.0),
                                  refresh_interval_s=300, cache_size=1)
        try:
            cookies = []
            for claims in many_claims:
                session = await sessions.start(claims, IdpTokens(), 3600)
                cookies.append(sessions.cookie_value(session, host))
            return cookies
        finally:
            await sessions.aclose()

    return asyncio.run(go())


def mint_cookie(cfg: RuntimeConfig, store_dir: Path, claims: dict[str, Any], host: str) -> str:
    return mint_cookies(cfg, store_dir, [claims], host)[0]


# ---------------------------------------------------------------------------- Envoy bootstraps


def _hcm_configs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        f["typed_config"]
        for listener in doc["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for f in chain["filters"]
    ]


def without_ext_authz(doc: dict[str, Any]) -> dict[str, Any]:
    """The same listener, routes and upstream cluster, minus ext_authz and its cluster."""
    doc = copy.deepcopy(doc)
    for hcm in _hcm_configs(doc):
        hcm["http_filters"] = [h for h in hcm["http_filters"] if h["name"] != EXT_AUTHZ_FILTER]
        for vhost in hcm["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                route.pop("typed_per_filter_config", None)
    resources = doc["static_resources"]
    resources["clusters"] = [c for c in resources["clusters"] if c["name"] != AUTHZ_CLUSTER]
    return doc


def es256_key_pair() -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256", "use": "sig",
                      "x": b64(numbers.x), "y": b64(numbers.y)}]}
    return key, jwks


def with_jwt_authn(doc: dict[str, Any], jwks: dict[str, Any], audience: str) -> dict[str, Any]:
    """No ext_authz; Envoy's jwt_authn verifies an ES256 bearer token on every request
    (no jwt_cache_config: every request pays a signature verification)."""
    doc = without_ext_authz(doc)
    jwt_filter = {
        "name": JWT_FILTER,
        "typed_config": {
            "@type": JWT_TYPE,
            "providers": {
                "bench": {
                    "issuer": JWT_ISSUER,
                    "audiences": [audience],
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "forward": False,
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }
    for hcm in _hcm_configs(doc):
        filters = hcm["http_filters"]
        router_at = next(i for i, h in enumerate(filters) if h["name"] == ROUTER_FILTER)
        filters.insert(router_at, jwt_filter)
    return doc


def mint_bearer(key: ec.EllipticCurvePrivateKey, audience: str) -> str:
    now = int(time.time())
    claims = {"iss": JWT_ISSUER, "aud": audience, "sub": "alice", "email": "alice@example.com",
              "iat": now, "nbf": now, "exp": now + 4 * 3600}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "bench"})


# ---------------------------------------------------------------------------- stacks


@dataclass
class Stack:
    """Envoy on a fresh port plus its authz workers (none for configs 1 and 5)."""

    name: str
    port: int
    envoy: EnvoyProcess
    workers: list[subprocess.Popen[bytes]]
    cfg: RuntimeConfig
    workdir: Path

    @property
    def shared_dir(self) -> Path:
        """The authz workers' --shared-dir: their embedded session store lives there."""
        return shared_dir(self.workdir)

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    @property
    def envoy_pid(self) -> int:
        assert self.envoy.pid is not None
        return self.envoy.pid

    def check_alive(self) -> None:
        if self.envoy.poll() is not None:
            raise RuntimeError(f"{self.name}: Envoy exited:\n{self.envoy.stderr_tail()}")
        for i, w in enumerate(self.workers):
            if w.poll() is not None:
                log = _read(self.workdir / f"worker-{i}.log")[-3000:]
                raise RuntimeError(f"{self.name}: authz worker {i} exited:\n{log}")


def shared_dir(workdir: Path) -> Path:
    return workdir / "shared"


def start_workers(procs: Processes, kind: str, count: int, config: Path, workdir: Path,
                  ) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """`authgate authz` workers (kind "authgate") or the no-op server (kind "noop"). The
    authgate workers share one session store in `shared_dir(workdir)`, as `authgate run`'s do."""
    env = clean_env()
    workers, endpoints = [], []
    for i in range(count):
        sock, ready = workdir / f"authz-{i}.sock", workdir / f"authz-{i}.ready"
        ready.unlink(missing_ok=True)
        if kind in ("authgate", "fastlane"):
            cmd = [sys.executable, "-m", "authgate", "authz", "-c", str(config),
                   "--listen", f"unix:{sock}", "--ready-file", str(ready),
                   "--shared-dir", str(shared_dir(workdir))]
        else:
            cmd = [sys.executable, str(BENCH_DIR / "noop_authz.py"),
                   "--listen", f"unix:{sock}", "--ready-file", str(ready)]
            if kind == "noop-raw":
                cmd.append("--raw")
        workers.append(procs.start(cmd, workdir / f"worker-{i}.log", env=env))
        endpoints.append(f"unix:{sock}")
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    for i, proc in enumerate(workers):
        while not (workdir / f"authz-{i}.ready").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                log = _read(workdir / f"worker-{i}.log")[-3000:]
                raise RuntimeError(f"{kind} worker {i} did not start:\n{log}")
            time.sleep(0.02)
    return workers, endpoints


def start_stack(procs: Processes, base: BenchConfig, name: str, kind: str, workers: int,
                jwks: dict[str, Any] | None = None) -> Stack:
    """kind: "envoy" (no authz), "noop", "noop-raw" (no protobuf), "authgate", "fastlane"
    (authgate with `fast_lane: true`), "jwt" (Envoy jwt_authn)."""
    port = free_port()
    workdir = base.workdir / f"{name}-{port}"
    workdir.mkdir(parents=True)
    config, cfg = base.write(port, FAST_LANE_KEYS if kind == "fastlane" else None)
    procs_started: list[subprocess.Popen[bytes]] = []
    endpoints = ["unix:/nonexistent/authz.sock"]
    if kind in ("noop", "noop-raw", "authgate", "fastlane"):
        procs_started, endpoints = start_workers(procs, kind, workers, config, workdir)
    doc = build_bootstrap(cfg, endpoints, admin_address=f"unix:{workdir / 'admin.sock'}")
    if kind == "envoy":
        doc = without_ext_authz(doc)
    elif kind == "jwt":
        assert jwks is not None
        doc = with_jwt_authn(doc, jwks, audience="app.localhost")
    envoy = EnvoyProcess(doc, workdir=workdir / "envoy", concurrency=ENVOY_CONCURRENCY)
    procs.envoys.append(envoy)  # so a failure anywhere still stops it (by its pid)
    envoy.start()
    envoy.wait_ready(timeout=30)
    return Stack(name, port, envoy, procs_started, cfg, workdir)


def stop_stack(procs: Processes, stack: Stack) -> None:
    procs.stop_envoy(stack.envoy)
    for w in stack.workers:
        procs.stop(w)
