"""Route `redirect`/`response` and the upstream cluster's balancing keys: the schema and the
generated Envoy config (`envoy --mode validate` of them all: test_tls_options.py; behaviour:
tests/integration/test_redirect_response_routes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from authgate.errors import ConfigError
from tests.support.bootstrap_doc import bootstrap, clusters, context, route, runtime, vhosts


def only(routes_: list[dict[str, Any]]) -> dict[str, Any]:
    doc = bootstrap(runtime(routes_))
    return doc


def action_route(**options: Any) -> dict[str, Any]:
    doc = bootstrap(runtime([route("http://a.test", [], id="r", **options)]))
    (found,) = [r for r in vhosts(doc)["a.test"]["routes"] if r.get("name") == "r"]
    assert "upstream-r" not in clusters(doc)
    assert context(found) == {"route_id": "r", "kind": "route"}  # the policy still runs
    assert "route" not in found
    return found


def refused(match: str, **options: Any) -> None:
    to = options.pop("to", "http://10.0.0.1")
    with pytest.raises(ConfigError, match=match):
        runtime([route("http://a.test", to, **options)])


def test_redirect_route_maps_every_field() -> None:
    found = action_route(redirect={
        "https_redirect": True, "host_redirect": "b.test", "port_redirect": 8443,
        "prefix_rewrite": "/new/", "response_code": 307, "strip_query": True})
    assert found["redirect"] == {
        "https_redirect": True, "host_redirect": "b.test", "port_redirect": 8443,
        "prefix_rewrite": "/new/", "response_code": "TEMPORARY_REDIRECT", "strip_query": True}


def test_response_route() -> None:
    found = action_route(response={"status": 503, "body": "down for maintenance"})
    assert found["direct_response"] == {
        "status": 503, "body": {"inline_string": "down for maintenance"}}
    assert action_route(response={"status": 204})["direct_response"] == {"status": 204}
    assert action_route(response={"body": "hi"})["direct_response"]["status"] == 200


@pytest.mark.parametrize("options, match", [
    ({"redirect": {"response_code": 200}}, "is not one of 301, 302"),
    ({"redirect": {"path_redirect": "x"}}, "must start with '/'"),
    ({"redirect": {"path_redirect": "/a", "prefix_rewrite": "/b"}}, "either path_redirect"),
    ({"redirect": {"bogus": 1}}, "bogus"),
    ({"response": {"status": 99}}, "status"),
    ({"response": {"status": 200}, "redirect": {"https_redirect": True}}, "either `redirect`"),
    ({"response": {"status": 200}, "to": "http://10.0.0.1"}, "remove `to`"),
    ({"to": []}, "`to` needs at least one upstream"),
    ({"to": [], "response": {"status": 200}, "load_balancing_policy": "RANDOM"},
     "load_balancing_policy needs an upstream"),
])
def test_route_action_problems(options: dict[str, Any], match: str) -> None:
    refused(match, **options)


def test_balancing_options_reach_the_cluster() -> None:
    doc = only([route("http://a.test", ["http://10.0.0.1", "http://10.0.0.2"], id="r",
                      load_balancing_policy="MAGLEV",
                      health_checks=[{"timeout": "2s", "interval": "10s",
                                      "unhealthy_threshold": 3, "healthy_threshold": 2,
                                      "tcp_health_check": {}}],
                      outlier_detection={"consecutive_5xx": 5, "interval": "10s",
                                         "enforcing_consecutive_5xx": 100})])
    cluster = clusters(doc)["upstream-r"]
    assert cluster["lb_policy"] == "MAGLEV"
    (check,) = cluster["health_checks"]
    assert check["timeout"] == "2s" and check["unhealthy_threshold"] == 3
    assert "tcp_health_check" in check
    assert cluster["outlier_detection"] == {
        "consecutive_5xx": 5, "interval": "10s", "enforcing_consecutive_5xx": 100}


def test_default_balancing_is_round_robin_without_checks() -> None:
    cluster = clusters(only([route("http://a.test", "http://10.0.0.1", id="r")]))["upstream-r"]
    assert cluster.get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"  # proto3 omits the default
    assert "health_checks" not in cluster and "outlier_detection" not in cluster


@pytest.mark.parametrize("options, match", [
    ({"load_balancing_policy": "FASTEST"}, "load_balancing_policy"),
    ({"health_checks": [{"timeout": "1s", "interval": "5s"}]}, "needs exactly one of"),
    ({"health_checks": [{"timeout": "1s", "interval": "5s", "tcp_health_check": {},
                         "http_health_check": {"path": "/"}}]}, "needs exactly one of"),
    ({"health_checks": [{"interval": "5s", "tcp_health_check": {}}]}, "needs `timeout`"),
    ({"health_checks": [{"timeout": "1s", "interval": "5s", "tcp_health_check": {},
                         "colour": "red"}]}, r"health_checks\[0\] is not an Envoy HealthCheck"),
    ({"outlier_detection": {"consecutive_6xx": 1}}, "not an Envoy OutlierDetection"),
    ({"outlier_detection": {"consecutive_5xx": "many"}}, "not an Envoy OutlierDetection"),
])
def test_balancing_problems(options: dict[str, Any], match: str) -> None:
    refused(match, **options)
