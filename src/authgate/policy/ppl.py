"""Pomerium Policy Language compiled once into plain Python predicates.

A document is a rule or a list of rules; each rule has `allow` and/or `deny` blocks; a block holds
operators `and`/`or`/`not`/`nor` whose items are criteria or nested operator blocks. Within one
block the operators are OR'ed, as in Pomerium. Semantics follow Pomerium exactly:
`not` = every item false, `nor` = at least one item false. Access needs at least one matching
`allow` and no matching `deny`.

Criteria that read the user (`authenticated_user`, `email`, `domain`, `user`, `groups`,
`claim/<name>`) are false for a request without a session — so, exactly as in Pomerium, `not` over
them is *true* for signed-out users (`authgate check` flags such policies).

Everything here happens at load: `CompiledPolicy.allowed()` only calls closures. The explanation
of a decision (`CompiledPolicy.explain()`) walks the same tree separately.
"""

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from authgate.errors import ConfigError
from authgate.policy import client_cert, timecrit
from authgate.policy.explanation import Explanation, explain_policy
from authgate.policy.matchers import (
    ascii_lower,
    claim_matcher,
    email_unverified,
    list_matcher,
    show,
    string_matcher,
)
from authgate.policy.model import Identity, PolicyInput

Predicate = Callable[[PolicyInput], bool]
Describe = Callable[[PolicyInput], str]

OPERATORS = ("and", "or", "not", "nor")
POMERIUM_PREFIX = "/.pomerium/"


def _never(_inp: PolicyInput) -> bool:
    return False


def _always(_inp: PolicyInput) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Node:
    """A compiled predicate with enough of its source to explain a decision and to lint it.

    kind: "criterion", an operator ("and", "or", "not", "nor") or "block" (an allow/deny block:
    its operators OR'ed). For a criterion, `name` is the criterion (`domain`, `claim/dept`) and
    `label` what it asks (`domain is example.com`); for a block, `label` is how explanations name
    it (`allow[0]`, `allowed_domains`). `where` is the config key it came from.
    """

    label: str
    test: Predicate
    children: tuple["Node", ...] = ()
    kind: str = "criterion"
    name: str = ""
    where: str = ""
    spec: object = None
    got: Describe | None = None


# ---- fast combinators (no allocation per call) ---------------------------------------------


def _any_of(tests: Sequence[Predicate]) -> Predicate:
    if not tests:
        return _never
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda inp: a(inp) or b(inp)
    frozen = tuple(tests)

    def any_(inp: PolicyInput) -> bool:
        for t in frozen:  # noqa: SIM110 - a loop allocates nothing per call; any(genexpr) does
            if t(inp):
                return True
        return False

    return any_


def _all_of(tests: Sequence[Predicate]) -> Predicate:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda inp: a(inp) and b(inp)
    frozen = tuple(tests)

    def all_(inp: PolicyInput) -> bool:
        for t in frozen:  # noqa: SIM110 - no generator per call
            if not t(inp):
                return False
        return True

    return all_


def _combine(kind: str, children: Sequence[Node]) -> Predicate:
    tests = [child.test for child in children]
    if kind == "and":
        return _all_of(tests)
    if kind in ("or", "block"):
        return _any_of(tests)
    if kind == "not":  # Pomerium: every item false
        some = _any_of(tests)
        return lambda inp: not some(inp)
    every = _all_of(tests)  # nor, Pomerium: at least one item false
    return lambda inp: not every(inp)


# ---- criteria ------------------------------------------------------------------------------


def email_domain(email: str) -> str | None:
    """The part after the single `@`; None for anything that is not exactly one `@`."""
    local, sep, domain = email.partition("@")
    if not sep or not local or not domain or "@" in domain:
        return None
    return domain


@dataclass(frozen=True, slots=True)
class Criterion:
    test: Predicate
    text: str  # what it asks, after the criterion name: "is example.com"
    got: Describe  # what the request had, for explanations


CriterionFactory = Callable[[object, str], Criterion]

