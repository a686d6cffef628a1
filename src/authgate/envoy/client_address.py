"""Behind balancers (`xff_num_trusted_hops`), the client's address for authz.

Envoy computes the client address from X-Forwarded-For and the trusted hops, but ext_authz
reports the TCP peer (the balancer) in `source.address`. So a header_mutation filter ahead of
ext_authz writes Envoy's computed address into CLIENT_ADDRESS_HEADER, replacing whatever a
client sent, and the route config removes it before the app sees the request.
"""

from envoy_data_plane.envoy.config.common.mutation_rules.v3 import (
    HeaderMutation as HeaderMutationRule,
)
from envoy_data_plane.envoy.config.core.v3 import HeaderValue, HeaderValueOption
from envoy_data_plane.envoy.config.core.v3 import (
    HeaderValueOptionHeaderAppendAction as AppendAction,
)
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
    HeaderMutation,
    Mutations,
)
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpFilter,
)
from envoy_data_plane.google.protobuf import Any as AnyProto

from authgate.config.schema import Settings
from authgate.contract import CLIENT_ADDRESS_HEADER

FILTER_NAME = "authgate.client_address"


def uses_client_address_header(settings: Settings) -> bool:
    return settings.xff_num_trusted_hops > 0


def client_address_filter() -> HttpFilter:
    rule = HeaderMutationRule(append=HeaderValueOption(
        header=HeaderValue(key=CLIENT_ADDRESS_HEADER,
                           value="%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        append_action=AppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    ))
    config = HeaderMutation(mutations=Mutations(request_mutations=[rule]))
    return HttpFilter(name=FILTER_NAME, typed_config=AnyProto.pack(config))
