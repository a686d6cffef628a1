"""What a handler decides: let the request through (with header changes) or answer it."""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Allow:
    """Forward to the upstream with these header changes."""

    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    # Until when the same request would get this same answer (the session's end, the assertion's
    # re-signing); 0: never reuse it.
    until: float = 0.0
    session_id: str = ""  # the session this answer was built from (a change ends its reuse)
    # For the decision log: the policy block that let it in (as `explain` names it), and who.
    rule: str = ""
    user: str = ""
    response_cookies: tuple[str, ...] = ()  # Set-Cookie values for the client (a fast-lane pass)


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the client directly (redirect, page, JSON); the upstream sees nothing."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    cookies: tuple[str, ...] = field(default=())  # Set-Cookie values
    # For the decision log and metrics (ops/decision_log.py): set where the handler knows
    # better than the status does (a sign-in redirect, a policy refusal), with rule and user.
    outcome: str = ""
    rule: str = ""
    user: str = ""


Decision = Allow | Respond
