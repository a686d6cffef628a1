"""In-process host name overrides for tests (a tiny ``/etc/hosts``).

``map_hosts({"jenkins.test": "127.0.0.1", "*.test": "127.0.0.1"})`` wraps
``socket.getaddrinfo`` for the whole process (every thread) while the context
is active, so that clients connect to a local server while still using the
real hostname for the ``Host`` header, TLS SNI and certificate verification.

Works for everything that resolves through ``socket.getaddrinfo`` at call
time: ``socket.create_connection`` (httpx/httpcore sync), asyncio's
``loop.getaddrinfo`` (httpx.AsyncClient via anyio, aiohttp's default
resolver).  It does NOT affect other processes (Envoy resolves on its own) nor
code calling ``socket.gethostbyname``.

Rules:

* keys are matched case-insensitively, a trailing dot is ignored;
* ``"*.suffix"`` matches any name ending in ``.suffix`` (one or more labels),
  exact keys win over wildcards and longer wildcards over shorter ones;
* a target may be an IP address or another host name (resolved normally);
* names not mapped go to the real resolver untouched;
* contexts nest (the innermost mapping wins) and may be used from several
  threads; the original ``socket.getaddrinfo`` is put back when the last
  active context exits.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, cast

import pytest

__all__ = ["lookup", "map_hosts", "map_hosts_fixture"]

_lock = threading.Lock()
_active: list[dict[str, str]] = []  # innermost last
_original: Callable[..., Any] | None = None  # the getaddrinfo we replaced


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _match(mapping: Mapping[str, str], host: str) -> str | None:
    if host in mapping:
        return mapping[host]
    best: tuple[int, str] | None = None
    for pattern, target in mapping.items():
        if pattern.startswith("*."):
            suffix = pattern[1:]  # ".test"
            if (
                host.endswith(suffix)
                and len(host) > len(suffix)
                and (best is None or len(suffix) > best[0])
            ):
                best = (len(suffix), target)
    return None if best is None else best[1]


def lookup(host: str | bytes | None) -> str | None:
    """Return the override currently in force for ``host``, or None."""
    if host is None:
        return None
    if isinstance(host, bytes | bytearray):
        try:
            host = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            return None
    name = _normalize(host)
    with _lock:
        layers = list(_active)
    for mapping in reversed(layers):
        target = _match(mapping, name)
        if target is not None:
            return target
    return None


def _patched_getaddrinfo(
    host: str | bytes | None,
    port: str | bytes | int | None,
    family: int = 0,
    type: int = 0,  # same name as socket.getaddrinfo's parameter
    proto: int = 0,
    flags: int = 0,
) -> list[Any]:
    original = _original
    if original is None:  # pragma: no cover - only if restored mid-call
        original = socket.getaddrinfo
    target = lookup(host)
    result: list[Any] = original(
        host if target is None else target, port, family, type, proto, flags
    )
    return result


@contextmanager
def map_hosts(mapping: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Override name resolution in this process while the context is active.

    Yields the normalized mapping in force for this layer.
    """
    global _original
    layer = {_normalize(k): v.strip() for k, v in mapping.items()}
    for key in layer:
        if "*" in key and not (key.startswith("*.") and "*" not in key[2:]):
            raise ValueError(f"unsupported wildcard pattern {key!r}: use '*.suffix'")
    with _lock:
        if not _active:
            _original = socket.getaddrinfo
            socket.getaddrinfo = cast(Any, _patched_getaddrinfo)
        _active.append(layer)
    try:
        yield layer
    finally:
        with _lock:
            # remove this exact layer (contexts may exit out of order across threads)
            for i in range(len(_active) - 1, -1, -1):
                if _active[i] is layer:
                    del _active[i]
                    break
            if not _active:
                if socket.getaddrinfo is _patched_getaddrinfo and _original is not None:
                    socket.getaddrinfo = _original
                _original = None


_Scope = Literal["session", "package", "module", "class", "function"]


def map_hosts_fixture(
    mapping: Mapping[str, str],
    *,
    scope: _Scope = "function",
    autouse: bool = False,
) -> Any:
    """Build a pytest fixture that keeps ``mapping`` active; it yields the mapping.

    Usage (module level of a test file or a conftest)::

        mapped_hosts = map_hosts_fixture({"*.test": "127.0.0.1"})

        def test_something(mapped_hosts: dict[str, str]) -> None: ...
    """
    frozen = dict(mapping)

    @pytest.fixture(scope=scope, autouse=autouse)
    def _map_hosts_fixture() -> Iterator[dict[str, str]]:
        with map_hosts(frozen) as layer:
            yield layer

    return _map_hosts_fixture
