"""PPL matchers, compiled once into plain functions.

String matcher (`email`, `domain`, `user`, `http_method`, `http_path`): an object whose keys are
operators — `is`, `not`, `contains`, `starts_with`, `ends_with`, `in`, `not_in` — or a bare value
meaning `is`. As in Pomerium, several operators in one object must all hold.

String list matcher (`groups`, `claim/<name>`): `has` (the list contains the value), `is` (the list
is exactly that one value; with a list of values, exactly that set), `exclude` (the list contains
none of the values). A bare value means `has`; several operators must all hold.
"""

from collections.abc import Callable, Mapping, Sequence

from authgate.errors import ConfigError

StrTest = Callable[[str], bool]

_ASCII_LOWER = {ord(c): ord(c) + 32 for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only. `str.lower()` would turn the Kelvin sign (U+212A) into an ASCII `k`,
    letting `mallory@\u212aestrel.example` pass for `kestrel.example`."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def email_unverified(claims: Mapping[str, object]) -> bool:
    """The IdP says the address is not verified (`email_verified` false, or "false" as
    Cognito writes it): it then satisfies no `email` or `domain` criterion, since anyone could
    have typed it. A missing claim counts as verified (many IdPs only send verified ones)."""
    flag = claims.get("email_verified")
    return flag is False or (isinstance(flag, str) and flag.strip().lower() == "false")


ListTest = Callable[[Sequence[object]], bool]

STRING_OPERATORS = ("is", "not", "contains", "starts_with", "ends_with", "in", "not_in")
LIST_OPERATORS = ("has", "is", "exclude")


def _scalar_text(value: object, where: str, fold: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(where, f"expected a string, got {value!r}", "quote the value")
    text = str(value).strip()
    return ascii_lower(text) if fold else text


def _one_string_test(op: str, raw: object, where: str, fold: bool) -> tuple[StrTest, str]:
    if op in ("in", "not_in"):
        if not isinstance(raw, list) or not raw:
            raise ConfigError(where, f"`{op}` needs a non-empty list of values")
        values = frozenset(_scalar_text(v, where, fold) for v in raw)
        shown = ", ".join(sorted(values))
        if op == "in":
            return values.__contains__, f"in [{shown}]"
        return (lambda s: s not in values), f"not_in [{shown}]"
    want = _scalar_text(raw, where, fold)
    tests: dict[str, StrTest] = {
        "is": want.__eq__,
        "not": want.__ne__,
        "contains": lambda s: want in s,
        "starts_with": lambda s: s.startswith(want),
        "ends_with": lambda s: s.endswith(want),
    }
    return tests[op], f"{op} {want}"


def string_matcher(spec: object, where: str, fold: bool = False) -> tuple[StrTest, str]:
    """Compile a string matcher; fold=True lower-cases A-Z in the spec (the caller folds the
    value with `ascii_lower` too)."""
    if not isinstance(spec, dict):
        spec = {"is": spec}
    if not spec:
        raise ConfigError(where, "empty matcher", "write e.g. `is: value`")
    parts: list[tuple[StrTest, str]] = []
    for op, raw in spec.items():
        if op not in STRING_OPERATORS:
            raise ConfigError(
                where,
                f"unknown matcher `{op}`",
                "use is, not, contains, starts_with, ends_with, in or not_in",
            )
        parts.append(_one_string_test(op, raw, where, fold))
    if len(parts) == 1:
        return parts[0]
    tests = tuple(t for t, _ in parts)

    def all_hold(s: str) -> bool:
        return all(t(s) for t in tests)

    return all_hold, " and ".join(text for _, text in parts)


# ---- list matchers -------------------------------------------------------------------------


def json_equal(a: object, b: object) -> bool:
    """Equality of JSON values: `true` never equals `1`; `3` equals `3.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _show(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


Check = Callable[[object, str], object]


def _strings_only(value: object, where: str) -> object:
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {value!r}", "quote the value")
    return value


def _json_scalar(value: object, where: str) -> object:
    if isinstance(value, dict | list) or value is None:
        raise ConfigError(
            where,
            f"expected a string, number or boolean, got {value!r}",
            "claim criteria take a value or a list of values",
        )
    return value


def _one_list_test(op: str, raw: object, where: str, check: Check) -> tuple[ListTest, str]:
    if op == "has":
        if isinstance(raw, list):
            raise ConfigError(where, f"`has` needs a single string, got {raw!r}")
        want = check(raw, where)
        return (lambda items: any(json_equal(i, want) for i in items)), f"has {_show(want)}"
    wanted = tuple(check(v, where) for v in (raw if isinstance(raw, list) else [raw]))
    if not wanted:
        raise ConfigError(where, f"`{op}` needs a value or a non-empty list of values")
    if op == "is":
        if not isinstance(raw, list):
            one = wanted[0]
            # Pomerium: the list holds exactly one value, and it is this one.
            return (lambda items: len(items) == 1 and json_equal(items[0], one)), f"is {_show(one)}"

        def same_set(items: Sequence[object]) -> bool:
            return all(any(json_equal(i, w) for w in wanted) for i in items) and all(
                any(json_equal(i, w) for i in items) for w in wanted
            )

        return same_set, f"is {_show(list(wanted))}"
    shown = _show(list(wanted)) if isinstance(raw, list) else _show(wanted[0])
    return (
        lambda items: not any(json_equal(i, w) for i in items for w in wanted)
    ), f"exclude {shown}"


def list_matcher(
    spec: object, where: str, check: Check = _strings_only
) -> tuple[ListTest, str]:
    if not isinstance(spec, dict):
        spec = {"has": spec}
    if not spec:
        raise ConfigError(where, "empty matcher", "write e.g. `has: value`")
    parts: list[tuple[ListTest, str]] = []
    for op, raw in spec.items():
        if op not in LIST_OPERATORS:
            raise ConfigError(where, f"unknown list matcher `{op}`", "use has, is or exclude")
        parts.append(_one_list_test(op, raw, where, check))
    if len(parts) == 1:
        return parts[0]
    tests = tuple(t for t, _ in parts)
    return (lambda items: all(t(items) for t in tests)), " and ".join(t for _, t in parts)


def claim_matcher(spec: object, where: str) -> tuple[ListTest, str]:
    """`claim/<name>`: a value (has), a list of values (has any of them), or a list matcher."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(where, "claim criteria take a value or a list of values")
        wanted = tuple(_json_scalar(v, where) for v in spec)
        return (
            lambda items: any(json_equal(i, w) for i in items for w in wanted)
        ), f"has one of {_show(list(wanted))}"
    return list_matcher(spec, where, _json_scalar)


def show(value: object) -> str:
    return _show(value)