# How `authgate check` reasons about a criterion: what it depends on.
SCOPE_IDENTITY = "identity"  # false without a session
SCOPE_CONSTANT = "constant"
SCOPE_REQUEST = "request"  # method, path: the client chooses
SCOPE_TIME = "time"  # the clock: eventually any value
SCOPE_NETWORK = "network"  # source_ip
SCOPE_CERTIFICATE = "certificate"  # client_certificate (downstream mTLS)
SCOPE_CORS = "cors"  # cors_preflight
SCOPE_INTERNAL = "internal"  # pomerium_routes: answered by authgate before policy


def _signed_in(getter: Callable[[Identity], str]) -> Describe:
    def got(inp: PolicyInput) -> str:
        if inp.identity is None:
            return "not signed in"
        return getter(inp.identity) or "(empty)"

    return got


# The address is compared as the IdP sent it, with only A-Z folded to lower case. An address
# that is not one `@` between two non-empty parts, or that holds spaces, control or invisible
# characters (" a@example.com", "a@example.com\u200b") is not an address: it matches nothing,
# not even a negative matcher.


def well_formed_email(email: str) -> bool:
    return email.count("@") == 1 and email.isprintable() and " " not in email


def _email_value(identity: Identity) -> str | None:
    email = identity.email
    if email_unverified(identity.claims):
        return None
    return ascii_lower(email) if well_formed_email(email) else None


def _domain_value(identity: Identity) -> str | None:
    if not well_formed_email(identity.email) or email_unverified(identity.claims):
        return None
    domain = email_domain(identity.email)
    return ascii_lower(domain) if domain is not None else None


def _identity_string(
    value_of: Callable[[Identity], str | None], fold: bool, shown: Callable[[Identity], str]
) -> CriterionFactory:
    def factory(spec: object, where: str) -> Criterion:
        test, text = string_matcher(spec, where, fold)

        def predicate(inp: PolicyInput) -> bool:
            identity = inp.identity
            if identity is None:
                return False
            value = value_of(identity)
            return value is not None and test(value)

        return Criterion(predicate, text, _signed_in(shown))

    return factory


def _shown_domain(identity: Identity) -> str:
    if email_unverified(identity.claims):
        return f"{identity.email!r} (not verified by the identity provider)"
    domain = email_domain(identity.email) if well_formed_email(identity.email) else None
    return domain if domain is not None else f"no domain: {identity.email!r} is not an address"


def _shown_email(identity: Identity) -> str:
    email = identity.email
    if email_unverified(identity.claims):
        return f"{email!r} (not verified by the identity provider)"
    return email if well_formed_email(email) else f"{email!r} (not an address)"


def _groups(spec: object, where: str) -> Criterion:
    test, text = list_matcher(spec, where)

    def got(inp: PolicyInput) -> str:
        return "not signed in" if inp.identity is None else show(list(inp.identity.groups))

    return Criterion(
        lambda inp: inp.identity is not None and test(inp.identity.groups), text, got
    )


_MISSING = object()


def claim_values(claims: dict[str, Any], name: str) -> tuple[object, ...]:
    """A claim as a list of values, as Pomerium stores claims. A name not found as such is read
    as a path: `claim/address/country` (or `address.country`) looks inside `address`."""
    value = claims.get(name, _MISSING)
    if value is _MISSING:
        segments = name.replace(".", "/").split("/")
        value = claims
        for segment in segments:
            value = value.get(segment, _MISSING) if isinstance(value, dict) else _MISSING
            if value is _MISSING:
                break
    if value is _MISSING or value is None:
        return ()
    if isinstance(value, list):
        return tuple(v for v in value if v is not None)
    return (value,)


def _claim(name: str) -> CriterionFactory:
    def factory(spec: object, where: str) -> Criterion:
        test, text = claim_matcher(spec, where)

        def predicate(inp: PolicyInput) -> bool:
            identity = inp.identity
            return identity is not None and test(claim_values(identity.claims, name))

        def got(inp: PolicyInput) -> str:
            if inp.identity is None:
                return "not signed in"
            values = claim_values(inp.identity.claims, name)
            return show(list(values)) if values else "no such claim"

        return Criterion(predicate, text, got)

    return factory


