"""Routes that answer without an upstream: Pomerium's `redirect` and `response`. The policy
still applies (ext_authz runs before Envoy's router answers)."""

from collections.abc import Callable
from typing import Any

from envoy_data_plane.envoy.config.core.v3 import DataSource
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    RedirectAction,
    RedirectActionRedirectResponseCode,
    RouteAction,
)

from authgate.config.runtime import RouteRuntime
from authgate.config.tls_schema import RedirectOption, ResponseOption

_CODES = {
    301: RedirectActionRedirectResponseCode.MOVED_PERMANENTLY,
    302: RedirectActionRedirectResponseCode.FOUND,
    303: RedirectActionRedirectResponseCode.SEE_OTHER,
    307: RedirectActionRedirectResponseCode.TEMPORARY_REDIRECT,
    308: RedirectActionRedirectResponseCode.PERMANENT_REDIRECT,
}


def redirect_action(option: RedirectOption) -> RedirectAction:
    action = RedirectAction()
    if option.https_redirect:
        action.https_redirect = True
    if option.scheme_redirect:
        action.scheme_redirect = option.scheme_redirect
    if option.host_redirect:
        action.host_redirect = option.host_redirect
    if option.port_redirect:
        action.port_redirect = option.port_redirect
    if option.path_redirect is not None:
        action.path_redirect = option.path_redirect
    if option.prefix_rewrite is not None:
        action.prefix_rewrite = option.prefix_rewrite
    if option.response_code is not None:
        action.response_code = _CODES[option.response_code]
    if option.strip_query:
        action.strip_query = True
    return action


def direct_response(option: ResponseOption) -> DirectResponseAction:
    response = DirectResponseAction(status=option.status)
    if option.body:
        response.body = DataSource(inline_string=option.body)
    return response


def route_target(rt: RouteRuntime, to_upstream: Callable[[RouteRuntime], RouteAction]) -> dict[
    str, Any
]:
    """The Envoy Route field that says what the route does: `redirect`, `direct_response`,
    or `route` to the upstream cluster (built by `to_upstream`)."""
    route = rt.route
    if route.redirect is not None:
        return {"redirect": redirect_action(route.redirect)}
    if route.response is not None:
        return {"direct_response": direct_response(route.response)}
    return {"route": to_upstream(rt)}
