"""Load with wrk (Debian's, LuaJIT inside): saturation, a fixed rate, one pass over many cookies.

wrk is closed-loop. For the fixed rate, a Lua `delay()` hands every request a slot on an absolute
per-thread schedule (clock_gettime through LuaJIT's FFI): the offered rate does not drift with
latency, and a request whose slot had already passed when its connection became free is counted
as `late` (its wait is not in the latency: with 16 connections at 1,000 req/s that would take
a ~16 ms stall, and `late` shows whether it happened). Latency is wrk's own histogram (µs),
from writing the request to reading the whole response.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

COMMON_LUA = r"""
local threads = {}
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

late = 0
max_late_ms = 0
got = 0
bad = 0

function done(summary, latency, requests)
  local n_late, n_got, n_bad, worst = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    n_late = n_late + (t:get("late") or 0)
    n_got = n_got + (t:get("got") or 0)
    n_bad = n_bad + (t:get("bad") or 0)
    local m = t:get("max_late_ms") or 0
    if m > worst then worst = m end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,"mean_us":%.1f,"max_us":%.1f,' ..
    '"late":%d,"max_late_ms":%.3f,"got":%d,"bad":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max, n_late, worst, n_got, n_bad))
end
"""

RATE_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval_ms = nil
local next_ms = nil

function init(args)
  interval_ms = tonumber(args[1])  -- this thread's share of the rate
end

function delay()
  local now = now_ms()
  if next_ms == nil then
    next_ms = now + (tid or 0) * interval_ms / 2  -- threads interleave their slots
  end
  next_ms = next_ms + interval_ms
  local d = next_ms - now
  if d < 0 then
    if -d > 1 then late = late + 1 end
    if -d > max_late_ms then max_late_ms = -d end
    return 0
  end
  return d
end
"""

SESSIONS_LUA = r"""
-- One pass over a file of cookie values: thread i takes lines i, i+n, ...; each is sent once
-- (a connection that frees up after its thread's share is exhausted repeats one, then stops).
local cookies = {}
local idx = 0

local marked = false

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  cookie_name = args[3]
  marker = args[4] .. tid
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then cookies[#cookies + 1] = line end
    i = i + 1
  end
end

function request()
  idx = idx + 1
  if idx > #cookies then idx = 1 end
  wrk.headers["Cookie"] = cookie_name .. "=" .. cookies[idx]
  return wrk.format()
end

function response(status, headers, body)
  got = got + 1
  if status ~= 200 then bad = bad + 1 end
  if got >= #cookies and not marked then
    marked = true
    local f = io.open(marker, "w")  -- tells bench/run.py this thread is through
    f:write(tostring(got))
    f:close()
    wrk.thread:stop()
  end
end
"""


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: `apt-get install wrk` (bench/install-deps.sh)")
    return path


def wrk_version() -> str:
    result = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).strip().splitlines()[0]


@dataclass
class Scripts:
    saturation: Path
    rate: Path
    sessions: Path

    @classmethod
    def write(cls, workdir: Path) -> Scripts:
        paths = cls(workdir / "saturation.lua", workdir / "rate.lua", workdir / "sessions.lua")
        paths.saturation.write_text(COMMON_LUA)
        paths.rate.write_text(COMMON_LUA + RATE_LUA)
        paths.sessions.write_text(COMMON_LUA + SESSIONS_LUA)
        return paths


def run_wrk(
    url: str,
    headers: dict[str, str],
    script: Path,
    *,
    threads: int,
    connections: int,
    duration_s: float,
    script_args: list[str] | None = None,
    timeout_s: float = 5.0,
    until_files: list[Path] | None = None,
) -> dict[str, float]:
    """Run wrk and parse the JSON line our `done()` prints. With `until_files`, stop wrk (SIGINT,
    which ends its run early) as soon as all those files exist; `elapsed_s` is then the time to
    that point (wrk's own duration would include its idle wait)."""
    cmd = [
        wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s", "-s", str(script),
    ]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed: float | None = None
    if until_files:
        while proc.poll() is None and not all(f.exists() for f in until_files):
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=duration_s + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data: dict[str, float] = json.loads(line.removeprefix("BENCH_JSON "))
            data["wrk_cpu_s"] = wrk_cpu
            data["elapsed_s"] = elapsed if elapsed is not None else data["duration_us"] / 1e6
            data["rps"] = data["requests"] / data["elapsed_s"]
            data["errors"] = sum(
                data[k] for k in ("connect_errors", "read_errors", "write_errors",
                                  "status_errors", "timeouts")
            )
            return data
    raise RuntimeError(f"wrk failed ({proc.returncode}):\n{stdout}\n{stderr}")


def saturation(url: str, headers: dict[str, str], scripts: Scripts, duration_s: float,
               threads: int = 2, connections: int = 64) -> dict[str, float]:
    return run_wrk(url, headers, scripts.saturation, threads=threads, connections=connections,
                   duration_s=duration_s)


def fixed_rate(url: str, headers: dict[str, str], scripts: Scripts, duration_s: float,
               rate: float, threads: int = 2, connections: int = 16) -> dict[str, float]:
    interval_ms = 1000.0 * threads / rate
    return run_wrk(url, headers, scripts.rate, threads=threads, connections=connections,
                   duration_s=duration_s, script_args=[f"{interval_ms:.6f}"])


def cookie_pass(url: str, headers: dict[str, str], scripts: Scripts, cookie_file: Path,
                cookie_name: str, threads: int = 2, connections: int = 64,
                max_duration_s: float = 600) -> dict[str, float]:
    marker = cookie_file.parent / f"{cookie_file.stem}.done-"
    markers = [Path(f"{marker}{i}") for i in range(threads)]
    for m in markers:
        m.unlink(missing_ok=True)
    return run_wrk(url, headers, scripts.sessions, threads=threads, connections=connections,
                   duration_s=max_duration_s, until_files=markers,
                   script_args=[str(cookie_file), str(threads), cookie_name, str(marker)])
