"""Notice changes to the config file and the files it names (certificates, secrets)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from authgate.config.schema import Settings

Stamp = str | None  # the content's digest; None: missing or unreadable


def files_named_by(settings: Settings) -> list[Path]:
    """Every `*_file` key of the config, and of its routes (tls_custom_ca_file...)."""
    found: list[Path] = []

    def collect(values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key.endswith("_file") and isinstance(value, str) and value:
                found.append(Path(value))

    dumped = settings.model_dump()
    collect(dumped)
    for route in dumped.get("routes") or []:
        if isinstance(route, dict):
            collect(route)
    return found


def _stamp(path: Path) -> Stamp:
    """By content: a certificate renewed in place within the same second counts as changed, a
    `touch` or a rewrite with the same bytes does not (no reload for nothing)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class FileWatch:
    """Polled (no dependency, works on every file system, bind mounts and Kubernetes secret
    volumes' symlink swaps included)."""

    def __init__(self, paths: Iterable[Path], seen: FileWatch | None = None) -> None:
        """`seen`: a watch whose stamps count as already seen (taken before a config was read,
        so a change made while it was being applied is still noticed)."""
        self.paths = list(dict.fromkeys(paths))
        earlier: dict[Path, Stamp] = seen._stamps if seen is not None else {}
        self._stamps: dict[Path, Stamp] = {
            p: earlier[p] if p in earlier else _stamp(p) for p in self.paths
        }

    def snapshot(self) -> FileWatch:
        """The same files, stamped now."""
        return FileWatch(self.paths)

    def changed(self) -> list[Path]:
        """The files that changed since the last call (or since creation)."""
        moved = []
        for path in self.paths:
            stamp = _stamp(path)
            if stamp != self._stamps[path]:
                self._stamps[path] = stamp
                moved.append(path)
        return moved
