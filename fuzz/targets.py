"""Fuzz targets shared by the hypothesis tests (tests/unit/test_fuzz_*.py, bounded, in CI) and
the atheris harness (fuzz/run.py, `make fuzz`, coverage-guided, as long as you like).

Each `check_*` function feeds one input to one part of authgate and checks its contract:

* it returns normally or raises a documented error type (`ConfigError` for config and policy;
  nothing at all for the request path, where bad input means "no session" or a 4xx);
* what it returns keeps the security promise (a redirect stays on the route, no client identity
  header survives, a mangled token never opens as something else, ...).

A contract violation raises AssertionError; any other exception escaping is a finding too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from authgate._pb.envoy.service.auth.v3 import external_auth_pb2
from authgate.authn.handoff import accept_hand_off
from authgate.authz.access import forward
from authgate.authz.context import RequestContext
from authgate.authz.decision import Allow, Respond
from authgate.authz.redirects import safe_redirect
from authgate.authz.response import to_check_response
from authgate.authz.service import decide, request_context
from authgate.authz.state import AuthzState
from authgate.config import build_runtime, load_settings, settings_from_mapping
from authgate.config.runtime import RouteRuntime, generate_signing_key_b64
from authgate.errors import ConfigError
from authgate.policy import Identity, PolicyInput, compile_policy
from authgate.session import Session
from authgate.session.cookies import cookie_header_without, parse_cookie_header
from authgate.session.record import IdpTokens
from authgate.session.reference import ReferenceCodec, SessionRef
from authgate.session.store import SqliteStore

ORIGIN = "https://app.test:8443"
HOST = "app.test:8443"
OUR_HEADERS = frozenset(
    {
        "x-pomerium-jwt-assertion",
        "x-pomerium-claim-email",
        "x-pomerium-claim-user",
        "x-pomerium-claim-name",
        "x-pomerium-claim-groups",
    }
)

# ---------------------------------------------------------------------------- a worker's state


def base_config() -> dict[str, Any]:
    return {
        "address": "127.0.0.1:8443",
        "insecure_server": False,
        "certificate_file": "/nonexistent/cert.pem",
        "certificate_key_file": "/nonexistent/key.pem",
        "authenticate_service_url": "https://authenticate.test:8443",
        # Nothing listens on port 9 (discard): nothing here reaches an IdP anyway.
        "idp_provider_url": "http://127.0.0.1:9",
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "signing_key": _signing_key(),
        "cookie_secret": base64.b64encode(b"k" * 32).decode(),
        "jwt_claims_headers": ["email", "user", "name", "groups"],  # the four OUR_HEADERS name
        "routes": [
            {
                "from": ORIGIN,
                "to": "http://127.0.0.1:9",
                "pass_identity_headers": True,
                "policy": [{"allow": {"and": [{"domain": {"is": "example.com"}}]}}],
            },
            {
                "from": "https://public.test:8443",
                "to": "http://127.0.0.1:9",
                "allow_public_unauthenticated_access": True,
            },
        ],
    }


@cache
def _signing_key() -> str:
    return generate_signing_key_b64()


@cache
def worker_state() -> AuthzState:
    """An authz worker's state, as `authgate authz` builds it (no I/O until an IdP call), with
    its embedded session store in a directory of its own (never the user's state directory)."""
    store_dir = Path(tempfile.mkdtemp(prefix="authgate-fuzz-store-"))
    return AuthzState.build(
        build_runtime(settings_from_mapping(base_config(), environ={}), warn=False),
        store=SqliteStore(store_dir / "sessions.db"),
    )


def app_route() -> RouteRuntime:
    return worker_state().cfg.routes_by_id["route-0"]


@cache
def genuine_session() -> Session:
    """A signed-in session, in the worker's store (started before any event loop runs)."""
    claims = {"sub": "alice", "email": "alice@example.com"}
    return asyncio.run(worker_state().sessions.start(claims, IdpTokens(), 3600))


def genuine_ref() -> SessionRef:
    session = genuine_session()
    return SessionRef(session.sid, session.issued_at, session.expires_at)


@cache
def genuine_cookie() -> str:
    return worker_state().sessions.cookie_value(genuine_session(), HOST)


def context(
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    *,
    kind: str = "route",
    route_id: str = "route-0",
    method: str = "GET",
    host: str = HOST,
) -> RequestContext:
    return RequestContext(
        route_id=route_id,
        kind=kind,
        method=method,
        scheme="https",
        host=host,
        path=path,
        headers=dict(headers or {}),
        source_ip="127.0.0.1",
    )


# ---------------------------------------------------------------------------- cookie codec


def check_cookie_value(value: str) -> None:
    """Any cookie value: no session, or (only for the genuine value) exactly the session."""
    state = worker_state()
    ref = state.sessions.reference(value, HOST)
    if value != genuine_cookie():
        assert ref is None, f"a value that is not ours opened: {value[:80]!r}"
    else:
        assert ref == genuine_ref()
    # the same value is never a session on another host
    assert state.sessions.reference(value, "public.test:8443") is None


def check_cookie_mutation(position: int, replacement: str, cut: int) -> None:
    """A genuine cookie with one change (replace a run, cut the tail) never opens."""
    good = genuine_cookie()
    i = position % len(good)
    mutated = good[:i] + replacement + good[i + 1 :]
    if cut:
        mutated = mutated[: -(cut % len(mutated)) or None]
    if mutated != good:
        check_cookie_value(mutated)
    # a fresh codec (no decode cache) agrees
    if mutated != good:
        assert ReferenceCodec(b"k" * 32).decode(mutated, HOST) is None


def check_cookie_header(header: str) -> None:
    """Parsing never fails; stripping our cookies removes exactly ours and keeps the rest."""
    state = worker_state()
    pairs = parse_cookie_header(header)
    stripped = cookie_header_without(header, state.own_cookies)
    after = parse_cookie_header(stripped)
    assert not [name for name, _ in after if name in state.own_cookies]
    assert [p for p in pairs if p[0] not in state.own_cookies] == after


# ---------------------------------------------------------------------------- hand-off parser


def check_handoff_token(token: str, nonce: str) -> None:
    """/.pomerium/callback?handoff=<token> with a nonce cookie: 400, never an exception."""
    state = worker_state()
    ctx = context(
        "/.pomerium/callback?handoff=" + token,
        {"cookie": f"{state.login_cookie}={nonce}", "accept": "text/html"},
        kind="internal",
    )
    answer = asyncio.run(accept_hand_off(state, app_route(), ctx))
    assert isinstance(answer, Respond)
    assert answer.status == 400, "a hand-off nobody sealed was accepted"


def check_handoff_payload(payload: object, nonce: str) -> None:
    """A hand-off sealed with the real key but with any content: 302 to the route with a
    session only when every part is right (its nonce, its expiry, a target on the route, a
    first use, and a reference to a session live in the store), else 400."""
    state = worker_state()
    token = state.handoff_box.box.seal(payload, bound_to=HOST)  # type: ignore[arg-type]
    ctx = context(
        f"/.pomerium/callback?handoff={token}",
        {"cookie": f"{state.login_cookie}={nonce}", "accept": "text/html"},
        kind="internal",
    )
    answer = asyncio.run(accept_hand_off(state, app_route(), ctx))
    assert isinstance(answer, Respond) and answer.status in (302, 400)
    if answer.status == 302:
        assert isinstance(payload, dict)
        location = dict(answer.headers)["location"]
        assert location.startswith(ORIGIN + "/"), location
        assert urlsplit(location).netloc == HOST
        assert payload.get("n") == nonce and isinstance(payload.get("exp"), int)
        assert payload["exp"] >= time.time() - 1
        # The only session in the store: the hand-off named it (its id and its start).
        named = payload.get("s")
        assert isinstance(named, dict)
        assert (named.get("sid"), named.get("iat")) == (genuine_ref().sid, genuine_ref().issued_at)
        session_cookie = next(c for c in answer.cookies if c.startswith(state.session_cookie + "="))
        value = session_cookie.split(";")[0].partition("=")[2]
        # The cookie set is a reference to that very session, as the store has it.
        assert state.sessions.reference(value, HOST) == genuine_ref()


# ---------------------------------------------------------------------------- redirects


def check_redirect(candidate: str) -> None:
    result = safe_redirect(candidate, ORIGIN)
    if result is None:
        return
    assert result.startswith(ORIGIN + "/"), result
    assert not any(c in result for c in "\\\t\r\n \x00"), result
    parts = urlsplit(result)
    assert (parts.scheme, parts.netloc, parts.username) == ("https", HOST, None)
    try:
        import ada_url

        url = ada_url.URL(result)
        assert (url.protocol, url.hostname, url.port) == ("https:", "app.test", "8443"), result
    except ImportError:  # pragma: no cover - the test extra installs it
        pass
    assert safe_redirect(result, ORIGIN) == result  # a safe answer is a fixed point


# ---------------------------------------------------------------------------- header sanitiser


def check_forward(headers: dict[str, str], signed_in: bool) -> None:
    """Whatever the client sent (names as Envoy passes them: lower case), the upstream gets
    no x-pomerium header of the client's and none of our cookies."""
    state = worker_state()
    headers = {k.lower(): v for k, v in headers.items()}
    session = genuine_session() if signed_in else None
    ctx = context("/", headers)
    allow = forward(state, app_route(), ctx, session)
    assert isinstance(allow, Allow)
    set_names = [name for name, _ in allow.set_headers]
    assert len(set_names) == len(set(set_names))
    for name in headers:
        if name.replace("_", "-").startswith("x-pomerium"):
            assert name in allow.remove_headers or name in set_names, name
    ours = {n for n in set_names if n.startswith("x-pomerium")}
    assert ours <= OUR_HEADERS and (ours == OUR_HEADERS) is signed_in
    final_cookie = dict(allow.set_headers).get("cookie")
    if "cookie" in headers and "cookie" not in allow.remove_headers:
        sent = final_cookie if final_cookie is not None else headers["cookie"]
        names = [n for n, _ in parse_cookie_header(sent)]
        assert not state.own_cookies.intersection(names), sent
    # and it turns into a CheckResponse
    to_check_response(allow)


# ---------------------------------------------------------------------------- config loader


def check_config_mapping(raw: object, tmp: Path) -> None:
    """Any mapping as a config: Settings, or ConfigError; a RuntimeConfig, or ConfigError."""
    try:
        settings = settings_from_mapping(raw, base=tmp, environ={})
        build_runtime(settings, warn=False)
    except ConfigError as exc:
        assert str(exc)


def check_config_text(text: str, tmp: Path) -> None:
    path = tmp / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        build_runtime(load_settings(path, environ={}), warn=False)
    except ConfigError as exc:
        assert str(exc)


def config_with(
    changes: Mapping[str, object], route_changes: Mapping[str, object]
) -> dict[str, Any]:
    raw = base_config()
    raw.update(changes)
    routes = raw.get("routes")
    if isinstance(routes, list) and routes and isinstance(routes[0], dict):
        routes[0] = {**routes[0], **route_changes}
    # secret files only inside the test's directory (a config is trusted input: no /dev/zero)
    for key in ("cookie_secret_file", "signing_key_file", "idp_client_secret_file"):
        if key in raw:
            raw[key] = os.path.basename(str(raw[key])) or "x"
    return raw


# ---------------------------------------------------------------------------- policy compiler


def check_policy(document: object, identity: Identity | None, method: str, path: str) -> None:
    """Any policy document compiles or raises ConfigError; a compiled one always decides."""
    try:
        policy = compile_policy(document, where="routes[0].policy")
    except ConfigError as exc:
        assert str(exc)
        return
    for who in (identity, None):
        decision = policy.allowed(PolicyInput(identity=who, method=method, path=path))
        assert isinstance(decision, bool)
    assert isinstance(policy.needs_identity(), bool)


def check_policy_yaml(text: str) -> None:
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return  # not YAML, or too deep for PyYAML itself
    check_policy(document, Identity(user="u", email="a@example.com"), "GET", "/")


# ---------------------------------------------------------------------------- the whole Check


ALLOWED_STATUSES = {200, 302, 400, 401, 403, 404, 503}


def check_request(
    kind: str,
    route_id: str,
    method: str,
    host: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """A CheckRequest as Envoy would send it -> decide() -> CheckResponse, never an exception."""
    request = external_auth_pb2.CheckRequest()
    attrs = request.attributes
    attrs.context_extensions["kind"] = kind
    attrs.context_extensions["route_id"] = route_id
    http = attrs.request.http
    http.method, http.host, http.path, http.scheme = method, host, path, "https"
    for name, value in headers.items():
        http.headers[name.lower()] = value
    attrs.source.address.socket_address.address = "127.0.0.1"
    worker_state().allow_memo.probe(attrs)  # the fast path reads the request first
    ctx = request_context(request)
    decision = asyncio.run(decide(worker_state(), ctx))
    to_check_response(decision)
    if isinstance(decision, Allow):
        # only an application route the policy lets through is forwarded
        assert kind == "route" and route_id in worker_state().cfg.routes_by_id
        if route_id == "route-0":
            assert "x-pomerium-claim-email" in dict(decision.set_headers)
        return
    assert decision.status in ALLOWED_STATUSES, (decision.status, decision.body[:200])
    if decision.status == 503:
        assert "Configuration mismatch" in decision.body or "unknown_route" in decision.body
    if decision.status == 302:
        location = dict(decision.headers)["location"]
        assert location.startswith(
            (
                "https://app.test:8443/",
                "https://public.test:8443/",
                "https://authenticate.test:8443/",
            )
        ), location


def check_json_payload_bytes(data: bytes, nonce: str) -> None:
    """For atheris: bytes -> JSON (if they are) -> a sealed hand-off payload."""
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return
    check_handoff_payload(payload, nonce)