def _flag(test: Predicate, name: str, got: Describe) -> CriterionFactory:
    def factory(spec: object, where: str) -> Criterion:
        if spec is not True:
            raise ConfigError(where, f"`{name}` takes the value true")
        return Criterion(test, "", got)

    return factory


def _request_string(attr: str, fold: bool = False) -> CriterionFactory:
    def factory(spec: object, where: str) -> Criterion:
        test, text = string_matcher(spec, where, fold)
        if attr == "method":
            return Criterion(lambda inp: test(inp.method), text, lambda inp: inp.method)
        return Criterion(lambda inp: test(inp.path), text, lambda inp: inp.path)

    return factory


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _client_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().removeprefix("[").partition("]")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
    return address


def _source_ip(spec: object, where: str) -> Criterion:
    items = spec if isinstance(spec, list) else [spec]
    if not items or not all(isinstance(i, str) for i in items):
        raise ConfigError(
            where, "expected an IP address, a CIDR range or a list of them", "e.g. 10.0.0.0/8"
        )
    networks: list[IPNetwork] = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ConfigError(
                where, f"expected an IP address or CIDR range, got {item!r}", "e.g. 10.0.0.0/8"
            ) from None
    nets = tuple(networks)

    def predicate(inp: PolicyInput) -> bool:
        address = _client_address(inp.source_ip)
        if address is None:
            return False
        for net in nets:  # noqa: SIM110 - no generator per call
            if address.version == net.version and address in net:
                return True
        return False

    text = "in " + ", ".join(str(n) for n in nets)
    return Criterion(predicate, text, lambda inp: inp.source_ip or "no address")


def _client_certificate(spec: object, where: str) -> Criterion:
    predicate, text = client_cert.compile_matcher(spec, where)
    return Criterion(predicate, text, client_cert.describe)


def _is_cors_preflight(inp: PolicyInput) -> bool:
    headers = inp.headers
    return (
        inp.method == "OPTIONS"
        and bool(headers.get("origin"))
        and bool(headers.get("access-control-request-method"))
    )


def _cors_got(inp: PolicyInput) -> str:
    present = [h for h in ("origin", "access-control-request-method") if inp.headers.get(h)]
    return f"{inp.method} with " + (", ".join(present) if present else "neither header")


def _timed(
    parse: Callable[[object, str], tuple[Predicate, str, Describe]],
) -> CriterionFactory:
    def factory(spec: object, where: str) -> Criterion:
        test, text, got = parse(spec, where)
        return Criterion(test, text, got)

    return factory


CRITERIA: dict[str, CriterionFactory] = {
    "accept": _flag(_always, "accept", lambda _inp: ""),
    "reject": _flag(_never, "reject", lambda _inp: ""),
    "authenticated_user": _flag(
        lambda inp: inp.identity is not None,
        "authenticated_user",
        lambda inp: "not signed in" if inp.identity is None else "signed in",
    ),
    "email": _identity_string(_email_value, True, _shown_email),
    "domain": _identity_string(_domain_value, True, _shown_domain),
    "user": _identity_string(lambda ident: ident.user, False, lambda ident: ident.user),
    "groups": _groups,
    "http_method": _request_string("method"),
    "http_path": _request_string("path"),
    "source_ip": _source_ip,
    "client_certificate": _client_certificate,
    # No trusted certificate: with downstream_mtls an untrusted one never passes the handshake,
    # so this is "none presented" (Pomerium's `deny` rule for the `policy` enforcement mode).
    "invalid_client_certificate": _flag(
        lambda inp: not inp.client_certificate, "invalid_client_certificate", client_cert.describe
    ),
    "cors_preflight": _flag(_is_cors_preflight, "cors_preflight", _cors_got),
    "pomerium_routes": _flag(
        lambda inp: inp.path.startswith(POMERIUM_PREFIX), "pomerium_routes", lambda i: i.path
    ),
    "date": _timed(timecrit.date_window),
    "day_of_week": _timed(timecrit.day_of_week),
    "time_of_day": _timed(timecrit.time_of_day),
}

