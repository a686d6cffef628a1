"""The Envoy <-> authz contract: the endpoint table, the generated routes and the handlers agree."""

import json
from typing import Any

import pytest

from authgate.authz.service import decide, request_context
from authgate.authz.state import AuthzState
from authgate.config import build_runtime, settings_from_mapping
from authgate.contract import (
    AUTHENTICATE_HOST_ENDPOINTS,
    AUTHENTICATE_ROUTE_ID,
    INTERNAL_PATHS,
    INTERNAL_PREFIXES,
    ROUTE_HOST_ENDPOINTS,
    Endpoint,
    RouteKind,
    is_internal_path,
)
from authgate.envoy import build_bootstrap
from authgate.routing import select
from tests.support.checks import check_request

CONFIG: dict[str, Any] = {
    "address": "127.0.0.1:8080",
    "insecure_server": True,
    "authenticate_service_url": "http://authenticate.test:8080",
    "idp_provider_url": "http://127.0.0.1:9",
    "idp_client_id": "c",
    "idp_client_secret": "s",
    "routes": [
        {"from": "http://app.test:8080", "to": "http://127.0.0.1:1", "prefix": "/app/",
         "allow_any_authenticated_user": True},
        {"from": "http://app.test:8080", "to": "http://127.0.0.1:1",
         "allow_public_unauthenticated_access": True},
    ],
}


def runtime() -> Any:
    return build_runtime(settings_from_mapping(CONFIG, environ={}), warn=False)


def route_hosts_internal_routes(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(match kind, value, context_extensions) of every route Envoy hands to authz as INTERNAL."""
    listener = doc["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    found = []
    for vh in hcm["route_config"]["virtual_hosts"]:
        for r in vh["routes"]:
            per_route = r.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz")
            ext = per_route["check_settings"]["context_extensions"] if per_route else {}
            if ext.get("kind") == RouteKind.INTERNAL:
                kind = "prefix" if "prefix" in r["match"] else "path"
                found.append((kind, r["match"][kind], ext))
    return found


def test_generated_internal_routes_are_the_contracts_table() -> None:
    doc = build_bootstrap(runtime(), ["unix:/tmp/a.sock"], admin_address="127.0.0.1:9901")
    routes = route_hosts_internal_routes(doc)
    assert sorted((k, v) for k, v, _ in routes) == sorted(
        [("prefix", p) for p in INTERNAL_PREFIXES] + [("path", p) for p in INTERNAL_PATHS]
    )


@pytest.mark.parametrize("path", sorted(ROUTE_HOST_ENDPOINTS))
def test_every_route_host_endpoint_reaches_authz_as_internal(path: str) -> None:
    assert is_internal_path(path)
    chosen = select(runtime(), "app.test:8080", path)
    assert chosen.kind == RouteKind.INTERNAL, (path, chosen)


@pytest.mark.parametrize("path", sorted(AUTHENTICATE_HOST_ENDPOINTS))
def test_every_authenticate_host_endpoint_reaches_authz(path: str) -> None:
    chosen = select(runtime(), "authenticate.test:8080", path)
    assert chosen.kind == RouteKind.AUTHENTICATE


def test_every_endpoint_is_in_a_table() -> None:
    listed = {*ROUTE_HOST_ENDPOINTS.values(), *AUTHENTICATE_HOST_ENDPOINTS.values()}
    assert listed == set(Endpoint) - {Endpoint.NOT_FOUND}


async def _answer(host: str, path: str, route_id: str, kind: RouteKind) -> Any:
    state = AuthzState.build(runtime())
    request = check_request(route_id, host, path, {"accept": "application/json"}, kind=kind)
    return await decide(state, request_context(request))


@pytest.mark.parametrize("path", sorted(ROUTE_HOST_ENDPOINTS))
async def test_every_route_host_endpoint_has_a_handler(path: str) -> None:
    answer = await _answer("app.test:8080", path, "route-0", RouteKind.INTERNAL)
    assert not (answer.status == 404 and json.loads(answer.body)["error"] == "not_found")


@pytest.mark.parametrize("path", sorted(AUTHENTICATE_HOST_ENDPOINTS))
async def test_every_authenticate_host_endpoint_has_a_handler(path: str) -> None:
    answer = await _answer(
        "authenticate.test:8080", path, AUTHENTICATE_ROUTE_ID, RouteKind.AUTHENTICATE
    )
    body = answer.body
    assert not (answer.status == 404 and body.startswith("{") and '"not_found"' in body)


async def test_a_path_under_the_internal_prefix_that_is_no_endpoint_is_404() -> None:
    answer = await _answer("app.test:8080", "/.pomerium/nope", "route-0", RouteKind.INTERNAL)
    assert answer.status == 404 and json.loads(answer.body)["error"] == "not_found"
