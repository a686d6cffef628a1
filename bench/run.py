"""authgate load benchmark: Envoy alone, a no-op Python ext_authz, authgate, Envoy's jwt_authn.

    .venv/bin/python bench/run.py            # the full run behind `make bench` (~10 minutes)
    .venv/bin/python bench/run.py --quick    # 1 repetition of 3 s runs, for development

Everything listens on 127.0.0.1 or Unix sockets. See bench/README.md for what each configuration
is and how to read the table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import loadgen
import report
import stacks

RESULTS_DIR = stacks.BENCH_DIR / "results"
REPO = stacks.BENCH_DIR.parent


@dataclass(frozen=True)
class Variant:
    key: str  # "3w1"
    config: int  # 1..7
    workers: int  # authz processes (0: none)
    stack: str  # which stack serves it: "envoy", "noop", "noop-raw", "authgate", "jwt",
    # "fastlane"
    title: str

    @property
    def route(self) -> str:
        return "public" if self.config == 4 else "app"


CONFIG_TITLES = {
    1: "Envoy alone (no ext_authz)",
    2: "Envoy + no-op grpc.aio ext_authz",
    3: "Envoy + authgate, authenticated route",
    4: "Envoy + authgate, public route",
    5: "Envoy jwt_authn (ES256, native C++)",
    6: "Envoy + no-op grpc.aio ext_authz, no protobuf parsing",
    7: "Envoy + authgate fast lane, authenticated route, repeat requests",
}


def variants(worker_counts: list[int]) -> list[Variant]:
    """In the order they run within one repetition (1, 2, 3, 4, 5, then more workers)."""
    out = [
        Variant("1", 1, 0, "envoy", CONFIG_TITLES[1]),
        Variant("2w1", 2, 1, "noop", CONFIG_TITLES[2]),
        Variant("3w1", 3, 1, "authgate", CONFIG_TITLES[3]),
        Variant("4w1", 4, 1, "authgate", CONFIG_TITLES[4]),
        Variant("5", 5, 0, "jwt", CONFIG_TITLES[5]),
        Variant("6w1", 6, 1, "noop-raw", CONFIG_TITLES[6]),
        Variant("7w1", 7, 1, "fastlane", CONFIG_TITLES[7]),
    ]
    for n in worker_counts:
        if n == 1:
            continue
        out += [
            Variant(f"2w{n}", 2, n, "noop", CONFIG_TITLES[2]),
            Variant(f"3w{n}", 3, n, "authgate", CONFIG_TITLES[3]),
            Variant(f"4w{n}", 4, n, "authgate", CONFIG_TITLES[4]),
        ]
    return out


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- request shapes


@dataclass
class Client:
    """What the load generator sends to one stack."""

    url: str
    headers: dict[str, str]
    cookie: str | None


def client_for(stack: stacks.Stack, variant: Variant, bearer: str) -> Client:
    port = stack.port
    if variant.route == "public":
        # An anonymous visitor of a public route: no cookie, spoofed identity headers.
        headers = {"Host": f"public.localhost:{port}", **stacks.SPOOFED_HEADERS}
        return Client(f"http://127.0.0.1:{port}/", headers, None)
    host = f"app.localhost:{port}"
    cookie = stacks.mint_cookie(stack.cfg, stack.shared_dir, stacks.USER_CLAIMS, host)
    headers = {"Host": host, "Cookie": f"{stack.cfg.cookie_name}={cookie}",
               **stacks.SPOOFED_HEADERS}
    if variant.config == 5:
        headers["Authorization"] = f"Bearer {bearer}"
    if variant.config == 7:
        headers["Cookie"] += f"; {fast_lane_pass(stack, headers)}"
    return Client(f"http://127.0.0.1:{port}/", headers, cookie)


def fast_lane_pass(stack: stacks.Stack, headers: dict[str, str]) -> str:
    """`name=value` of the pass authz sets on a signed-in request (one Check)."""
    with httpx.Client(trust_env=False, timeout=10) as http:
        answer = http.get(f"http://127.0.0.1:{stack.port}/__bench/echo", headers=headers)
    for value in answer.headers.get_list("set-cookie"):
        if "_fl_" in value.partition("=")[0]:
            return value.partition(";")[0]
    raise RuntimeError(f"config 7: no fast-lane pass was set ({answer.status_code})")


# ---------------------------------------------------------------------------- sanity checks


def _echo(client: Client, drop: tuple[str, ...] = ()) -> httpx.Response:
    headers = {k: v for k, v in client.headers.items() if k not in drop}
    with httpx.Client(trust_env=False, timeout=10) as http:
        return http.get(client.url.rstrip("/") + "/__bench/echo", headers=headers)


def _fields(body: str) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in body.splitlines() if "=" in line)


def verify(stack: stacks.Stack, variant: Variant, client: Client) -> None:
    """Before measuring: the stack really does what the configuration claims."""
    def fail(why: str) -> None:
        raise RuntimeError(f"sanity check failed for config {variant.key}: {why}")

    answer = _echo(client)
    if answer.status_code != 200:
        fail(f"status {answer.status_code}: {answer.text[:300]}")
    seen = _fields(answer.text)
    checks_before = envoy_authz_checks(stack) if variant.config == 7 else 0
    if variant.config == 7:
        answer = _echo(client)
        seen = _fields(answer.text)
        if envoy_authz_checks(stack) != checks_before:
            fail("a request with a valid pass still went to authz")
        if "_fl_" in seen.get("cookie", ""):
            fail("the pass reached the upstream")
    if variant.config in (3, 7):
        try:
            claims = jwt.decode(
                seen.get("assertion", ""), stack.cfg.signing_key.public_key(),
                algorithms=["ES256"], audience="app.localhost", issuer=stack.cfg.assertion_issuer,
            )
        except jwt.PyJWTError as exc:
            fail(f"the upstream got no valid assertion ({exc}): {answer.text[:300]}")
        if claims.get("email") != "alice@example.com" or seen.get("email") != "alice@example.com":
            fail(f"identity not injected / spoofed header kept: {seen}")
        if stack.cfg.cookie_name + "=" in seen.get("cookie", ""):
            fail("the session cookie reached the upstream")
        denied = _echo(client, drop=("Cookie",))
        if denied.status_code != 401:
            fail(f"no cookie should be 401 for an API client, got {denied.status_code}")
    elif variant.config == 4:
        if seen.get("assertion") or seen.get("email") or seen.get("groups"):
            fail(f"spoofed identity headers reached the upstream: {seen}")
    elif variant.config == 5:
        denied = _echo(client, drop=("Authorization",))
        if denied.status_code != 401:
            fail(f"jwt_authn let a request without a token through ({denied.status_code})")
    elif seen.get("email") != stacks.SPOOFED_HEADERS["X-Pomerium-Claim-Email"]:
        fail(f"expected the request unchanged (no authz), upstream saw {seen}")


# ---------------------------------------------------------------------------- measuring


@dataclass
class Snapshot:
    authz: float
    envoy: float
    upstream: float
    busy: float
    total: float
    process: float
    wall: float

    @classmethod
    def take(cls, stack: stacks.Stack, upstream: stacks.Upstream) -> Snapshot:
        busy, total, process = stacks.system_cpu()
        return cls(
            authz=sum(stacks.cpu_seconds(p) for p in stack.worker_pids),
            envoy=stacks.cpu_seconds(stack.envoy_pid),
            upstream=sum(stacks.cpu_seconds(p) for p in upstream.pids()),
            busy=busy,
            total=total,
            process=process,
            wall=time.monotonic(),
        )


def with_cpu(result: dict[str, Any], before: Snapshot, after: Snapshot,
             has_authz: bool) -> dict[str, Any]:
    n = max(1, int(result["requests"]))
    result["authz_cpu_us_per_req"] = (after.authz - before.authz) / n * 1e6 if has_authz else None
    result["envoy_cpu_us_per_req"] = (after.envoy - before.envoy) / n * 1e6
    result["upstream_cpu_us_per_req"] = (after.upstream - before.upstream) / n * 1e6
    result["authz_cpu_cores"] = (
        (after.authz - before.authz) / result["elapsed_s"] if has_authz else None
    )
    total = after.total - before.total
    result["machine_busy_pct"] = 100.0 * (after.busy - before.busy) / total if total else None
    # CPU that none of the processes under test (nor wrk) spent: someone else on the machine.
    ours = ((after.authz - before.authz) + (after.envoy - before.envoy)
            + (after.upstream - before.upstream) + result.get("wrk_cpu_s", 0.0))
    machine = (after.process - before.process) / stacks.CLK_TCK
    result["other_cpu_cores"] = (machine - ours) / max(1e-3, after.wall - before.wall)
    return result


def measure(stack: stacks.Stack, upstream: stacks.Upstream, variant: Variant, client: Client,
            scripts: loadgen.Scripts, args: argparse.Namespace) -> dict[str, Any]:
    has_authz = bool(stack.workers)
    loadgen.saturation(client.url, client.headers, scripts, args.warmup)  # warm-up, discarded
    stack.check_alive()
    before = Snapshot.take(stack, upstream)
    sat = loadgen.saturation(client.url, client.headers, scripts, args.duration,
                             connections=args.connections)
    after = Snapshot.take(stack, upstream)
    with_cpu(sat, before, after, has_authz)
    time.sleep(0.5)
    before = Snapshot.take(stack, upstream)
    fixed = loadgen.fixed_rate(client.url, client.headers, scripts, args.rate_duration, args.rate)
    after = Snapshot.take(stack, upstream)
    with_cpu(fixed, before, after, has_authz)
    stack.check_alive()
    memory = [stacks.rss_kb(p) for p in stack.worker_pids]
    return {
        "saturation": sat,
        "fixed_rate": fixed,
        "rss_kb": [m[0] for m in memory],
        "hwm_kb": [m[1] for m in memory],
    }


@dataclass
class Quiet:
    """Other work on the machine (a test suite, a build) skews a run: wait a little for quiet
    before measuring, and measure again (a bounded number of times) when a run was disturbed."""

    threshold_cores: float
    wait_budget_s: float
    remeasure_left: int
    disturbed_cores: float

    def wait(self) -> float:
        load = stacks.machine_process_cores(0.5)
        waited = 0.0
        while load > self.threshold_cores and self.wait_budget_s > 0:
            if waited == 0:
                say(f"  the machine is busy ({load:.2f} cores used by other processes); waiting")
            time.sleep(1.0)
            self.wait_budget_s -= 1.5
            waited += 1.5
            load = stacks.machine_process_cores(0.5)
        return load


def run_repetitions(procs: stacks.Processes, base: stacks.BenchConfig, upstream: stacks.Upstream,
                    scripts: loadgen.Scripts, args: argparse.Namespace,
                    jwt_key: Any, jwks: dict[str, Any],
                    discarded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    quiet = Quiet(args.quiet_cores, args.quiet_wait, args.remeasure, args.disturbed_cores)
    todo = variants(args.workers)
    bearer = stacks.mint_bearer(jwt_key, "app.localhost")
    order = 0
    for rep in range(args.reps):
        index = 0
        while index < len(todo):
            # Variants served by the same stack run back to back on one fresh stack (3 then 4).
            group = [todo[index]]
            while (index + len(group) < len(todo)
                   and todo[index + len(group)].stack == group[0].stack
                   and todo[index + len(group)].workers == group[0].workers):
                group.append(todo[index + len(group)])
            index += len(group)
            first = group[0]
            stack = stacks.start_stack(procs, base, f"{first.stack}-w{first.workers}-r{rep}",
                                       first.stack, max(1, first.workers), jwks=jwks)
            try:
                for variant in group:
                    client = client_for(stack, variant, bearer)
                    verify(stack, variant, client)
                    for attempt in range(3):
                        idle_load = quiet.wait()
                        say(f"rep {rep + 1}/{args.reps}: config {variant.key} ({variant.title})")
                        result = measure(stack, upstream, variant, client, scripts, args)
                        result["other_cpu_cores_before"] = idle_load
                        other = max(result["saturation"]["other_cpu_cores"],
                                    result["fixed_rate"]["other_cpu_cores"])
                        if other <= quiet.disturbed_cores or quiet.remeasure_left <= 0 \
                                or attempt == 2:
                            break
                        quiet.remeasure_left -= 1
                        say(f"  disturbed: other processes used {other:.2f} cores; measuring again")
                        discarded.append({"variant": variant.key, "rep": rep, **result,
                                          "reason": f"other processes used {other:.2f} cores"})
                    sat, fixed = result["saturation"], result["fixed_rate"]
                    say(f"  {sat['rps']:.0f} req/s at saturation; at {args.rate:g} req/s "
                        f"p50 {fixed['p50_us'] / 1000:.2f} ms, p99 {fixed['p99_us'] / 1000:.2f} ms"
                        + (f"; authz {fixed['authz_cpu_us_per_req']:.0f} µs CPU/Check"
                           if fixed["authz_cpu_us_per_req"] is not None else "")
                        + (f"; ERRORS {sat['errors'] + fixed['errors']:.0f}"
                           if sat["errors"] or fixed["errors"] else ""))
                    runs.append({"variant": variant.key, "rep": rep, "order": order, **result})
                    order += 1
            finally:
                stacks.stop_stack(procs, stack)
    return runs


# ---------------------------------------------------------------------------- medians, targets


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def medians(runs: list[dict[str, Any]], todo: list[Variant]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for variant in todo:
        mine = [r for r in runs if r["variant"] == variant.key]
        if not mine:
            continue

        def med(phase: str, key: str, scale: float = 1.0, rows: list[dict[str, Any]] = mine,
                ) -> float | None:
            value = _median([r[phase][key] for r in rows])
            return None if value is None else value * scale

        sat_rps = [r["saturation"]["rps"] for r in mine]
        out[variant.key] = {
            "config": variant.config,
            "workers": variant.workers,
            "title": variant.title,
            "runs": len(mine),
            "sat_rps": med("saturation", "rps"),
            "sat_rps_min": min(sat_rps),
            "sat_rps_max": max(sat_rps),
            "sat_p50_ms": med("saturation", "p50_us", 1e-3),
            "sat_p99_ms": med("saturation", "p99_us", 1e-3),
            "sat_authz_cpu_us": med("saturation", "authz_cpu_us_per_req"),
            "sat_authz_cores": med("saturation", "authz_cpu_cores"),
            "sat_envoy_cpu_us": med("saturation", "envoy_cpu_us_per_req"),
            "sat_machine_busy_pct": med("saturation", "machine_busy_pct"),
            "rate_rps": med("fixed_rate", "rps"),
            "rate_p50_ms": med("fixed_rate", "p50_us", 1e-3),
            "rate_p90_ms": med("fixed_rate", "p90_us", 1e-3),
            "rate_p99_ms": med("fixed_rate", "p99_us", 1e-3),
            "rate_p999_ms": med("fixed_rate", "p999_us", 1e-3),
            "rate_late": sum(r["fixed_rate"]["late"] for r in mine),
            "rate_authz_cpu_us": med("fixed_rate", "authz_cpu_us_per_req"),
            "rate_envoy_cpu_us": med("fixed_rate", "envoy_cpu_us_per_req"),
            "errors": sum(r["saturation"]["errors"] + r["fixed_rate"]["errors"] for r in mine),
            "other_cpu_cores_max": max(max(r["saturation"]["other_cpu_cores"],
                                           r["fixed_rate"]["other_cpu_cores"]) for r in mine),
            "rss_mb_max": (max(max(r["rss_kb"]) for r in mine) / 1024) if mine[0]["rss_kb"]
            else None,
        }
    base = out.get("1")
    for key, m in out.items():
        m["pct_of_1"] = 100 * m["sat_rps"] / base["sat_rps"] if base else None
        floor = out.get(f"2w{m['workers']}")
        m["pct_of_2"] = (100 * m["sat_rps"] / floor["sat_rps"]
                         if floor and m["config"] in (3, 4, 6, 7) else None)
        m["added_p99_ms"] = (m["rate_p99_ms"] - base["rate_p99_ms"]
                             if base and key != "1" else None)
    return out


def targets(med: dict[str, dict[str, Any]], sessions: dict[str, Any] | None,
            rate: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, unit: str, higher_is_better: bool,
            floor: float | None = None) -> None:
        passed = None if value is None else (value >= limit if higher_is_better
                                             else value <= limit)
        # `floor`: the same number for the no-op server (2), which no Python server can beat.
        out.append({"target": name, "value": value, "limit": limit, "unit": unit,
                    "passed": passed, "at_least": higher_is_better, "floor": floor})

    three, two = med.get("3w1"), med.get("2w1")
    add("(3) throughput / (2) throughput, 1 worker",
        three["pct_of_2"] if three else None, 90, "%", True)
    add(f"authz CPU per Check, authenticated route, at {rate:g} req/s",
        three["rate_authz_cpu_us"] if three else None, 150, "µs", False,
        two["rate_authz_cpu_us"] if two else None)
    add("authz CPU per Check, authenticated route, at saturation",
        three["sat_authz_cpu_us"] if three else None, 150, "µs", False,
        two["sat_authz_cpu_us"] if two else None)
    add(f"p99 added over (1) at {rate:g} req/s, authenticated route",
        three["added_p99_ms"] if three else None, 1.0, "ms", False,
        two["added_p99_ms"] if two else None)
    lane, five = med.get("7w1"), med.get("5")
    add("(7) fast lane throughput / (2) no-op floor, 1 worker",
        lane["pct_of_2"] if lane else None, 200, "%", True)
    add("(7) fast lane throughput / (5) Envoy jwt_authn",
        100 * lane["sat_rps"] / five["sat_rps"] if lane and five else None, 80, "%", True)
    add("authz CPU per request, fast lane, at saturation",
        lane["sat_authz_cpu_us"] if lane else None, 5, "µs", False)
    if sessions:
        add(f"authz RSS per worker after {sessions['distinct_sessions']:,} distinct sessions",
            sessions["rss_mb_after_max"], 150, "MB", False)
    return out


# ---------------------------------------------------------------------------- 100k sessions


def sessions_phase(procs: stacks.Processes, base: stacks.BenchConfig, upstream: stacks.Upstream,
                   scripts: loadgen.Scripts, count: int) -> dict[str, Any]:
    stack = stacks.start_stack(procs, base, "sessions", "authgate", 1)
    try:
        host = f"app.localhost:{stack.port}"
        say(f"sessions: starting {count:,} distinct sessions in the worker's session store")
        cookie_file = stack.workdir / "cookies.txt"
        many_claims = [{"sub": f"user{i}", "email": f"user{i}@example.com",
                        "name": f"User {i}", "groups": ["devs", f"team{i % 97}"]}
                       for i in range(count)]
        cookies = stacks.mint_cookies(stack.cfg, stack.shared_dir, many_claims, host)
        cookie_file.write_text("".join(cookie + "\n" for cookie in cookies))
        client = Client(f"http://127.0.0.1:{stack.port}/",
                        {"Host": host, **stacks.SPOOFED_HEADERS}, None)
        pid = stack.worker_pids[0]
        rss_before, _ = stacks.rss_kb(pid)
        say(f"sessions: sending each once (RSS before: {rss_before / 1024:.1f} MB)")
        before = Snapshot.take(stack, upstream)
        result = loadgen.cookie_pass(client.url, client.headers, scripts, cookie_file,
                                     stack.cfg.cookie_name)
        after = Snapshot.take(stack, upstream)
        with_cpu(result, before, after, True)
        stack.check_alive()
        rss_after, hwm = stacks.rss_kb(pid)
        say(f"sessions: {result['got']:.0f} answers ({result['bad']:.0f} not 200) in "
            f"{result['elapsed_s']:.1f} s; RSS after {rss_after / 1024:.1f} MB "
            f"(peak {hwm / 1024:.1f} MB)")
        return {
            "distinct_sessions": count,
            "workers": 1,
            "answers": result["got"],
            "not_200": result["bad"],
            "elapsed_s": result["elapsed_s"],
            "rps": result["got"] / result["elapsed_s"],
            "authz_cpu_us_per_check": (after.authz - before.authz) / max(1, result["got"]) * 1e6,
            "envoy_cpu_us_per_req": (after.envoy - before.envoy) / max(1, result["got"]) * 1e6,
            "rss_mb_before": rss_before / 1024,
            "rss_mb_after_max": rss_after / 1024,
            "hwm_mb": hwm / 1024,
            "wrk": result,
        }
    finally:
        stacks.stop_stack(procs, stack)


# ---------------------------------------------------------------------------- in-process split


def handler_split(stack: stacks.Stack, iterations: int = 20000,
                  cold_iterations: int = 2000) -> dict[str, Any]:
    """µs per call of authgate's own Python for one Check, without gRPC or Envoy, from the
    request bytes to the response bytes: the fast path (a kept answer) and the full path
    (context, session, policy, assertion, response built and serialized; the session and
    assertion caches warm). "hot": back to back, everything in the CPU caches; "cold": 8 MB
    touched between calls, as when grpc, the event loop and Envoy run in between (what a Check
    inside the server really costs)."""
    try:
        from authgate._pb.envoy.service.auth.v3 import external_auth_pb2
        from authgate.authz.response import to_check_response
        from authgate.authz.server import AuthorizationServicer
        from authgate.authz.service import decide, request_context
        from authgate.authz.state import AuthzState
        from authgate.logs import configure_logging
    except ImportError as exc:  # the authz internals moved: report, do not fail the run
        return {"error": f"{type(exc).__name__}: {exc}"}

    def build(host: str, route_id: str, cookie: str | None) -> bytes:
        req = external_auth_pb2.CheckRequest()
        http = req.attributes.request.http
        http.method, http.path, http.host, http.scheme, http.protocol = (
            "GET", "/", host, "http", "HTTP/1.1")
        # As the generated Envoy sends it: raw header values (encode_raw_headers), pseudo-headers
        # and Envoy's own request id included.
        headers = {
            ":authority": host, ":path": "/", ":method": "GET", ":scheme": "https",
            "user-agent": "wrk", "x-request-id": "0f6c1c8e-6f6b-4f0e-9d1e-5f0b7d0c2a11",
            **{k.lower(): v for k, v in stacks.SPOOFED_HEADERS.items()},
        }
        if cookie:
            headers["cookie"] = f"{stack.cfg.cookie_name}={cookie}"
        for name, value in headers.items():
            http.header_map.headers.add(key=name, raw_value=value.encode())
        req.attributes.context_extensions.update({"route_id": route_id, "kind": "route"})
        req.attributes.source.address.socket_address.address = "127.0.0.1"
        return req.SerializeToString()

    host = f"app.localhost:{stack.port}"
    cookie = stacks.mint_cookie(stack.cfg, stack.shared_dir, stacks.USER_CLAIMS, host)
    cases = {
        "authenticated (config 3)": build(host, "app", cookie),
        "public (config 4)": build(f"public.localhost:{stack.port}", "public", None),
    }
    try:
        # The stack's session store (where the cookie's session was started).
        state = AuthzState.build(stack.cfg, shared_dir=stack.shared_dir)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    servicer = AuthorizationServicer(state)
    # Each Check writes its decision line, as in a worker whose stderr goes to a file or pipe.
    decision_lines = tempfile.TemporaryFile("wb")  # noqa: SIM115 (kept for the whole split)
    configure_logging(stack.cfg.settings.log_level, stream=decision_lines)
    junk = bytearray(8 << 20)

    def thrash() -> None:
        for i in range(0, len(junk), 64):
            junk[i] ^= 1

    async def fast(raw: bytes) -> bytes:
        return await servicer.Check(external_auth_pb2.CheckRequest.FromString(raw), None)  # type: ignore[arg-type]

    async def full(raw: bytes) -> bytes:
        request = external_auth_pb2.CheckRequest.FromString(raw)
        decision = await decide(state, request_context(request), time.perf_counter())
        return to_check_response(decision).SerializeToString()  # type: ignore[no-any-return]

    async def timed(step: Callable[[bytes], Any], raw: bytes, n: int, cold: bool) -> float:
        total = 0
        for _ in range(n):
            if cold:
                thrash()
            if not state.sessions.fresh():
                # What a worker's feed task does every 0.2 s between Checks: while the feed is
                # fresh, kept answers and cached sessions may be used.
                await state.sessions.poll()
            t0 = time.perf_counter_ns()
            await step(raw)
            total += time.perf_counter_ns() - t0
        return total / n / 1000.0

    async def measure(raw: bytes) -> dict[str, float]:
        await timed(fast, raw, 200, False)  # warm the caches (session, assertion, answer)
        await timed(full, raw, 200, False)
        return {
            "fast_hot_us": await timed(fast, raw, iterations, False),
            "fast_cold_us": await timed(fast, raw, cold_iterations, True),
            "full_hot_us": await timed(full, raw, iterations, False),
            "full_cold_us": await timed(full, raw, cold_iterations, True),
        }

    out: dict[str, Any] = {"iterations": iterations, "cold_iterations": cold_iterations}

    async def measure_all() -> None:
        # One event loop for every case: the session store's connections belong to it.
        for name, raw in cases.items():
            out[name] = await measure(raw)

    asyncio.run(measure_all())
    return out


# ---------------------------------------------------------------------------- profile


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def envoy_authz_checks(stack: stacks.Stack) -> int:
    """Checks Envoy has sent to the authz cluster so far (admin stats)."""
    text = stack.envoy.admin_get("/stats?filter=^cluster.authgate_authz.upstream_rq_total$").text
    return int(text.rpartition(":")[2].strip() or 0)


def syscall_profile(stack: stacks.Stack, client: Client, scripts: loadgen.Scripts,
                    rate: float, seconds: float = 3.0) -> dict[str, Any]:
    """strace -c -f on the authz worker(s) for a few seconds at the fixed rate: which syscalls a
    Check costs (counts are exact; strace's timings are inflated by strace itself)."""
    strace = shutil.which("strace")
    if strace is None:
        return {"error": "strace is not installed"}
    wrk = subprocess.Popen(
        [loadgen.wrk_binary(), "-t2", "-c16", f"-d{round(seconds + 3)}s", "-s",
         str(scripts.rate), *[a for k, v in client.headers.items() for a in ("-H", f"{k}: {v}")],
         client.url, "--", f"{2000.0 / rate:.6f}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out_file = stack.workdir / "strace.txt"
    try:
        time.sleep(1.0)
        first = envoy_authz_checks(stack)
        tracer = subprocess.Popen(
            [strace, "-c", "-f", "-o", str(out_file),
             *[a for pid in stack.worker_pids for a in ("-p", str(pid))]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(seconds)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        checks = envoy_authz_checks(stack) - first
    finally:
        wrk.wait(timeout=seconds + 30)
    calls: dict[str, int] = {}
    for line in out_file.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    total = sum(calls.values())
    return {
        "rate": rate,
        "checks": checks,
        "syscalls_per_check": total / max(1, checks),
        "per_check": {name: n / max(1, checks)
                      for name, n in sorted(calls.items(), key=lambda kv: -kv[1])},
    }


def profile_phase(procs: stacks.Processes, base: stacks.BenchConfig, scripts: loadgen.Scripts,
                  seconds: float, out_prefix: Path, native: bool, rate: float,
                  ) -> dict[str, Any]:
    spy = py_spy()
    if spy is None:
        return {"error": "py-spy is not installed (pip install -e '.[bench]')"}
    stack = stacks.start_stack(procs, base, "profile", "authgate", 1)
    out: dict[str, Any] = {"seconds": seconds}
    try:
        variant = Variant("3w1", 3, 1, "authgate", CONFIG_TITLES[3])
        client = client_for(stack, variant, bearer="")
        verify(stack, variant, client)
        loadgen.saturation(client.url, client.headers, scripts, 2)
        out["handler_split"] = handler_split(stack)
        say(f"profile: syscalls per Check (strace -c) at {rate:g} req/s, authgate and no-op")
        out["syscalls"] = {"authgate (config 3)": syscall_profile(stack, client, scripts, rate)}
        modes = [("python", [])] + ([("native", ["--native"])] if native else [])
        for mode, extra in modes:
            raw = out_prefix.parent / f"{out_prefix.name}-{mode}.raw.txt"
            wrk = subprocess.Popen(
                [loadgen.wrk_binary(), "-t2", "-c64", f"-d{round(seconds + 3)}s",
                 *[a for k, v in client.headers.items() for a in ("-H", f"{k}: {v}")],
                 client.url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1)
                say(f"profile: py-spy ({mode}) on authz worker {stack.worker_pids[0]} "
                    f"for {seconds:g} s during config 3 at saturation")
                result = subprocess.run(
                    [spy, "record", "-p", str(stack.worker_pids[0]), "-d", str(round(seconds)),
                     "-r", "250", "-f", "raw", "-o", str(raw), *extra],
                    capture_output=True, text=True, check=False, timeout=seconds + 60)
            finally:
                wrk.wait(timeout=seconds + 30)
            if result.returncode != 0 or not raw.exists():
                out[mode] = {"error": (result.stderr or result.stdout)[-500:]}
                continue
            if mode == "native":
                report.compact_native_profile(raw)
            out[mode] = {"raw_file": raw.name}
    finally:
        stacks.stop_stack(procs, stack)
    noop = stacks.start_stack(procs, base, "profile-noop", "noop", 1)
    try:
        variant = Variant("2w1", 2, 1, "noop", CONFIG_TITLES[2])
        client = client_for(noop, variant, bearer="")
        loadgen.saturation(client.url, client.headers, scripts, 1)
        out["syscalls"]["no-op (config 2)"] = syscall_profile(noop, client, scripts, rate)
    finally:
        stacks.stop_stack(procs, noop)
    return out


# ---------------------------------------------------------------------------- machine info


def _first_line(cmd: list[str]) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0] if text else ""


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    from google.protobuf.internal import api_implementation

    from authgate.envoy.process import envoy_binary

    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.partition(":")[2].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": version("grpcio"),
        "protobuf": f"{version('protobuf')} ({api_implementation.Type()})",
        "uvloop": version("uvloop"),
        "envoy": _first_line([envoy_binary(), "--version"]).split("version:")[-1].strip(),
        "envoy_concurrency": stacks.ENVOY_CONCURRENCY,
        "nginx": _first_line([stacks.nginx_binary() or "nginx", "-v"]),
        "wrk": loadgen.wrk_version(),
        "authgate_commit": commit,
        "src_uncommitted_changes": bool(dirty),
    }


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition, 3 s runs, 10,000 sessions: for development")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every config (3)")
    parser.add_argument("--duration", type=float, default=8,
                        help="seconds of each saturation run (8)")
    parser.add_argument("--rate-duration", type=float, default=8,
                        help="seconds of each fixed-rate run (8)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up (2)")
    parser.add_argument("--rate", type=float, default=1000,
                        help="the moderate fixed rate for latency, req/s (1000)")
    parser.add_argument("--connections", type=int, default=64,
                        help="wrk connections at saturation (64, over 2 threads)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="authz worker counts for configs 2-4 (1 2)")
    parser.add_argument("--sessions", type=int, default=100_000,
                        help="distinct sessions for the memory phase (100000; 0 skips it)")
    parser.add_argument("--profile-seconds", type=float, default=10,
                        help="py-spy duration during config 3 (10; 0 skips profiling)")
    parser.add_argument("--no-native-profile", action="store_true",
                        help="skip the second, --native py-spy profile")
    parser.add_argument("--quiet-cores", type=float, default=0.2,
                        help="before a run, wait while other processes use more cores than "
                        "this (0.2)")
    parser.add_argument("--quiet-wait", type=float, default=90,
                        help="total seconds the whole benchmark may wait for quiet (90)")
    parser.add_argument("--disturbed-cores", type=float, default=0.25,
                        help="a run during which other processes used more cores than this is "
                        "measured again (0.25)")
    parser.add_argument("--remeasure", type=int, default=6,
                        help="at most this many disturbed runs are measured again (6)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the temp dir (configs, logs) for inspection")
    parser.add_argument("--store", choices=("embedded", "redis"), default="embedded",
                        help="the session store authgate uses (redis: Debian's redis-server, "
                        "started here on a free loopback port)")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.rate_duration, args.warmup = 1, 3, 3, 1
        args.sessions = min(args.sessions, 10_000)
        args.profile_seconds = min(args.profile_seconds, 3)
    if 1 not in args.workers:
        args.workers = [1, *args.workers]
    return args


def preflight() -> None:
    missing = [tool for tool, found in (("wrk", shutil.which("wrk")),
                                        ("nginx", stacks.nginx_binary())) if found is None]
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} not installed; run bench/install-deps.sh "
                         "(or `make bench`, which does)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    started = time.monotonic()
    today = dt.date.today().isoformat()
    stem = today + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="agbench-", dir="/tmp"))  # short Unix socket paths
    procs = stacks.Processes()
    results: dict[str, Any] = {
        "schema": 1,
        "date": today,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": {
            "reps": args.reps, "saturation_s": args.duration, "fixed_rate_s": args.rate_duration,
            "warmup_s": args.warmup, "rate": args.rate,
            "saturation_load": f"wrk -t2 -c{args.connections}",
            "fixed_rate_load": "wrk -t2 -c16 + Lua schedule",
            "workers": args.workers, "sessions": args.sessions, "quick": args.quick,
            "session_store": args.store,
        },
    }
    stop: Callable[[], None] = procs.stop_all
    try:
        upstream = stacks.Upstream.start(procs, workdir)
        base = stacks.BenchConfig(workdir, upstream.sock)
        if args.store == "redis":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.support.redis_server import RedisServer

            redis = RedisServer()
            redis.start()
            stop_before_redis = stop

            def stop_with_redis() -> None:
                stop_before_redis()
                redis.stop()

            stop = stop_with_redis
            base.session_store = {
                "databroker_storage_type": "redis",
                "databroker_storage_connection_string": redis.url,
            }
        scripts = loadgen.Scripts.write(workdir)
        jwt_key, jwks = stacks.es256_key_pair()
        todo = variants(args.workers)
        say(f"{len(todo)} configurations x {args.reps} repetitions; work dir {workdir}")
        discarded: list[dict[str, Any]] = []
        runs = run_repetitions(procs, base, upstream, scripts, args, jwt_key, jwks, discarded)
        results["variants"] = [v.__dict__ for v in todo]
        results["runs"] = runs
        results["discarded_runs"] = discarded
        results["medians"] = medians(runs, todo)
        sessions = (sessions_phase(procs, base, upstream, scripts, args.sessions)
                    if args.sessions else None)
        results["sessions"] = sessions
        if args.profile_seconds:
            results["profile"] = profile_phase(
                procs, base, scripts, args.profile_seconds, args.out / f"{stem}-profile-config3",
                native=not args.no_native_profile, rate=args.rate)
            results["profile"]["summary_file"] = report.write_profile_summary(
                args.out, stem, results["profile"])
        results["targets"] = targets(results["medians"], sessions, args.rate)
    finally:
        stop()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["duration_s"] = round(time.monotonic() - started, 1)
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    png_path = args.out / f"{stem}.png"
    report.plot(results, png_path)
    markdown = report.markdown(results, png_name=png_path.name)
    (args.out / f"{stem}.md").write_text(markdown)
    if not args.quick:
        (args.out / "latest.md").write_text(markdown)
    print(markdown)
    say(f"done in {results['duration_s']:.0f} s: {json_path}, {png_path}, "
        f"{args.out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
