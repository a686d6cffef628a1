"""Pomerium keys authgate deliberately does not support, with why and what to use instead.

One table, read by the loader (a config naming one of these exits 2 with that reason, not
the typo message) and by the README's migration table (a test regenerates it from this table
and the schema: `python -m authgate.config.pomerium_keys` prints it).
"""

from collections.abc import Iterable

from authgate.errors import ConfigError

# key -> why not, and what to do instead (one sentence each, no trailing period).
UNSUPPORTED: dict[str, str] = {
    "autocert": "Envoy serves the certificates you give it; get them from your ACME client "
    "(certbot, cert-manager) and set certificate_file and certificate_key_file",
    "autocert_ca": "there is no built-in ACME client; see autocert",
    "autocert_dir": "there is no built-in ACME client; see autocert",
    "autocert_email": "there is no built-in ACME client; see autocert",
    "autocert_must_staple": "there is no built-in ACME client; see autocert",
    "autocert_use_staging": "there is no built-in ACME client; see autocert",
    "autocert_trusted_ca": "there is no built-in ACME client; see autocert",
    "autocert_eab_key_id": "there is no built-in ACME client; see autocert",
    "autocert_eab_mac_key": "there is no built-in ACME client; see autocert",
    "databroker_service_url": "sessions live in the embedded store or in Redis, not in a "
    "databroker service; remove it and set databroker_storage_type (file or redis)",
    "databroker_internal_service_url": "there is no databroker service; see "
    "databroker_service_url",
    "authorize_service_url": "authgate's authorize workers are started by `authgate run` "
    "(or `authgate authz` behind your Envoy); remove it",
    "authorize_internal_service_url": "there is no separate authorize service; remove it",
    "authenticate_internal_service_url": "the authenticate host is served by the same "
    "Envoy as the routes; remove it",
    "services": "authgate always runs everything in one process tree (`authgate run`); "
    "remove it",
    "shared_secret": "authgate's parts do not talk over a network that needs it; remove it",
    "shared_secret_file": "see shared_secret; remove it",
    "grpc_address": "there is no Pomerium gRPC service; remove it",
    "grpc_insecure": "there is no Pomerium gRPC service; remove it",
    "idp_service_account": "directory sync is not done; groups come from the ID token "
    "(ask the IdP for the `groups` scope); remove it",
    "idp_refresh_directory_interval": "directory sync is not done; see idp_service_account",
    "idp_refresh_directory_timeout": "directory sync is not done; see idp_service_account",
    "cookie_secure": "deprecated in Pomerium; authgate's cookies are Secure whenever it "
    "serves TLS; remove it",
    "envoy_admin_address": "`authgate run` gives Envoy its own admin socket; remove it",
    "envoy_bootstrap_options": "write your own Envoy config and run `authgate authz` beside "
    "it (README: Bring your own Envoy)",
    "tracing_provider": "OpenTelemetry tracing is not built in; remove it",
    "otel_traces_exporter": "OpenTelemetry tracing is not built in; remove it",
    "primary_color": "Pomerium Enterprise branding; authgate's pages are not themable",
    "secondary_color": "Pomerium Enterprise branding; authgate's pages are not themable",
    "logo_url": "Pomerium Enterprise branding; authgate's pages are not themable",
    "favicon_url": "Pomerium Enterprise branding; authgate's pages are not themable",
    "error_message_first_paragraph": "Pomerium Enterprise branding; authgate's pages are "
    "not themable",
    "enable_google_cloud_serverless_authentication": "Google Cloud Run tokens are not "
    "minted; remove it",
    "kubernetes_service_account_token": "Kubernetes API impersonation is not done; remove it",
    "kubernetes_service_account_token_file": "see kubernetes_service_account_token",
    "policy": "at the top level this is Pomerium's old name for the route list; write the "
    "routes under `routes` (a route's own `policy` is its PPL, and supported)",
    "policy_file": "deprecated in Pomerium; write the routes under `routes` in the config",
    "headers": "deprecated in Pomerium; use set_response_headers",
    "allow_spdy": "SPDY upgrades are not proxied; remove it",
}


# Keys authgate adds (Pomerium has no such key); the rest of the schema is Pomerium's.
AUTHGATE_KEYS = frozenset(
    {"session_idle_timeout", "session_refresh_interval", "assertion_claims", "legacy_assertion"}
)


def unsupported_message(key: str) -> str:
    return f"Pomerium's `{key}` is not supported by authgate: {UNSUPPORTED[key]}"


def check_config(raw: dict[object, object], known_top: Iterable[str],
                 known_route: Iterable[str]) -> None:
    """Refuse deliberately unsupported Pomerium keys (only those the schema does not know:
    a key that gains support elsewhere wins over this table)."""
    top = set(known_top)
    route_keys = set(known_route)
    for key in raw:
        if isinstance(key, str) and key in UNSUPPORTED and key not in top:
            raise UnsupportedKey(key)
    routes = raw.get("routes")
    if isinstance(routes, list):
        for index, route in enumerate(routes):
            if isinstance(route, dict):
                for key in route:
                    if isinstance(key, str) and key in UNSUPPORTED and key not in route_keys:
                        raise UnsupportedKey(key, f"routes[{index}]")


class UnsupportedKey(ConfigError):
    """A Pomerium key authgate deliberately does not support (exit 2, like any config error)."""

    def __init__(self, key: str, where: str = "") -> None:
        super().__init__(where, unsupported_message(key))
        self.pomerium_key = key


def migration_rows(settings_fields: Iterable[str], route_fields: Iterable[str]) -> list[
        tuple[str, str]]:
    """(key, status) for the README: every key the schema knows, then every refused one."""
    def status(key: str) -> str:
        return "authgate's own key" if key in AUTHGATE_KEYS else "supported"

    rows = [(f"`{k}`", status(k)) for k in sorted(settings_fields) if k != "routes"]
    rows += [(f"`routes[].{k}`", status(k)) for k in sorted(route_fields)]
    rows += [(f"`{k}`", f"not supported: {why}") for k, why in sorted(UNSUPPORTED.items())]
    return rows


def migration_table() -> str:
    """The README's table, generated from the schema and UNSUPPORTED."""
    from authgate.config.schema import Route, Settings

    route_names = [f.alias or name for name, f in Route.model_fields.items()]
    lines = ["| Key | In authgate |", "| --- | --- |"]
    lines += [f"| {key} | {status} |" for key, status in
              migration_rows(Settings.model_fields, route_names)]
    return "\n".join(lines) + "\n"


MARKERS = ("<!-- migration-table:start -->\n", "<!-- migration-table:end -->")


def with_table(readme: str) -> str:
    """`readme` with the text between the markers replaced by the generated table."""
    start, end = MARKERS
    head, _, rest = readme.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}{migration_table()}{end}{tail}"


if __name__ == "__main__":
    print(migration_table(), end="")
