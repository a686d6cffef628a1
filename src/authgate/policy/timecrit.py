"""The time criteria: `date`, `day_of_week` and `time_of_day`, parsed once at load.

Windows are half-open: `after` is inclusive and `before` exclusive, so `after: 09:00` /
`before: 17:00` admits 09:00:00 and refuses 17:00:00, and two adjacent windows never overlap.
A `time_of_day` window whose `after` is later than its `before` (22:00 .. 06:00) spans midnight.
"""

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from authgate.errors import ConfigError
from authgate.policy.model import PolicyInput

Predicate = Callable[[PolicyInput], bool]
Describe = Callable[[PolicyInput], str]

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {**{d: i for i, d in enumerate(DAYS)}, **{d[:3]: i for i, d in enumerate(DAYS)}}

# Pomerium's formats: "3:04 PM", "3:04PM", "3 PM", "3PM", "15:04:05.999999999", "15:04:05", "15:04"
_TIME_12H = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*([AaPp][Mm])$")
_TIME_24H = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")
_TIME_HELP = "write it quoted, as '15:04', '15:04:05', '3:04 PM' or '3PM'"


def request_time(inp: PolicyInput) -> datetime:
    now = inp.now
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def timezone_named(value: object, where: str) -> tzinfo:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, "`timezone` must be a name such as Europe/Berlin or UTC")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            where,
            f"unknown timezone {value!r}",
            "use an IANA name such as America/Phoenix, Europe/Berlin or UTC",
        ) from None


def parse_time_of_day(value: object, where: str) -> float:
    """Seconds since midnight. YAML 1.1 reads an unquoted 17:00 as the number 1020 (and 2:20:00
    as 8400): those numbers are decoded back exactly, since H:MM and H:MM:SS never overlap."""
    if isinstance(value, bool):
        raise ConfigError(where, f"{value!r} is not a time of day", _TIME_HELP)
    if isinstance(value, int):
        if 60 <= value < 24 * 60:  # H:MM read as base 60
            return float(value * 60)
        if 3600 <= value < 24 * 3600:  # H:MM:SS read as base 60
            return float(value)
        raise ConfigError(where, f"{value!r} is not a time of day", _TIME_HELP)
    if isinstance(value, float):
        if 3600 <= value < 24 * 3600:  # H:MM:SS.fff read as base 60
            return value
        raise ConfigError(where, f"{value!r} is not a time of day", _TIME_HELP)
    if not isinstance(value, str):
        raise ConfigError(where, f"{value!r} is not a time of day", _TIME_HELP)
    text = value.strip()
    if m := _TIME_12H.match(text):
        hour, minute = int(m.group(1)), int(m.group(2) or 0)
        if not 1 <= hour <= 12 or minute > 59:
            raise ConfigError(where, f"{value!r} is not a time of day", _TIME_HELP)
        hour = hour % 12 + (12 if m.group(3).lower() == "pm" else 0)
        return float(hour * 3600 + minute * 60)
    if m := _TIME_24H.match(text):
        hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        fraction = float("0." + m.group(4)) if m.group(4) else 0.0
        if hour > 23 or minute > 59 or second > 59:
            raise ConfigError(where, f"{value!r} is not a time of day", _TIME_HELP)
        return hour * 3600 + minute * 60 + second + fraction
    raise ConfigError(where, f"{value!r} is not a time of day", _TIME_HELP)


def _clock_text(seconds: float) -> str:
    whole = int(seconds)
    text = f"{whole // 3600:02d}:{whole % 3600 // 60:02d}"
    if whole % 60 or seconds != whole:
        text += f":{whole % 60:02d}"
    return text


def _only_keys(spec: object, keys: tuple[str, ...], where: str, example: str) -> dict[str, object]:
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(where, f"expected an object such as {example}")
    for key in spec:
        if key not in keys:
            raise ConfigError(
                where, f"unknown key `{key}`", "use " + ", ".join(f"`{k}`" for k in keys)
            )
    return spec


