"""Turn bench/run.py's results into a Markdown table, a PNG, and a profile summary."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------- helpers


def _num(value: float | None, fmt: str = "{:.0f}", missing: str = "–") -> str:
    return missing if value is None else fmt.format(value)


def _label(m: dict[str, Any]) -> str:
    return f"{m['config']}" + (f" ×{m['workers']}" if m["workers"] else "")


# ---------------------------------------------------------------------------- Markdown


def table(results: dict[str, Any]) -> str:
    rate = results["params"]["rate"]
    rows = [
        "| # | configuration | authz procs | req/s at saturation (min–max) | % of (1) | % of (2) "
        f"| p50 / p90 / p99 ms at {rate:,.0f} req/s | p99 added over (1), ms "
        "| authz CPU µs/Check: saturation / "
        f"{rate:,.0f} req/s | Envoy CPU µs/req at {rate:,.0f} req/s | authz RSS MB/proc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, m in results["medians"].items():
        _ = key
        rows.append(
            "| "
            + " | ".join(
                [
                    str(m["config"]),
                    m["title"],
                    str(m["workers"]) if m["workers"] else "–",
                    f"**{m['sat_rps']:,.0f}** ({m['sat_rps_min']:,.0f}–{m['sat_rps_max']:,.0f})",
                    _num(m["pct_of_1"], "{:.0f}%"),
                    _num(m["pct_of_2"], "{:.0f}%"),
                    f"{m['rate_p50_ms']:.2f} / {m['rate_p90_ms']:.2f} / {m['rate_p99_ms']:.2f}",
                    _num(m["added_p99_ms"], "{:+.2f}"),
                    (f"{_num(m['sat_authz_cpu_us'])} / {_num(m['rate_authz_cpu_us'])}"
                     if m["workers"] else "–"),
                    _num(m["rate_envoy_cpu_us"]),
                    _num(m["rss_mb_max"], "{:.1f}"),
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def targets_table(results: dict[str, Any]) -> str:
    rows = ["| target | measured | limit | no-op floor (2) | result |", "|---|---|---|---|---|"]
    for t in results.get("targets", []):
        sign = "≥" if t["at_least"] else "≤"
        fmt = "{:.2f}" if t["unit"] == "ms" else "{:.0f}"
        value = _num(t["value"], fmt)
        floor = t.get("floor")
        verdict = {True: "pass", False: "**FAIL**", None: "not measured"}[t["passed"]]
        if t["passed"] is False and floor is not None and floor > t["limit"]:
            verdict += " (the no-op floor is above the limit too)"
        floor_text = f"{_num(floor, fmt)} {t['unit']}" if floor is not None else "–"
        rows.append(f"| {t['target']} | {value} {t['unit']} | {sign} {t['limit']:g} {t['unit']} "
                    f"| {floor_text} | {verdict} |")
    return "\n".join(rows)


def _sessions_section(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return []
    return [
        f"### Memory after {s['distinct_sessions']:,} distinct sessions (1 worker)",
        "",
        f"Each of {s['distinct_sessions']:,} freshly minted, distinct session cookies was sent "
        f"once to the authenticated route ({s['answers']:,.0f} answers, "
        f"{s['not_200']:,.0f} not 200, in {s['elapsed_s']:.1f} s = {s['rps']:,.0f} req/s; every "
        "Check is a cache miss: decrypt the cookie, sign a new assertion, build a new response).",
        "",
        "| RSS before | RSS after | peak RSS (VmHWM) | authz CPU µs/Check (uncached) |",
        "|---|---|---|---|",
        f"| {s['rss_mb_before']:.1f} MB | **{s['rss_mb_after_max']:.1f} MB** | "
        f"{s['hwm_mb']:.1f} MB | {s['authz_cpu_us_per_check']:.0f} |",
        "",
    ]


def _split_section(profile: dict[str, Any] | None) -> list[str]:
    split = (profile or {}).get("handler_split")
    if not split:
        return []
    if "error" in split:
        return ["### authgate's own Python per Check", "", f"Not measured: {split['error']}", ""]
    lines = [
        "### authgate's own Python per Check (in-process, no gRPC, no Envoy)",
        "",
        "The CheckRequest bytes Envoy sends, from request bytes to response bytes. Fast path: the "
        "answer kept for this session and request shape (every repeat of a signed-in user's "
        "request); full path: context, session (cached), policy, assertion (cached), response "
        f"built and serialized. Hot: {split['iterations']:,} calls back to back; cold: "
        f"{split['cold_iterations']:,} calls with 8 MB touched in between, as when gRPC, the event "
        "loop and Envoy run between two Checks. The rest of the measured CPU per Check is "
        "grpc.aio's and the event loop's share.",
        "",
        "| request | fast path, hot | fast path, cold | full path, hot | full path, cold |",
        "|---|---|---|---|---|",
    ]
    for name, row in split.items():
        if isinstance(row, dict):
            lines.append(
                f"| {name} | **{row['fast_hot_us']:.1f}** | **{row['fast_cold_us']:.1f}** | "
                f"{row['full_hot_us']:.1f} | {row['full_cold_us']:.1f} |")
    return [*lines, ""]


def markdown(results: dict[str, Any], png_name: str) -> str:
    m, p = results["machine"], results["params"]
    out = [
        f"## authgate benchmark, {results['date']}" + (" (quick)" if p["quick"] else ""),
        "",
        f"{m['nproc']} × {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}; "
        f"Envoy {m['envoy']} (`--concurrency {m['envoy_concurrency']}`), Python {m['python']}, "
        f"grpcio {m['grpcio']}, protobuf {m['protobuf']}, uvloop {m['uvloop']}; "
        f"upstream {m['nginx'].replace('nginx version: ', '')} on a Unix socket; load {m['wrk']}"
        f". authgate at {m['authgate_commit'][:10]}"
        + (" with uncommitted changes in src/" if m["src_uncommitted_changes"] else "") + ".",
        "",
        f"Median of {p['reps']} runs per row; the configurations alternate (1, 2, 3, 4, 5, then "
        f"the multi-worker rows, then again). Saturation: `{p['saturation_load']}` for "
        f"{p['saturation_s']:g} s after a {p['warmup_s']:g} s warm-up. Latency: "
        f"{p['rate']:,.0f} req/s for {p['fixed_rate_s']:g} s ({p['fixed_rate_load']}). CPU from "
        "/proc (utime+stime of every authz process) divided by the requests answered; everything "
        "(wrk, Envoy, nginx, authz) shares the same "
        f"{m['cpus_usable']} cores.",
        "",
        table(results),
        "",
    ]
    errors = sum(v["errors"] for v in results["medians"].values())
    late = sum(v["rate_late"] for v in results["medians"].values())
    if errors:
        out += [f"**{errors:,} requests failed** (non-2xx, timeouts or socket errors): see the "
                "JSON before trusting the table.", ""]
    disturbed = [(k, v["other_cpu_cores_max"]) for k, v in results["medians"].items()
                 if v.get("other_cpu_cores_max", 0) > 0.25]
    if results.get("discarded_runs"):
        out += [f"{len(results['discarded_runs'])} runs were disturbed by other processes on the "
                "machine and measured again (the disturbed ones are in the JSON, "
                "`discarded_runs`).", ""]
    if disturbed:
        out += ["Rows measured while other processes still used CPU (max cores, per row): "
                + ", ".join(f"{k}: {c:.2f}" for k, c in disturbed) + ".", ""]
    if late:
        out += [f"{late:,} fixed-rate requests left more than 1 ms after their slot (the load "
                "generator could not keep the schedule: the latency of those rows is optimistic).",
                ""]
    out += ["### Targets (issue 4)", "", targets_table(results), ""]
    out += _sessions_section(results.get("sessions"))
    out += _split_section(results.get("profile"))
    profile = results.get("profile") or {}
    sys_lines = _syscall_lines(profile.get("syscalls"))
    if sys_lines:
        out += ["### System calls per Check in the authz process", "", *sys_lines, ""]
    if profile.get("summary_file"):
        out += [f"Where the authz worker's time goes (py-spy during config 3): "
                f"[{profile['summary_file']}]({profile['summary_file']}).", ""]
    out += [
        f"![throughput and latency]({png_name})",
        "",
        "Reproduce: `make bench` (installs wrk and nginx from Debian, then runs "
        "`.venv/bin/python bench/run.py`; about 10 minutes). `bench/run.py --quick` for a "
        "1-minute smoke run. See bench/README.md.",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------------- PNG


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = list(results["medians"].values())
    labels = [_label(m) for m in med]
    colors = {1: "#4c72b0", 2: "#8c8c8c", 3: "#dd8452", 4: "#55a868", 5: "#8172b3",
              6: "#b0b0b0", 7: "#c44e52"}
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 5.2))
    xs = range(len(med))

    rps = [m["sat_rps"] for m in med]
    err = [[m["sat_rps"] - m["sat_rps_min"] for m in med],
           [m["sat_rps_max"] - m["sat_rps"] for m in med]]
    ax1.bar(xs, rps, yerr=err, capsize=3, color=[colors[m["config"]] for m in med])
    for x, m in zip(xs, med, strict=True):
        ax1.text(x, m["sat_rps_max"], f"{m['sat_rps']:,.0f}\n", ha="center", va="bottom",
                 fontsize=8)
    ax1.set_ylim(0, max(m["sat_rps_max"] for m in med) * 1.12)
    ax1.set_xticks(list(xs), labels)
    ax1.set_ylabel("requests/s (median, bars: min–max)")
    ax1.set_title("Throughput at saturation")

    rate = results["params"]["rate"]
    width = 0.27
    for i, (key, name) in enumerate((("rate_p50_ms", "p50"), ("rate_p90_ms", "p90"),
                                     ("rate_p99_ms", "p99"))):
        ax2.bar([x + (i - 1) * width for x in xs], [m[key] for m in med], width, label=name)
    ax2.set_xticks(list(xs), labels)
    ax2.set_ylabel("ms")
    ax2.set_title(f"Latency at {rate:,.0f} req/s")
    ax2.legend()

    authz = [m for m in med if m["workers"]]
    axs = range(len(authz))
    ax3.bar([x - 0.2 for x in axs], [m["sat_authz_cpu_us"] or 0 for m in authz], 0.4,
            label="at saturation")
    ax3.bar([x + 0.2 for x in axs], [m["rate_authz_cpu_us"] or 0 for m in authz], 0.4,
            label=f"at {rate:,.0f} req/s")
    ax3.axhline(150, color="red", linestyle="--", linewidth=1, label="target (3): 150 µs")
    ax3.set_xticks(list(axs), [_label(m) for m in authz])
    ax3.set_ylabel("µs CPU per Check (all authz processes)")
    ax3.set_title("authz CPU per Check")
    ax3.legend()

    legend = "   ".join(f"{k}: {v}" for k, v in {
        1: "Envoy alone", 2: "no-op grpc.aio", 3: "authgate, authenticated",
        4: "authgate, public", 5: "Envoy jwt_authn", 6: "no-op, no protobuf",
        7: "authgate fast lane"}.items())
    fig.suptitle(f"authgate benchmark {results['date']}  —  {legend}   (×N: authz processes)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- profiles


_LINE = re.compile(r":\d+\)$")
_ADDR = re.compile(r"^0x[0-9a-f]+ \((?:.*/)?([^/]+?)(?:\.cpython[^)]*)?\.so[^)]*\)$")


def read_raw(path: Path) -> list[tuple[list[str], int]]:
    rows = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            rows.append((stack.split(";") if stack else [], int(count)))
    return rows


def compact_native_profile(path: Path) -> None:
    """Collapse unsymbolized addresses to `[module.so]`, merge repeats: 500 KB -> a few KB."""
    merged: Counter[str] = Counter()
    for frames, count in read_raw(path):
        out: list[str] = []
        for frame in frames:
            match = _ADDR.match(frame)
            name = f"[{match.group(1)}.so]" if match else frame
            if not out or out[-1] != name:
                out.append(name)
        merged[";".join(out)] += count
    path.write_text("".join(f"{stack} {n}\n" for stack, n in merged.most_common()))


def _func(frame: str) -> str:
    return _LINE.sub(")", frame)


def summarize_python(rows: list[tuple[list[str], int]], top: int = 25) -> list[str]:
    total = sum(n for _, n in rows) or 1
    buckets: Counter[str] = Counter()
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, n in rows:
        funcs = [_func(f) for f in frames]
        if not funcs:
            buckets["threads with no Python frame (grpc core's own threads)"] += n
        elif any(f.startswith("AuthorizationServicer.Check ") for f in funcs):
            buckets["inside AuthorizationServicer.Check (authgate's handler)"] += n
        elif funcs[-1].startswith(("Runner.run ", "run (uvloop")):
            buckets["main thread, no Python frame on top: uvloop + grpc.aio Cython/C core "
                    "(includes waiting in epoll: py-spy cannot tell)"] += n
        elif funcs[-1].startswith("Thread.run (threading"):
            buckets["grpc.aio poller thread (mostly blocked in epoll_wait: see native)"] += n
        else:
            buckets["other Python (asyncio, grpc.aio Python parts, gc)"] += n
        if funcs:
            self_t[funcs[-1]] += n
        for f in set(funcs):
            incl[f] += n
    lines = [f"samples: {total}", "", "where the samples fall:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in buckets.most_common()]
    lines += ["", f"top {top} by self time (the frame on top of the stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in self_t.most_common(top)]
    lines += ["", f"top {top} authgate functions by inclusive time:"]
    ours = [(f, n) for f, n in incl.most_common() if "authgate/" in f][:top]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in ours]
    return lines


WAITS = ("epoll_wait (libc", "epoll_pwait (libc")


def summarize_native(rows: list[tuple[list[str], int]], top: int = 20) -> list[str]:
    """Per thread and activity; samples parked in epoll are waiting, the rest is CPU."""
    total = sum(n for _, n in rows) or 1
    where: Counter[tuple[str, str]] = Counter()
    busy_leaf: Counter[str] = Counter()
    busy = 0
    for frames, n in rows:
        if not frames:
            continue
        loop_at = next((i for i, f in enumerate(frames) if f.startswith("run (uvloop")), None)
        if loop_at is not None:
            thread = "main thread (uvloop, grpc.aio, Check)"
        elif any(f.startswith("Thread.run (threading.py") for f in frames):
            thread = "grpc.aio poller thread"
        else:
            thread = "other thread"
        leaf = frames[-1]
        if leaf.startswith(WAITS):
            activity = "waiting in epoll (idle)"
        else:
            busy += n
            busy_leaf[leaf] += n
            if loop_at is not None and any("authgate/" in f for f in frames[loop_at:]):
                activity = "authgate Python code (and what it calls)"
            elif "gc_collect" in leaf:
                activity = "Python garbage collector"
            elif "(libc.so" in leaf:
                activity = f"syscall/libc: {leaf.split(' ')[0]}"
            else:
                activity = "other CPU (grpc core, Cython, interpreter, uvloop)"
        where[(thread, activity)] += n
    lines = [f"samples: {total} (not waiting: {busy})", "",
             "by thread and activity (% of all samples / % of the non-waiting ones):"]
    for (thread, activity), n in sorted(where.items(), key=lambda kv: (kv[0][0], -kv[1])):
        share = "" if activity.startswith("waiting") else f" / {100 * n / max(1, busy):5.1f}%"
        lines.append(f"  {100 * n / total:5.1f}%{share}  {thread}: {activity}")
    lines += ["", f"top {top} leaf frames of the non-waiting samples "
              "([x.so] = code without symbols):"]
    lines += [f"  {100 * n / max(1, busy):5.1f}%  {name}" for name, n in busy_leaf.most_common(top)]
    return lines


def _syscall_lines(syscalls: dict[str, Any] | None, top: int = 12) -> list[str]:
    if not syscalls:
        return []
    ok = {name: v for name, v in syscalls.items() if "error" not in v}
    if not ok:
        return [f"not measured: {next(iter(syscalls.values()))['error']}"]
    names = list(ok)
    lines = ["| syscall | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines.append("| **all, per Check** | " + " | ".join(
        f"**{ok[n]['syscalls_per_check']:.1f}**" for n in names) + " |")
    first = ok[names[0]]["per_check"]
    order = list(dict.fromkeys([*first, *(k for n in names for k in ok[n]["per_check"])]))
    for call in order[:top]:
        lines.append(f"| {call} | " + " | ".join(
            f"{ok[n]['per_check'].get(call, 0):.2f}" for n in names) + " |")
    rate = ok[names[0]]["rate"]
    lines.append("")
    lines.append(f"(at {rate:,.0f} req/s; " + ", ".join(
        f"{n}: {ok[n]['checks']:,} Checks traced" for n in names) + ")")
    return lines


def write_profile_summary(out_dir: Path, stem: str, profile: dict[str, Any]) -> str | None:
    sections = [
        "py-spy profiles of one authgate authz worker while Envoy + wrk saturate config 3 "
        "(authenticated route, 1 worker).",
        f"Raw collapsed stacks (flamegraph.pl / speedscope input) beside this file: "
        f"{stem}-profile-config3-*.raw.txt.",
        "",
    ]
    any_profile = False
    sys_lines = _syscall_lines(profile.get("syscalls"))
    if sys_lines:
        sections += ["== syscalls per Check (strace -c -f, exact counts) " + "=" * 26,
                     *sys_lines, ""]
        any_profile = True
    for mode, summarize in (("python", summarize_python), ("native", summarize_native)):
        info = profile.get(mode)
        if not info:
            continue
        sections += [f"== {mode} frames " + "=" * 60]
        if "error" in info:
            sections += [f"py-spy failed: {info['error']}", ""]
            continue
        rows = read_raw(out_dir / info["raw_file"])
        sections += [*summarize(rows), ""]
        any_profile = True
    if not any_profile:
        return None
    name = f"{stem}-profile-config3.txt"
    (out_dir / name).write_text("\n".join(sections) + "\n")
    return name
