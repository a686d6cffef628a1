"""Go-style durations (``30s``, ``14h``, ``1h30m``) as Pomerium writes them."""

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> timedelta:
    """Parse ``"1h30m"``-style text (or a number of seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 14h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(float(value))
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 5m or 14h")
    text = value.strip()
    if text == "0":
        return timedelta(0)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 14h or 1h30m")
    return _bounded(total)


MAX_SECONDS = 10 * 365 * 24 * 3600.0


def _bounded(seconds: float) -> timedelta:
    if not seconds <= MAX_SECONDS:  # also catches inf and nan
        raise ValueError("a duration must be at most 10 years (87600h)")
    return timedelta(seconds=seconds)
