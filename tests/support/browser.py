"""Debian's Chromium driven by Playwright for the browser tests (never a downloaded build)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Map the test hostnames inside the browser, not in /etc/hosts.
    "--host-resolver-rules=MAP *.test 127.0.0.1",
]


@contextlib.contextmanager
def chromium_page() -> Iterator[object]:
    """A fresh page in a fresh browser context (its own cookies), closed afterwards."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run `make system-deps`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(ignore_https_errors=True)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()