def time_of_day(spec: object, where: str) -> tuple[Predicate, str, Describe]:
    spec = _only_keys(
        spec, ("timezone", "after", "before"), where, "{timezone: UTC, after: '9:00'}"
    )
    if "timezone" not in spec:
        raise ConfigError(where, "`timezone` is required", "add e.g. `timezone: Europe/Berlin`")
    zone = timezone_named(spec["timezone"], where)
    after = parse_time_of_day(spec["after"], where) if "after" in spec else None
    before = parse_time_of_day(spec["before"], where) if "before" in spec else None
    if after is None and before is None:
        raise ConfigError(where, "needs `after`, `before` or both")

    def seconds(inp: PolicyInput) -> float:
        local = request_time(inp).astimezone(zone)
        return local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6

    test: Predicate
    if after is not None and before is not None:
        lo, hi = after, before
        if lo <= hi:
            test = lambda inp: lo <= seconds(inp) < hi  # noqa: E731
        else:  # spans midnight
            test = lambda inp: not hi <= seconds(inp) < lo  # noqa: E731
    elif after is not None:
        lo = after
        test = lambda inp: seconds(inp) >= lo  # noqa: E731
    else:
        assert before is not None
        hi = before
        test = lambda inp: seconds(inp) < hi  # noqa: E731
    parts = [f"after {_clock_text(after)}"] if after is not None else []
    parts += [f"before {_clock_text(before)}"] if before is not None else []
    text = " ".join(parts) + f" {zone}"

    def describe(inp: PolicyInput) -> str:
        local = request_time(inp).astimezone(zone)
        return f"{local:%H:%M:%S} {zone} ({local:%A})"

    return test, text, describe


def _parse_date(value: object, where: str) -> datetime:
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(
                where,
                f"{value!r} is not an ISO-8601 date",
                "write e.g. 2026-01-02T16:20:00Z or 2026-01-02",
            ) from None
    else:
        raise ConfigError(where, f"{value!r} is not an ISO-8601 date", "write e.g. 2026-01-02")
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def date_window(spec: object, where: str) -> tuple[Predicate, str, Describe]:
    """Naive dates and times are UTC."""
    spec = _only_keys(spec, ("after", "before"), where, "{after: 2026-01-02T00:00:00Z}")
    after = _parse_date(spec["after"], where) if "after" in spec else None
    before = _parse_date(spec["before"], where) if "before" in spec else None
    test: Predicate
    if after is not None and before is not None:
        lo, hi = after, before
        test = lambda inp: lo <= request_time(inp) < hi  # noqa: E731
    elif after is not None:
        lo = after
        test = lambda inp: request_time(inp) >= lo  # noqa: E731
    else:
        assert before is not None
        hi = before
        test = lambda inp: request_time(inp) < hi  # noqa: E731
    parts = [f"after {after.isoformat()}"] if after is not None else []
    parts += [f"before {before.isoformat()}"] if before is not None else []
    return test, " ".join(parts), lambda inp: request_time(inp).isoformat()


def _day(name: str, where: str) -> int:
    index = _DAY_INDEX.get(name.strip().lower())
    if index is None:
        raise ConfigError(
            where,
            f"unknown day {name.strip()!r}",
            "use mon, tue, wed, thu, fri, sat, sun or the full English names",
        )
    return index


def parse_days(text: str, where: str) -> frozenset[int]:
    """`*`, `mon,wed,fri`, `mon-fri` (and combinations such as `mon-wed,sat`; `fri-mon` wraps)."""
    if text.strip() == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        if not part.strip():
            raise ConfigError(where, f"{text!r} has an empty day", "write e.g. mon-fri")
        first, dash, last = part.partition("-")
        start = _day(first, where)
        if not dash:
            days.add(start)
            continue
        end = _day(last, where)
        day = start
        days.add(day)
        while day != end:
            day = (day + 1) % 7
            days.add(day)
    return frozenset(days)


def day_of_week(spec: object, where: str) -> tuple[Predicate, str, Describe]:
    """A string of days, evaluated in UTC; authgate also takes `{days: ..., timezone: ...}`."""
    zone: tzinfo = UTC
    if isinstance(spec, dict):
        spec = _only_keys(spec, ("days", "timezone"), where, "{days: mon-fri, timezone: UTC}")
        if "timezone" in spec:
            zone = timezone_named(spec["timezone"], where)
        spec = spec.get("days")
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(where, "expected days such as `mon-fri`, `mon,wed,fri` or '*'")
    days = parse_days(spec, where)
    text = spec.strip() + ("" if zone is UTC else f" {zone}")

    def test(inp: PolicyInput) -> bool:
        return request_time(inp).astimezone(zone).weekday() in days

    def describe(inp: PolicyInput) -> str:
        local = request_time(inp).astimezone(zone)
        return f"{local:%A} ({local:%Y-%m-%d} {zone})"

    return test, text, describe
