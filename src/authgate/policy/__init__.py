"""Pomerium Policy Language: compile once, evaluate per request."""

from authgate.policy.model import Identity, PolicyInput, normalize_groups
from authgate.policy.ppl import CompiledPolicy, compile_policy, email_domain, route_policy_document

__all__ = [
    "CompiledPolicy",
    "Identity",
    "PolicyInput",
    "compile_policy",
    "email_domain",
    "normalize_groups",
    "route_policy_document",
]
