"""One `authgate run` per runtime directory: a second one would delete the first one's sockets
and overwrite its Envoy files."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_NAME = "run.lock"


class DirectoryInUse(RuntimeError):
    pass


class DirectoryLock:
    """An exclusive flock held while the run lives (the kernel drops it when the process dies,
    so a killed run leaves no stale lock)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise DirectoryInUse(
                f"{self.path.parent} is the runtime directory of another `authgate run` "
                f"(pid {holder}): give this one its own --runtime-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None
