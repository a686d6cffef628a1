"""The fast path: a signed-in user's requests repeat, so their OK answers are kept, serialized.

A key holds every input the answer depends on: the route, every Cookie header (the session,
and the cookies to strip; raw bytes when Envoy encodes raw headers), the header names (which
spoofed ones to remove), and what the route's policy reads besides the identity (method and
path, client address, CORS headers). A policy with
date/time criteria is never cached. An entry ends when the session does or the assertion in it is
due to be re-signed, whichever is first; only allows are kept, every refusal takes the full path.
Keys are read straight from the CheckRequest, without building a RequestContext: on a hit, that
is all the Python a Check runs. Keys are exact (no digest that could collide); the memo is
bounded both in entries and in bytes, since a client chooses the size of its Cookie header and
header names (up to Envoy's 60 KiB).
"""

import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from authgate._pb.envoy.service.auth.v3 import attribute_context_pb2
from authgate.config import RuntimeConfig
from authgate.contract import CLIENT_ADDRESS_HEADER, EXT_KIND, EXT_ROUTE_ID, RouteKind
from authgate.ops.decision_log import MAX_ID, Note
from authgate.ops.metrics import CacheCounter
from authgate.policy.ppl import (
    SCOPE_CERTIFICATE,
    SCOPE_CORS,
    SCOPE_INTERNAL,
    SCOPE_NETWORK,
    SCOPE_REQUEST,
    SCOPE_TIME,
    CompiledPolicy,
)

Key = tuple[object, ...]
_CORS_HEADERS = ("origin", "access-control-request-method")
_CORS = frozenset(_CORS_HEADERS)
MAX_ENTRIES = 10_000
MAX_BYTES = 24 * 1024 * 1024  # keys and answers together, per worker
MAX_ENTRY_BYTES = 16 * 1024  # a larger request or answer always takes the full path
_LOOKUPS = CacheCounter("allow_memo")
_NO_NOTE = Note("", "", "")


def weight(key: Key, answer: bytes) -> int:
    """Bytes of text an entry holds (what a client can make large)."""
    size = len(answer)
    for part in key:
        if isinstance(part, str | bytes):
            size += len(part)
        elif isinstance(part, tuple):
            size += sum(len(item) for item in part)
    return size


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """Which request inputs, besides route, cookies and header names, a route's answer reads."""

    request: bool = False  # method and path
    network: bool = False  # client address
    cors: bool = False  # method, Origin and Access-Control-Request-Method values
    certificate: bool = False  # the client's certificate (downstream mTLS)


def plan_for(policy: CompiledPolicy) -> KeyPlan | None:
    """None for a policy whose answer changes with the clock alone."""
    scopes = policy.scopes()
    if SCOPE_TIME in scopes:
        return None
    return KeyPlan(
        request=bool(scopes & {SCOPE_REQUEST, SCOPE_INTERNAL}),
        network=SCOPE_NETWORK in scopes,
        cors=SCOPE_CORS in scopes,
        certificate=SCOPE_CERTIFICATE in scopes,
    )


def _client_address(http: attribute_context_pb2.AttributeContext.HttpRequest) -> bytes | str:
    """The address the generated Envoy computed behind balancers (CLIENT_ADDRESS_HEADER)."""
    if http.HasField("header_map"):
        for entry in http.header_map.headers:
            if entry.key == CLIENT_ADDRESS_HEADER:
                return bytes(entry.raw_value)
        return b""
    return str(http.headers.get(CLIENT_ADDRESS_HEADER, ""))


