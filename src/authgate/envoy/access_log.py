"""Envoy's access log: one JSON line per request on Envoy's stdout.

Only what an operator needs to follow a request (the request id matches authgate's decision
line): never the query string, Cookie, Authorization or Set-Cookie."""

from envoy_data_plane.envoy.config.accesslog.v3 import AccessLog
from envoy_data_plane.envoy.config.core.v3 import SubstitutionFormatString
from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
from envoy_data_plane.google.protobuf import Any as AnyProto
from envoy_data_plane.google.protobuf import Struct

FIELDS = {
    "start_time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    "authority": "%REQ(:AUTHORITY)%",
    "path": "%PATH(NQ)%",  # without the query (codes and tokens travel there)
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "user_agent": "%REQ(USER-AGENT)%",
}


def access_log() -> AccessLog:
    stdout = StdoutAccessLog(
        log_format=SubstitutionFormatString(json_format=Struct.from_dict(FIELDS))
    )
    return AccessLog(name="envoy.access_loggers.stdout", typed_config=AnyProto.pack(stdout))
