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
    raw_headers: list[tuple[str, bytes]] | None = None,
    extensions: bool = True,
) -> external_auth_pb2.CheckRequest:
    """`raw_headers`: sent as Envoy does with encode_raw_headers (instead of `headers`), repeated
    names kept apart. `extensions=False`: as an Envoy the user wrote sends it (no route id)."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = method
    http.scheme = scheme
    http.host = host
    http.path = path
    if raw_headers is not None:
        for name, value in raw_headers:
            http.header_map.headers.add(key=name, raw_value=value)
    else:
        http.headers.update(headers or {})
    if extensions:
        request.attributes.context_extensions.update({"route_id": route_id, "kind": kind})
    request.attributes.source.address.socket_address.address = source
    return request
