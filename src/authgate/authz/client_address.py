"""The client address a policy's `source_ip` sees: the TCP peer, or behind balancers
(`xff_num_trusted_hops`) the address the generated Envoy computed from X-Forwarded-For
(see authgate.envoy.client_address)."""

from dataclasses import replace

from authgate.authz.context import RequestContext
from authgate.config.schema import Settings
from authgate.contract import CLIENT_ADDRESS_HEADER


def with_client_address(settings: Settings, ctx: RequestContext) -> RequestContext:
    # Only the generated Envoy overwrites the header; behind another Envoy, a client could
    # have written it, so the peer address stands.
    if settings.xff_num_trusted_hops <= 0 or not ctx.generated_envoy:
        return ctx
    computed = ctx.headers.get(CLIENT_ADDRESS_HEADER, "")
    return replace(ctx, source_ip=computed) if computed else ctx
