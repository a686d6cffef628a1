"""What a compiled policy can ever do, for `authgate check`.

Each distinct criterion is an atom. Atoms the client or the clock controls (method, path, the
time) are free: the analysis tries every combination of them. Atoms a given kind of visitor
cannot choose are fixed for that visitor: a signed-out visitor fails every identity criterion;
an attacker's request comes from an address outside the networks the policy names, is not a
CORS pre-flight, and never reaches the policy on `/.pomerium/` (authgate answers those paths
before any policy). Treating distinct criteria as independent can only find *more* ways in
(never fewer), so "nobody can ever get in" and "a deny hides every allow" are never claimed
wrongly, and "X can get in" comes with a concrete witness.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product

from authgate.policy.model import Identity, PolicyInput
from authgate.policy.ppl import (
    SCOPE_CERTIFICATE,
    SCOPE_CONSTANT,
    SCOPE_CORS,
    SCOPE_IDENTITY,
    SCOPE_INTERNAL,
    SCOPE_NETWORK,
    CompiledPolicy,
    Node,
    criteria,
    criterion_scope,
)

MAX_FREE_ATOMS = 14
ATTACKER_IP = "203.0.113.7"  # TEST-NET-3: outside any network a policy would name on purpose

Valuation = dict[str, bool]


def atoms_of(policy: CompiledPolicy) -> dict[str, Node]:
    found: dict[str, Node] = {}
    for block in (*policy.allows, *policy.denies):
        for node in criteria(block):
            found.setdefault(node.label, node)
    return found


def evaluate(node: Node, value: Callable[[Node], bool]) -> bool:
    if node.kind == "criterion":
        return value(node)
    results = [evaluate(child, value) for child in node.children]
    if node.kind == "and":
        return all(results)
    if node.kind in ("or", "block"):
        return any(results)
    if node.kind == "not":
        return not any(results)
    return not all(results)  # nor


def decide(policy: CompiledPolicy, valuation: Valuation) -> bool:
    def value(n: Node) -> bool:
        return valuation[n.label]

    return any(evaluate(b, value) for b in policy.allows) and not any(
        evaluate(b, value) for b in policy.denies
    )


def any_allow(policy: CompiledPolicy, valuation: Valuation) -> bool:
    return any(evaluate(b, lambda n: valuation[n.label]) for b in policy.allows)


@dataclass(frozen=True)
class Visitor:
    """Who is asking, as far as the analysis is concerned.

    identity: None = signed out; an Identity = that user (identity atoms fixed to its values);
    ANYONE = some signed-in user (identity atoms free, `authenticated_user` true).
    fixed_network / fixed_cors: fix `source_ip` atoms as for an attacker's address, and
    `cors_preflight` to false (an ordinary request); otherwise those atoms are free too.
    """

    identity: Identity | str | None
    fixed_network: bool = True
    fixed_cors: bool = True

    def fixed(self, atom: Node) -> bool | None:
        scope = criterion_scope(atom.name)
        if scope == SCOPE_CONSTANT:
            return atom.test(PolicyInput(identity=None))
        if scope == SCOPE_INTERNAL:
            return False
        if scope == SCOPE_IDENTITY:
            if self.identity is None:
                return False
            if isinstance(self.identity, Identity):
                return atom.test(PolicyInput(identity=self.identity))
            return True if atom.name == "authenticated_user" else None
        if self.fixed_network and scope == SCOPE_CERTIFICATE:
            # an attacker has no certificate the CA issued
            return atom.test(PolicyInput(identity=None))
        if self.fixed_network and scope == SCOPE_NETWORK:
            return atom.test(PolicyInput(identity=None, source_ip=ATTACKER_IP))
        if self.fixed_cors and scope == SCOPE_CORS:
            return False
        return None


ANYONE = "anyone"


def valuations(policy: CompiledPolicy, visitor: Visitor) -> Iterator[Valuation] | None:
    """Every valuation of the atoms this visitor leaves free; None when there are too many."""
    atoms = atoms_of(policy)
    fixed: Valuation = {}
    free: list[str] = []
    for label, node in atoms.items():
        value = visitor.fixed(node)
        if value is None:
            free.append(label)
        else:
            fixed[label] = value
    if len(free) > MAX_FREE_ATOMS:
        return None

    def generate() -> Iterator[Valuation]:
        for bits in product((False, True), repeat=len(free)):
            yield {**fixed, **dict(zip(free, bits, strict=True))}

    return generate()


@dataclass(frozen=True)
class Reach:
    """How often a visitor gets in: never, sometimes (with a witness) or always."""

    some: Valuation | None  # a valuation that lets the visitor in
    always: bool
    unknown: bool = False


def reach(
    policy: CompiledPolicy, visitor: Visitor, judge: Callable[[CompiledPolicy, Valuation], bool]
) -> Reach:
    space = valuations(policy, visitor)
    if space is None:
        return Reach(None, False, unknown=True)
    witness: Valuation | None = None
    always = True
    for valuation in space:
        if judge(policy, valuation):
            witness = witness or valuation
        else:
            always = False
    return Reach(witness, always and witness is not None)


def deciding_atoms(policy: CompiledPolicy, valuation: Valuation, free: set[str]) -> list[str]:
    """The free atoms whose value the decision depends on, as `label` or `not label`."""
    out = []
    for label in sorted(free):
        flipped = {**valuation, label: not valuation[label]}
        if decide(policy, flipped) != decide(policy, valuation):
            out.append(label if valuation[label] else f"not {label}")
    return out


def free_atoms(policy: CompiledPolicy, visitor: Visitor) -> set[str]:
    return {label for label, node in atoms_of(policy).items() if visitor.fixed(node) is None}


def opening_block(policy: CompiledPolicy, valuation: Valuation) -> Node | None:
    return next(
        (b for b in policy.allows if evaluate(b, lambda n: valuation[n.label])), None
    )


def mentions_identity(node: Node) -> bool:
    return any(
        criterion_scope(n.name) == SCOPE_IDENTITY and n.name != "authenticated_user"
        for n in criteria(node)
    )