CRITERION_SCOPES: dict[str, str] = {
    "accept": SCOPE_CONSTANT,
    "reject": SCOPE_CONSTANT,
    "authenticated_user": SCOPE_IDENTITY,
    "email": SCOPE_IDENTITY,
    "domain": SCOPE_IDENTITY,
    "user": SCOPE_IDENTITY,
    "groups": SCOPE_IDENTITY,
    "claim": SCOPE_IDENTITY,
    "http_method": SCOPE_REQUEST,
    "http_path": SCOPE_REQUEST,
    "source_ip": SCOPE_NETWORK,
    "client_certificate": SCOPE_CERTIFICATE,
    "invalid_client_certificate": SCOPE_CERTIFICATE,
    "cors_preflight": SCOPE_CORS,
    "pomerium_routes": SCOPE_INTERNAL,
    "date": SCOPE_TIME,
    "day_of_week": SCOPE_TIME,
    "time_of_day": SCOPE_TIME,
}

# Pomerium criteria that need machinery authgate does not have.
UNSUPPORTED = {
    "device": "device identity is a Pomerium feature authgate does not have",
    "record": "external data sources are a Pomerium Enterprise feature",
    "mcp_tool": "MCP routes are a Pomerium feature authgate does not have",
    "ssh_username": "SSH routes are a Pomerium feature authgate does not have",
    "ssh_publickey": "SSH routes are a Pomerium feature authgate does not have",
}


def criterion_scope(name: str) -> str:
    return CRITERION_SCOPES["claim" if name.startswith("claim/") else name]


# ---- compilation ---------------------------------------------------------------------------


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
    elif name in UNSUPPORTED:
        raise ConfigError(
            f"{where}.{name}",
            f"criterion `{name}` is not supported: {UNSUPPORTED[name]}",
            "remove it or express the rule with the supported criteria",
        )
    else:
        known = ", ".join(sorted([*CRITERIA, "claim/<name>"]))
        raise ConfigError(f"{where}.{name}", f"unknown criterion `{name}`", f"use one of {known}")
    at = f"{where}.{name}"
    crit = factory(spec, at)
    label = f"{name} {crit.text}" if crit.text else name
    return Node(label=label, test=crit.test, name=name, where=at, spec=spec, got=crit.got)


def _compile_operator(op: str, items: object, where: str) -> Node:
    if not isinstance(items, list) or not items:
        raise ConfigError(where, f"`{op}` needs a non-empty list of criteria")
    children = tuple(_compile_item(item, f"{where}[{i}]") for i, item in enumerate(items))
    return Node(label=op, test=_combine(op, children), children=children, kind=op, where=where)


def _compile_block(block: object, where: str, label: str) -> Node:
    if not isinstance(block, dict) or not block:
        raise ConfigError(where, "expected operators, e.g. `and: [...]`")
    parts = []
    for op, items in block.items():
        if op not in OPERATORS:
            raise ConfigError(
                f"{where}.{op}", f"unknown operator `{op}`", "use and, or, not or nor"
            )
        parts.append(_compile_operator(op, items, f"{where}.{op}"))
    children = tuple(parts)
    return Node(
        label=label, test=_combine("block", children), children=children, kind="block",
        where=where,
    )


