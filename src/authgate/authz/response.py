"""The one place a Decision becomes an Envoy CheckResponse."""

from google.rpc import code_pb2, status_pb2

from authgate._pb.envoy.config.core.v3 import base_pb2
from authgate._pb.envoy.service.auth.v3 import external_auth_pb2
from authgate._pb.envoy.type.v3 import http_status_pb2
from authgate.authz.decision import Allow, Decision, Respond

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
_OK = status_pb2.Status(code=code_pb2.OK)


def _header(name: str, value: str, action: int) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=action,  # type: ignore[arg-type]
    )


def to_check_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    if isinstance(decision, Allow):
        return external_auth_pb2.CheckResponse(
            status=_OK,
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_header(k, v, _OVERWRITE) for k, v in decision.set_headers],
                headers_to_remove=list(decision.remove_headers),
                response_headers_to_add=[
                    _header("set-cookie", c, _APPEND) for c in decision.response_cookies
                ],
            ),
        )
    return _denied(decision)


def _denied(answer: Respond) -> external_auth_pb2.CheckResponse:
    headers = [_header(k, v, _OVERWRITE) for k, v in answer.headers]
    headers += [_header("set-cookie", c, _APPEND) for c in answer.cookies]
    code = code_pb2.UNAUTHENTICATED if answer.status == 401 else code_pb2.PERMISSION_DENIED
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=answer.status),  # type: ignore[arg-type]
            headers=headers,
            body=answer.body,
        ),
    )
