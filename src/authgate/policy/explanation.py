"""Why a compiled policy allowed or denied a request, as one line of text.

Only `authgate explain` and the 403 page (with `show_error_details: true`) use this; it
re-evaluates the tree node by node, which `CompiledPolicy.allowed()` never does.

Paths name blocks and items the way the config writes them: `allow[0].and[1]` is the second item
of the `and` of the first allow block; shortcut options are named by their key
(`allowed_domains.or[0]`).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from authgate.policy.model import PolicyInput

if TYPE_CHECKING:
    from authgate.policy.ppl import CompiledPolicy, Node


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a policy decided what it did, for the 403 page and `authgate explain`."""

    allowed: bool
    reason: str
    matched_allow: str | None = None  # label of the first allow block that matched
    matched_deny: str | None = None  # label of the first deny block that matched


def _criterion(node: "Node", inp: PolicyInput, path: str) -> str:
    got = node.got(inp) if node.got is not None else ""
    if got == "not signed in":
        return f"{path} {node.label}: not signed in"
    return f"{path} {node.label}: got {got}" if got else f"{path} {node.label}"


def _child_path(node: "Node", path: str, index: int) -> str:
    child = node.children[index]
    base = f"{path}[{index}]"
    return f"{base}.{child.kind}" if child.kind in ("and", "or", "not", "nor") else base


def _block_children(node: "Node", path: str) -> list[tuple["Node", str]]:
    return [(child, f"{path}.{child.kind}") for child in node.children]


def _children(node: "Node", path: str) -> list[tuple["Node", str]]:
    if node.kind == "block":
        return _block_children(node, path)
    return [(child, _child_path(node, path, i)) for i, child in enumerate(node.children)]


def why_true(node: "Node", inp: PolicyInput, path: str) -> str:
    """Why `node` holds for `inp` (it must)."""
    if node.kind == "criterion":
        return _criterion(node, inp, path)
    kids = _children(node, path)
    if node.kind == "and":
        return " and ".join(why_true(c, inp, p) for c, p in kids)
    if node.kind in ("or", "block"):
        c, p = next((c, p) for c, p in kids if c.test(inp))
        return why_true(c, inp, p)
    if node.kind == "not":
        return "not (" + "; ".join(why_false(c, inp, p) for c, p in kids) + ")"
    # nor: one item is false
    c, p = next((c, p) for c, p in kids if not c.test(inp))
    return f"nor: {why_false(c, inp, p)}"


def why_false(node: "Node", inp: PolicyInput, path: str) -> str:
    """Why `node` does not hold for `inp` (it must not)."""
    if node.kind == "criterion":
        return _criterion(node, inp, path)
    kids = _children(node, path)
    if node.kind == "and":
        c, p = next((c, p) for c, p in kids if not c.test(inp))
        return why_false(c, inp, p)
    if node.kind in ("or", "block"):
        return "; ".join(why_false(c, inp, p) for c, p in kids)
    if node.kind == "not":
        c, p = next((c, p) for c, p in kids if c.test(inp))
        return f"{why_true(c, inp, p)} (under not)"
    # nor: every item is true
    return " and ".join(why_true(c, inp, p) for c, p in kids) + " (nor needs one to fail)"


def explain_policy(policy: "CompiledPolicy", inp: PolicyInput) -> Explanation:
    allow = next((n for n in policy.allows if n.test(inp)), None)
    deny = next((n for n in policy.denies if n.test(inp)), None)
    if deny is not None:
        reason = f"deny matched: {why_true(deny, inp, deny.label)}"
        return Explanation(
            allowed=False,
            reason=reason,
            matched_allow=allow.label if allow is not None else None,
            matched_deny=deny.label,
        )
    if allow is None:
        if not policy.allows:
            return Explanation(False, "no allow rule: this policy lets nobody in")
        reasons = "; ".join(why_false(n, inp, n.label) for n in policy.allows)
        return Explanation(False, f"no allow matched; {reasons}")
    reason = f"allow matched: {why_true(allow, inp, allow.label)}"
    if policy.denies:
        reason += "; no deny matched"
    return Explanation(True, reason, matched_allow=allow.label)
