"""One JSON line and one metric sample per Check decision.

The line names the request (Envoy's x-request-id), the route, host and path (never the query:
it carries codes and tokens), who asked, the outcome, the policy rule that decided (as
`authgate explain` names it) and the latency. Nothing else of the request is read: no cookie,
header value, token or secret can reach the log."""

from dataclasses import dataclass
from time import perf_counter

from authgate._pb.envoy.service.auth.v3 import attribute_context_pb2
from authgate.authz.context import RequestContext
from authgate.authz.decision import Allow, Decision
from authgate.contract import EXT_ROUTE_ID, RouteKind
from authgate.logs import info_line
from authgate.ops.metrics import ALLOW, DENY, ENDPOINT, ERROR, check_observer
from authgate.policy import PolicyInput
from authgate.policy.explanation import Explanation
from authgate.policy.ppl import CompiledPolicy

_OWN_PAGES = frozenset({RouteKind.INTERNAL.value, RouteKind.AUTHENTICATE.value})
# A client chooses these lengths (behind your own Envoy, the request id too): lines stay bounded.
MAX_PATH = 1024
MAX_ID = 128


@dataclass(frozen=True, slots=True)
class Note:
    """What a kept answer logs again on every reuse (allow_memo keeps it with the answer)."""

    route: str
    user: str
    rule: str


NO_SESSION = "not signed in"
NO_ALLOW = "no allow matched"


def allow_rule(policy: CompiledPolicy, inp: PolicyInput) -> str:
    """The first allow block that lets `inp` in, by its label (`allow[0]`, `allowed_domains`,
    as `explain` names it). Only on the full path; kept answers keep it."""
    return next((node.label for node in policy.allows if node.test(inp)), "")


def deny_rule(explained: Explanation) -> str:
    return explained.matched_deny or NO_ALLOW


def note_of(route_id: str, decision: Allow) -> Note:
    return Note(route_id, decision.user, decision.rule)


def outcome_of(kind: str, decision: Decision) -> str:
    if isinstance(decision, Allow):
        return ALLOW
    if decision.outcome:
        return decision.outcome
    if decision.status >= 500:
        return ERROR
    if decision.status >= 400 and kind not in _OWN_PAGES:
        return DENY  # a route's refusal, or a request no route serves
    return ENDPOINT


def _emit(
    request_id: str,
    route: str,
    host: str,
    path: str,
    user: str,
    outcome: str,
    rule: str,
    seconds: float,
) -> None:
    inc, observe = check_observer(route, outcome)
    inc()
    observe(seconds)
    info_line(
        {
            "event": "decision",
            "request_id": request_id,
            "route": route,
            "host": host,
            "path": path[:MAX_PATH],
            "user": user or None,
            "outcome": outcome,
            "rule": rule or None,
            "latency_ms": round(seconds * 1000.0, 3),
        }
    )


def record(ctx: RequestContext, decision: Decision, started: float) -> None:
    """A decision made on the full path (ctx as routed)."""
    _emit(
        ctx.headers.get("x-request-id", "")[:MAX_ID],
        ctx.route_id,
        ctx.host,
        ctx.path_only,
        decision.user,
        outcome_of(ctx.kind, decision),
        decision.rule,
        perf_counter() - started,
    )


def _request_id(http: attribute_context_pb2.AttributeContext.HttpRequest) -> str:
    """Envoy's x-request-id (`http.id` is Envoy's stream number, not this)."""
    if http.HasField("header_map"):  # encode_raw_headers: what the generated Envoy sends
        for entry in http.header_map.headers:
            if entry.key == "x-request-id":
                return str(entry.raw_value[:MAX_ID].decode("ascii", "replace"))
        return ""
    return str(http.headers.get("x-request-id", ""))[:MAX_ID]


def record_kept(
    http: attribute_context_pb2.AttributeContext.HttpRequest,
    request_id: str,
    note: Note,
    started: float,
) -> None:
    """A kept allow answered again (no RequestContext is built on this path; the memo read the
    request id in its pass over the headers)."""
    _emit(
        request_id,
        note.route,
        http.host.lower(),
        http.path.partition("?")[0],
        note.user,
        ALLOW,
        note.rule,
        perf_counter() - started,
    )


def record_error(attrs: attribute_context_pb2.AttributeContext, started: float) -> None:
    """A Check that failed with an exception (Envoy answers 503)."""
    http = attrs.request.http
    _emit(
        _request_id(http),
        attrs.context_extensions.get(EXT_ROUTE_ID, ""),
        http.host.lower(),
        http.path.partition("?")[0],
        "",
        ERROR,
        "",
        perf_counter() - started,
    )
