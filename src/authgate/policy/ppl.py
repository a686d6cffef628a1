"""Pomerium Policy Language compiled once into plain Python predicates.

A document is a rule or a list of rules; each rule has `allow` and/or `deny` blocks; a block holds
operators `and`/`or`/`not`/`nor` whose items are criteria or nested operator blocks. Within one
block the operators are OR'ed, as in Pomerium. Semantics follow Pomerium exactly:
`not` = every item false, `nor` = at least one item false.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from authgate.errors import ConfigError
from authgate.policy.model import Identity, PolicyInput

Predicate = Callable[[PolicyInput], bool]

OPERATORS = ("and", "or", "not", "nor")


@dataclass(frozen=True, slots=True)
class Node:
    """A compiled predicate with enough of its source to explain a decision."""

    label: str
    test: Predicate
    children: tuple["Node", ...] = ()
    kind: str = "criterion"  # or an operator name


def _combine(kind: str, children: Sequence[Node]) -> Predicate:
    tests = tuple(child.test for child in children)
    if kind == "and":
        return lambda inp: all(t(inp) for t in tests)
    if kind == "or":
        return lambda inp: any(t(inp) for t in tests)
    if kind == "not":
        return lambda inp: not any(t(inp) for t in tests)
    return lambda inp: not all(t(inp) for t in tests)  # nor


# ---- matchers -------------------------------------------------------------------------------

StrTest = Callable[[str], bool]


def _str_matcher(spec: object, where: str, fold: bool) -> tuple[StrTest, str]:
    """Compile a string matcher (`is`, `not`, `contains`, ...); fold=True compares case-blind."""

    def norm(value: object) -> str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(where, f"expected a string, got {value!r}")
        text = str(value).strip()
        return text.lower() if fold else text

    if not isinstance(spec, dict):
        spec = {"is": spec}
    if len(spec) != 1:
        raise ConfigError(where, "a matcher must have exactly one key, e.g. `is: value`")
    ((op, raw),) = spec.items()
    if op in ("in", "not_in"):
        if not isinstance(raw, list) or not raw:
            raise ConfigError(where, f"`{op}` needs a non-empty list of values")
        values = frozenset(norm(v) for v in raw)
        if op == "in":
            return (lambda s: s in values), f"in {sorted(values)}"
        return (lambda s: s not in values), f"not_in {sorted(values)}"
    if op not in ("is", "not", "contains", "starts_with", "ends_with"):
        raise ConfigError(
            where,
            f"unknown matcher `{op}`",
            "use is, not, contains, starts_with, ends_with, in or not_in",
        )
    want = norm(raw)
    tests: dict[str, StrTest] = {
        "is": lambda s: s == want,
        "not": lambda s: s != want,
        "contains": lambda s: want in s,
        "starts_with": lambda s: s.startswith(want),
        "ends_with": lambda s: s.endswith(want),
    }
    return tests[op], f"{op} {want}"


def _list_matcher(spec: object, where: str) -> tuple[Callable[[tuple[str, ...]], bool], str]:
    if not isinstance(spec, dict):
        spec = {"has": spec}
    if len(spec) != 1:
        raise ConfigError(where, "a matcher must have exactly one key, e.g. `has: value`")
    ((op, raw),) = spec.items()
    if op == "has":
        if not isinstance(raw, str):
            raise ConfigError(where, f"`has` needs a single string, got {raw!r}")
        return (lambda items: raw in items), f"has {raw}"
    if op in ("is", "exclude"):
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise ConfigError(where, f"`{op}` needs a list of strings")
        wanted = frozenset(raw)
        if op == "is":
            return (lambda items: frozenset(items) == wanted), f"is {sorted(wanted)}"
        return (lambda items: not wanted.intersection(items)), f"exclude {sorted(wanted)}"
    raise ConfigError(where, f"unknown list matcher `{op}`", "use has, is or exclude")


def email_domain(email: str) -> str | None:
    """The part after the single `@`; None for anything that is not exactly one `@`."""
    local, sep, domain = email.partition("@")
    if not sep or not local or not domain or "@" in domain:
        return None
    return domain


def _json_equal(a: object, b: object) -> bool:
    # bool is an int in Python; in JSON `true` never equals `1`.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


# ---- criteria -------------------------------------------------------------------------------

CriterionFactory = Callable[[object, str], tuple[Predicate, str]]


def _identity_str(getter: Callable[[Identity], str | None], fold: bool) -> CriterionFactory:
    def factory(spec: object, where: str) -> tuple[Predicate, str]:
        test, text = _str_matcher(spec, where, fold)

        def predicate(inp: PolicyInput) -> bool:
            if inp.identity is None:
                return False
            value = getter(inp.identity)
            if value is None:
                return False
            return test(value.strip().lower() if fold else value)

        return predicate, text

    return factory


def _email_value(identity: Identity) -> str | None:
    email = identity.email.strip()
    return email if email.count("@") == 1 else None


def _domain_value(identity: Identity) -> str | None:
    return email_domain(identity.email.strip())


def _groups(spec: object, where: str) -> tuple[Predicate, str]:
    test, text = _list_matcher(spec, where)
    return (lambda inp: inp.identity is not None and test(inp.identity.groups)), text


def _flag(expected_when_true: Callable[[PolicyInput], bool], name: str) -> CriterionFactory:
    def factory(spec: object, where: str) -> tuple[Predicate, str]:
        if spec is not True:
            raise ConfigError(where, f"`{name}` takes the value true")
        return expected_when_true, "true"

    return factory


def _claim(name: str) -> CriterionFactory:
    def factory(spec: object, where: str) -> tuple[Predicate, str]:
        wanted = spec if isinstance(spec, list) else [spec]
        if not wanted or any(isinstance(w, dict | list) for w in wanted):
            raise ConfigError(where, "claim criteria take a value or a list of values")

        def predicate(inp: PolicyInput) -> bool:
            if inp.identity is None or name not in inp.identity.claims:
                return False
            got = inp.identity.claims[name]
            got_items = got if isinstance(got, list) else [got]
            return any(_json_equal(g, w) for g in got_items for w in wanted)

        return predicate, f"is one of {wanted!r}"

    return factory


CRITERIA: dict[str, CriterionFactory] = {
    "accept": _flag(lambda _inp: True, "accept"),
    "reject": _flag(lambda _inp: False, "reject"),
    "authenticated_user": _flag(lambda inp: inp.identity is not None, "authenticated_user"),
    "email": _identity_str(_email_value, fold=True),
    "domain": _identity_str(_domain_value, fold=True),
    "user": _identity_str(lambda ident: ident.user, fold=False),
    "groups": _groups,
}


def _compile_item(item: object, where: str) -> Node:
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(where, "each item must be one criterion, e.g. `- email: {is: a@b.c}`")
    ((name, spec),) = item.items()
    if not isinstance(name, str):
        raise ConfigError(where, f"criterion names are strings, got {name!r}")
    if name in OPERATORS:
        return _compile_operator(name, spec, f"{where}.{name}")
    if name.startswith("claim/"):
        claim = name.removeprefix("claim/")
        if not claim:
            raise ConfigError(where, "`claim/` needs a claim name, e.g. claim/department")
        factory = _claim(claim)
    elif name in CRITERIA:
        factory = CRITERIA[name]
    else:
        known = ", ".join(sorted([*CRITERIA, "claim/<name>"]))
        raise ConfigError(f"{where}.{name}", f"unknown criterion `{name}`", f"use one of {known}")
    test, text = factory(spec, f"{where}.{name}")
    return Node(label=f"{name} {text}", test=test)


def _compile_operator(op: str, items: object, where: str) -> Node:
    if not isinstance(items, list) or not items:
        raise ConfigError(where, f"`{op}` needs a non-empty list of criteria")
    children = tuple(_compile_item(item, f"{where}[{i}]") for i, item in enumerate(items))
    return Node(label=op, test=_combine(op, children), children=children, kind=op)


def _compile_block(block: object, where: str) -> Node:
    if not isinstance(block, dict) or not block:
        raise ConfigError(where, "expected operators, e.g. `and: [...]`")
    parts = []
    for op, items in block.items():
        if op not in OPERATORS:
            raise ConfigError(
                f"{where}.{op}", f"unknown operator `{op}`", "use and, or, not or nor"
            )
        parts.append(_compile_operator(op, items, f"{where}.{op}"))
    if len(parts) == 1:
        return parts[0]
    return Node(label="or", test=_combine("or", parts), children=tuple(parts), kind="or")


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    allows: tuple[Node, ...]
    denies: tuple[Node, ...]

    def allowed(self, inp: PolicyInput) -> bool:
        """Access needs one matching allow and no matching deny."""
        return any(n.test(inp) for n in self.allows) and not any(n.test(inp) for n in self.denies)

    def needs_identity(self) -> bool:
        """False only for a policy that a request without a session can satisfy."""
        anon = PolicyInput(identity=None)
        return not self.allowed(anon)


def compile_policy(document: object, where: str = "policy") -> CompiledPolicy:
    rules: Iterable[object]
    if document is None:
        rules = []
    elif isinstance(document, list):
        rules = document
    else:
        rules = [document]
    allows: list[Node] = []
    denies: list[Node] = []
    for index, rule in enumerate(rules):
        at = f"{where}[{index}]" if isinstance(document, list) else where
        if not isinstance(rule, dict) or not rule:
            raise ConfigError(at, "a rule must have `allow:` and/or `deny:`")
        for action, block in rule.items():
            if action not in ("allow", "deny"):
                raise ConfigError(
                    f"{at}.{action}", f"unknown action `{action}`", "use allow or deny"
                )
            node = _compile_block(block, f"{at}.{action}")
            (allows if action == "allow" else denies).append(node)
    return CompiledPolicy(allows=tuple(allows), denies=tuple(denies))


def route_policy_document(
    *,
    policy: list[dict[str, Any]] | dict[str, Any] | None,
    allow_public_unauthenticated_access: bool,
    allow_any_authenticated_user: bool,
    allowed_users: Sequence[str] = (),
    allowed_domains: Sequence[str] = (),
    allowed_groups: Sequence[str] = (),
) -> list[Any]:
    """Route-level shortcuts are sugar: they become PPL rules for the same engine."""
    rules: list[Any] = []
    if policy is not None:
        rules.extend(policy if isinstance(policy, list) else [policy])
    if allow_public_unauthenticated_access:
        rules.append({"allow": {"or": [{"accept": True}]}})
    if allow_any_authenticated_user:
        rules.append({"allow": {"or": [{"authenticated_user": True}]}})
    sugar = [{"email": {"is": u}} for u in allowed_users]
    sugar += [{"domain": {"is": d}} for d in allowed_domains]
    sugar += [{"groups": {"has": g}} for g in allowed_groups]
    if sugar:
        rules.append({"allow": {"or": sugar}})
    return rules
