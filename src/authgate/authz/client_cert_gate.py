"""downstream_mtls `policy_with_default_deny` (Pomerium's default): a request without a
client certificate is refused on every route before its policy runs. authgate's own endpoints
(sign-in, the JWKS apps fetch, /.pomerium/) stay open, as Pomerium's do. (A certificate that
does not verify never reaches authz: Envoy ends that handshake.)"""

from authgate.authz import pages
from authgate.authz.context import RequestContext
from authgate.authz.decision import Respond
from authgate.config.schema import Settings

# nginx's and Pomerium's status for "a client certificate is required"
CERTIFICATE_REQUIRED = 495


def client_certificate_required(settings: Settings, ctx: RequestContext) -> Respond | None:
    mtls = settings.downstream_mtls
    if mtls is None or mtls.enforcement != "policy_with_default_deny" or ctx.client_certificate:
        return None
    return pages.error(
        ctx,
        CERTIFICATE_REQUIRED,
        "Client certificate required",
        "This site needs a client certificate issued by its certificate authority; install one "
        "in your browser or pass it to your client (curl --cert).",
        "client_certificate_required",
    )