class AllowMemo:
    """LRU of serialized OK answers, each with the time it stops being valid; at most `limit`
    entries and `max_bytes` of keys and answers."""

    def __init__(
        self, plans: dict[str, KeyPlan], limit: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES
    ) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.bytes = 0
        self._plans = plans
        # answer, valid until, weight, session id, what the decision log says on reuse
        self._entries: OrderedDict[Key, tuple[bytes, float, int, str, Note]] = OrderedDict()
        # A session that changes (refreshed, revoked) takes its answers with it.
        self._by_session: dict[str, set[Key]] = {}

    @classmethod
    def for_config(
        cls, cfg: RuntimeConfig, limit: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES
    ) -> "AllowMemo":
        plans = {}
        for route_id, route in cfg.routes_by_id.items():
            plan = plan_for(route.policy)
            if plan is not None and route.route.cors_allow_preflight:
                plan = replace(plan, cors=True)  # a preflight passes without a session
            if plan is not None:
                # With client certificates, every answer is for one certificate (or none).
                mtls = cfg.settings.downstream_mtls is not None
                plans[route_id] = replace(plan, certificate=True) if mtls else plan
        return cls(plans, limit, max_bytes)

    def probe(self, attrs: attribute_context_pb2.AttributeContext) -> tuple[Key, str] | None:
        """The request's key and Envoy's x-request-id (for the decision line; read in the same
        pass over the headers), or None when its answer is never cached."""
        ext = attrs.context_extensions
        if ext.get(EXT_KIND) != RouteKind.ROUTE:
            return None
        route_id = ext.get(EXT_ROUTE_ID, "")
        plan = self._plans.get(route_id)
        if plan is None:
            return None
        http = attrs.request.http
        if http.HasField("header_map"):  # encode_raw_headers: what the generated Envoy sends
            names = []
            cookies = []
            request_id = b""
            for entry in http.header_map.headers:
                name = entry.key
                names.append(name)
                if name == "cookie":
                    cookies.append(entry.raw_value)
                elif name == "x-request-id":
                    request_id = entry.raw_value
            if "authorization" in names or "x-pomerium-authorization" in names:
                return None  # the answer depends on a token: always the full path
            key: Key = (route_id, tuple(cookies), tuple(names))
            rid = request_id[:MAX_ID].decode("ascii", "replace")
            if plan.cors:
                values = {e.key: e.raw_value for e in http.header_map.headers if e.key in _CORS}
                key += (http.method, *(values.get(h) for h in _CORS_HEADERS))
        else:
            headers = http.headers
            if "authorization" in headers or "x-pomerium-authorization" in headers:
                return None
            key = (route_id, headers.get("cookie"), tuple(headers))
            rid = headers.get("x-request-id", "")[:MAX_ID]
            if plan.cors:
                key += (http.method, *(headers.get(h) for h in _CORS_HEADERS))
        if plan.request:
            key += (http.method, http.path.partition("?")[0])
        if plan.network:
            key += (attrs.source.address.socket_address.address, _client_address(http))
        if plan.certificate:
            key += (attrs.source.certificate,)
        return key, rid

    def lookup(self, key: Key) -> tuple[bytes, Note] | None:
        """The kept answer and its decision-log note, while still valid."""
        entry = self._entries.get(key)
        if entry is not None:
            if time.time() < entry[1]:
                self._entries.move_to_end(key)
                _LOOKUPS.hit()
                return entry[0], entry[4]
            self._drop(key)
        _LOOKUPS.miss()
        return None

    def get(self, key: Key) -> bytes | None:
        found = self.lookup(key)
        return None if found is None else found[0]

    def put(
        self,
        key: Key,
        answer: bytes,
        until: float,
        session_id: str = "",
        note: Note = _NO_NOTE,
    ) -> None:
        size = weight(key, answer)
        if until <= time.time() or size > min(MAX_ENTRY_BYTES, self.max_bytes):
            return
        self._drop(key)
        self._entries[key] = (answer, until, size, session_id, note)
        self.bytes += size
        if session_id:
            self._by_session.setdefault(session_id, set()).add(key)
        while len(self._entries) > self.limit or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def forget_session(self, session_id: str) -> None:
        """Drop every answer built from this session; "" drops everything."""
        if not session_id:
            self._entries.clear()
            self._by_session.clear()
            self.bytes = 0
            return
        for key in self._by_session.pop(session_id, ()):
            self._drop(key)

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry[2]
        if entry[3]:
            keys = self._by_session.get(entry[3])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_session[entry[3]]

    def __len__(self) -> int:
        return len(self._entries)
