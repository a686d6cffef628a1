"""The attack suite's ledger: every hostile input tried, and whether authgate refused it.

Attack tests call `hostile(category, refused)` once per input, before asserting, so a failing
run still shows what got through. Fuzz tests call `fuzzed(target)` once per generated input.
Inputs tried by a test marked `xfail` (a known bug waiting for its fix) are reported apart.
At the end of the run pytest prints, e.g.:

    attack suite: 4321 hostile inputs tried, 4321 refused, 0 accepted
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator

import pytest

_current = "outside a test"
_by_test: dict[str, tuple[Counter[str], Counter[str]]] = {}
_xfailed: set[str] = set()
_fuzzed: Counter[str] = Counter()


def hostile(category: str, refused: bool) -> bool:
    """Count one hostile input of `category`; return `refused` (for use in an assert)."""
    tried, ok = _by_test.setdefault(_current, (Counter(), Counter()))
    tried[category] += 1
    if refused:
        ok[category] += 1
    return refused


def fuzzed(target: str, count: int = 1) -> None:
    """Count `count` generated inputs fed to fuzz target `target`."""
    _fuzzed[target] += count


def _totals(known: bool) -> tuple[Counter[str], Counter[str]]:
    tried: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for test, (t, r) in _by_test.items():
        if (test in _xfailed) == known:
            tried.update(t)
            refused.update(r)
    return tried, refused


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    global _current
    _current = item.nodeid
    try:
        return (yield)
    finally:
        _current = "outside a test"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and hasattr(report, "wasxfail"):
        _xfailed.add(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tried, refused = _totals(known=False)
    known_tried, known_refused = _totals(known=True)
    fuzz_total = sum(_fuzzed.values())
    if not tried and not known_tried and not fuzz_total:
        return
    write = terminalreporter.write_line
    terminalreporter.section("attack suite")
    for category in sorted(tried):
        write(f"  {category}: {tried[category]} tried, {refused[category]} refused")
    for category in sorted(known_tried):
        write(
            f"  {category} (known bug, xfail): {known_tried[category]} tried, "
            f"{known_refused[category]} refused"
        )
    for target in sorted(_fuzzed):
        write(f"  fuzz {target}: {_fuzzed[target]} generated inputs")
    if fuzz_total:
        write(f"fuzz: {fuzz_total} generated inputs over {len(_fuzzed)} targets")
    if tried:
        total, ok = sum(tried.values()), sum(refused.values())
        write(f"attack suite: {total} hostile inputs tried, {ok} refused, {total - ok} accepted")
    if known_tried:
        total, ok = sum(known_tried.values()), sum(known_refused.values())
        write(
            f"known bugs (xfail, not in the count above): {total} hostile inputs, "
            f"{total - ok} not yet refused as they should be"
        )
