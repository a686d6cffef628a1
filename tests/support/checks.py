"""CheckRequests as Envoy builds them, for tests that call the authz handlers directly."""

from authgate._pb.envoy.service.auth.v3 import external_auth_pb2


def check_request(
    route_id: str,
    host: str,
    path: str = "/",
    headers: dict[str, str] | None = None,
    kind: str = "route",
    method: str = "GET",
    scheme: str = "http",
    source: str = "10.0.0.7",
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.scheme = scheme
    http.host = host
    http.path = path
    http.headers.update(headers or {})
    request.attributes.context_extensions.update({"route_id": route_id, "kind": kind})
    request.attributes.source.address.socket_address.address = source
    return request
