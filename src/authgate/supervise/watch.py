"""Notice changes to the config file and the files it names (certificates, secrets)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from authgate.config.schema import Settings

Stamp = str | None  # the content's digest; None: missing or unreadable


def files_named_by(settings: Settings) -> list[Path]:
    """Every `*_file` value of the config, at any depth (routes' tls_custom_ca_file,
    downstream_mtls.ca_file...)."""

    def collect(node: Any) -> list[Path]:
        if isinstance(node, dict):
            return [
                found
                for key, value in node.items()
                for found in (
                    [Path(value)]
                    if key.endswith("_file") and isinstance(value, str) and value
                    else collect(value)
                )
            ]
        if isinstance(node, list):
            return [found for item in node for found in collect(item)]
        return []

    return collect(settings.model_dump())


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
        # Absolute, symlinks kept: a Kubernetes secret volume swaps a symlink on update.
        self.paths = list(dict.fromkeys(Path(os.path.abspath(path)) for path in paths))
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