@dataclass
class _Blocks:
    allows: list[Node] = field(default_factory=list)
    denies: list[Node] = field(default_factory=list)

    def add_document(self, document: object, where: str) -> None:
        try:
            self._add_document(document, where)
        except RecursionError:
            raise ConfigError(where, "is nested too deeply", "flatten the policy") from None

    def _add_document(self, document: object, where: str) -> None:
        rules: Iterable[object]
        if document is None:
            rules = []
        elif isinstance(document, list):
            rules = document
        else:
            rules = [document]
        for index, rule in enumerate(rules):
            at = f"{where}[{index}]" if isinstance(document, list) else where
            if not isinstance(rule, dict) or not rule:
                raise ConfigError(at, "a rule must have `allow:` and/or `deny:`")
            for action, block in rule.items():
                if action not in ("allow", "deny"):
                    raise ConfigError(
                        f"{at}.{action}", f"unknown action `{action}`", "use allow or deny"
                    )
                target = self.allows if action == "allow" else self.denies
                node = _compile_block(block, f"{at}.{action}", f"{action}[{len(target)}]")
                target.append(node)

    def add_sugar(self, key: str, items: list[dict[str, Any]], where: str) -> None:
        block = _compile_block({"or": items}, where, key)
        self.allows.append(block)

    def build(self) -> "CompiledPolicy":
        allows, denies = tuple(self.allows), tuple(self.denies)
        allow = _any_of([n.test for n in allows])
        if denies:
            deny = _any_of([n.test for n in denies])
            test: Predicate = lambda inp: allow(inp) and not deny(inp)  # noqa: E731
        else:
            test = allow
        return CompiledPolicy(allows=allows, denies=denies, test=test)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    allows: tuple[Node, ...]
    denies: tuple[Node, ...]
    test: Predicate = _never

    def allowed(self, inp: PolicyInput) -> bool:
        """Access needs one matching allow and no matching deny."""
        return self.test(inp)

    def needs_identity(self) -> bool:
        """False only for a policy that lets a request without a session through (GET /)."""
        return not self.test(PolicyInput(identity=None))

    def explain(self, inp: PolicyInput) -> Explanation:
        """Why `allowed(inp)` is what it is (slow path: 403 details and `authgate explain`)."""
        return explain_policy(self, inp)

    def scopes(self) -> frozenset[str]:
        """The kinds of input (SCOPE_*) its criteria read: what a cached answer must be keyed on."""
        return frozenset(
            criterion_scope(node.name)
            for block in (*self.allows, *self.denies)
            for node in criteria(block)
        )


def criteria(node: Node) -> Iterator[Node]:
    """Every criterion under `node`."""
    if node.kind == "criterion":
        yield node
    for child in node.children:
        yield from criteria(child)


def compile_policy(document: object, where: str = "policy") -> CompiledPolicy:
    blocks = _Blocks()
    blocks.add_document(document, where)
    return blocks.build()


def _sugar_rules(
    allow_public_unauthenticated_access: bool,
    allow_any_authenticated_user: bool,
    allowed_users: Sequence[str],
    allowed_domains: Sequence[str],
    allowed_groups: Sequence[str],
) -> list[tuple[str, list[dict[str, Any]]]]:
    rules: list[tuple[str, list[dict[str, Any]]]] = []
    if allow_public_unauthenticated_access:
        rules.append(("allow_public_unauthenticated_access", [{"accept": True}]))
    if allow_any_authenticated_user:
        rules.append(("allow_any_authenticated_user", [{"authenticated_user": True}]))
    if allowed_users:
        rules.append(("allowed_users", [{"email": {"is": u}} for u in allowed_users]))
    if allowed_domains:
        rules.append(("allowed_domains", [{"domain": {"is": d}} for d in allowed_domains]))
    if allowed_groups:
        rules.append(("allowed_groups", [{"groups": {"has": g}} for g in allowed_groups]))
    return rules


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
    for _key, items in _sugar_rules(
        allow_public_unauthenticated_access,
        allow_any_authenticated_user,
        allowed_users,
        allowed_domains,
        allowed_groups,
    ):
        rules.append({"allow": {"or": items}})
    return rules


def compile_route_policy(
    *,
    policy: list[dict[str, Any]] | dict[str, Any] | None,
    allow_public_unauthenticated_access: bool,
    allow_any_authenticated_user: bool,
    allowed_users: Sequence[str] = (),
    allowed_domains: Sequence[str] = (),
    allowed_groups: Sequence[str] = (),
    where: str = "route",
) -> CompiledPolicy:
    """The same rules as `compile_policy(route_policy_document(...))`, with each shortcut kept as
    its own allow block named after its key, so explanations and lint findings can name it."""
    blocks = _Blocks()
    blocks.add_document(policy, f"{where}.policy")
    for key, items in _sugar_rules(
        allow_public_unauthenticated_access,
        allow_any_authenticated_user,
        allowed_users,
        allowed_domains,
        allowed_groups,
    ):
        blocks.add_sugar(key, items, f"{where}.{key}")
    return blocks.build()
