"""Pomerium Policy Language: compile once, evaluate per request, explain on demand."""

from authgate.policy.explanation import Explanation
from authgate.policy.model import Identity, PolicyInput, normalize_groups
from authgate.policy.ppl import (
    CompiledPolicy,
    Node,
    compile_policy,
    compile_route_policy,
    email_domain,
    route_policy_document,
)

__all__ = [
    "CompiledPolicy",
    "Explanation",
    "Identity",
    "Node",
    "PolicyInput",
    "compile_policy",
    "compile_route_policy",
    "email_domain",
    "normalize_groups",
    "route_policy_document",
]
