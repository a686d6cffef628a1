"""Load for the supervision tests: threads sending requests to a running gate, recording every
status and every connection error; and the run's state file (live pids)."""

from __future__ import annotations

import collections
import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.support.gate import SESSION_COOKIE, Gate


class Hammer:
    """`threads` clients, each on its own keep-alive connection, GET `path` on `host` in a loop."""

    def __init__(self, gate: Gate, host: str, path: str, cookie: str, threads: int = 4) -> None:
        self.gate, self.host, self.path, self.cookie = gate, host, path, cookie
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        with self.gate.client(follow=False, accept="application/json") as client:
            while not self._stop.is_set():
                try:
                    answer = client.get(
                        self.gate.url(self.host, self.path),
                        headers={
                            "host": self.gate.host(self.host),
                            "cookie": f"{SESSION_COOKIE}={self.cookie}",
                        },
                    )
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    self.statuses[answer.status_code] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self.statuses.values()) + len(self.errors)

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def run_state(runtime_dir: Path) -> dict[str, Any]:
    """`authgate run`'s state.json (written atomically)."""
    data: dict[str, Any] = json.loads((runtime_dir / "state.json").read_text())
    return data


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False

