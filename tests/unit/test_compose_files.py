"""The docker-compose stack's files agree with each other.

No Docker and no subprocess: the compose file, the Envoy bootstrap generated from
deploy/compose/config.yaml, the Jenkins JCasC file and the Dockerfiles are read and cross-checked.
That the committed bootstrap matches a fresh generation: tests/integration/test_generated_files.py;
that the real `envoy --mode validate` accepts it: tests/integration/test_envoy_validate.py;
the health checks run for real: tests/integration/test_compose_health.py.
tests/integration/test_compose.py runs the stack itself where a Docker engine answers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from authgate.config import RuntimeConfig, Settings, build_runtime, load_settings
from authgate.config.runtime import generate_cookie_secret, generate_signing_key_b64

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
STACK_CONFIG = REPO_ROOT / "deploy" / "compose" / "config.yaml"
ENVOY_BOOTSTRAP = REPO_ROOT / "envoy" / "compose.yaml"
JENKINS_DIR = REPO_ROOT / "deploy" / "compose" / "jenkins"
CASC_FILE = JENKINS_DIR / "casc.yaml"
DEPLOY_README = REPO_ROOT / "deploy" / "README.md"
ENV_EXAMPLE = REPO_ROOT / "deploy" / "compose" / "env.example"
# Written by the user as deploy/README.md says (git-ignored), not committed.
USER_GENERATED = PurePosixPath("deploy/compose/tls")
SECRETS = ("COOKIE_SECRET", "SIGNING_KEY", "IDP_CLIENT_SECRET")
IN_CONTAINER_CERT = "/etc/envoy/tls/cert.pem"
IN_CONTAINER_KEY = "/etc/envoy/tls/key.pem"
JWKS_PATH = "/.well-known/pomerium/jwks.json"
# The JWT Auth plugin's CasC attributes (its JwtAuthSecurityRealm @DataBoundConstructor).
JWT_AUTH_CASC_KEYS = {
    "headerName",
    "userClaimName",
    "groupsClaimName",
    "groupsClaimSeparator",
    "acceptedIssuer",
    "acceptedAudience",
    "jwksUrl",
    "leewaySeconds",
    "allowVerificationFailures",
    "emailClaimName",
    "fullNameClaim",
    "loginUrl",
}
_DEFAULTED = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}")
_REFERENCE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::?[-?][^}]*)?\}")


# ---------------------------------------------------------------------------- helpers


def _interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """docker compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`, for these files."""
    env = environ or {}
    value = _DEFAULTED.sub(lambda m: env.get(m["name"]) or m["default"], value)
    return _REFERENCE.sub(lambda m: env.get(m["name"], m.group(0)), value)


def _stack_environ() -> dict[str, str]:
    return {
        "COOKIE_SECRET": generate_cookie_secret(),
        "SIGNING_KEY": generate_signing_key_b64(),
        "IDP_CLIENT_SECRET": "compose-test-secret",
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(STACK_CONFIG, environ=_stack_environ())


@pytest.fixture(scope="module")
def runtime(settings: Settings) -> RuntimeConfig:
    return build_runtime(settings, warn=False)


@pytest.fixture(scope="module")
def casc_realm() -> dict[str, Any]:
    casc = yaml.safe_load(CASC_FILE.read_text(encoding="utf-8"))
    realm: dict[str, Any] = casc["jenkins"]["securityRealm"]["jwtAuth"]
    return realm


def _volumes(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The service's volumes in long syntax (short `src:dst[:ro]` strings are converted)."""
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target, *_ = entry.split(":")
            kind = "bind" if source.startswith((".", "/", "$")) else "volume"
            entry = {"type": kind, "source": source, "target": target}
        result.append(entry)
    return result


def _mount_target(service: dict[str, Any], source: str) -> str:
    for volume in _volumes(service):
        if volume["source"] == source:
            return str(volume["target"])
    raise AssertionError(f"no volume {source!r} in {service}")


def _repo_path(source: str) -> PurePosixPath:
    path = PurePosixPath(_interpolate(source))
    assert not path.is_absolute() and ".." not in path.parts, f"{source} leaves the repository"
    return PurePosixPath(*[part for part in path.parts if part != "."])


def _published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host ip, host port) for `ip:host:container` entries."""
    ports: dict[int, tuple[str, int]] = {}
    for entry in service.get("ports", []):
        host_ip, host_port, container_port = str(entry).split(":")
        ports[int(container_port)] = (host_ip, int(host_port))
    return ports


def _aliases(service: dict[str, Any]) -> set[str]:
    return set(service["networks"]["default"]["aliases"])


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "write `environment:` as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def _dockerfile_copy_sources(dockerfile: Path) -> list[str]:
    sources: list[str] = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("<<") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        sources.extend(args[:-1])
    return sources


# ---------------------------------------------------------------------------- (a) the bootstrap


def test_bootstrap_says_it_is_generated_and_holds_no_secret(settings: Settings) -> None:
    text = ENVOY_BOOTSTRAP.read_text(encoding="utf-8")
    assert text.startswith("# Envoy bootstrap for docker-compose.yaml, generated by")
    assert "generated by scripts/gen_compose_envoy.py — do not edit" in text
    raw = yaml.safe_load(STACK_CONFIG.read_text(encoding="utf-8"))
    for key in ("cookie_secret", "signing_key", "idp_client_secret"):
        assert key not in raw, f"{key} belongs in .env, not in deploy/compose/config.yaml"
    for name in SECRETS:
        assert _stack_environ()[name] not in text


def test_bootstrap_fails_closed_and_reaches_the_compose_services(runtime: RuntimeConfig) -> None:
    doc = yaml.safe_load(ENVOY_BOOTSTRAP.read_text(encoding="utf-8"))
    assert "failure_mode_allow: false" in ENVOY_BOOTSTRAP.read_text(encoding="utf-8")
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    (authz,) = clusters["authgate_authz"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert authz["endpoint"]["address"]["socket_address"] == {
        "address": "authgate",
        "port_value": 9191,
    }
    (route,) = runtime.routes
    (jenkins,) = clusters[f"upstream-{route.id}"]["load_assignment"]["endpoints"][0][
        "lb_endpoints"
    ]
    assert jenkins["endpoint"]["address"]["pipe"]["path"] == route.route.upstreams[0].path
    (listener,) = doc["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8443}


# ---------------------------------------------------------------------------- config.yaml


def test_stack_config_loads_with_the_secrets_from_the_environment(
    runtime: RuntimeConfig,
) -> None:
    settings = runtime.settings
    assert settings.tls
    assert settings.certificate_file == IN_CONTAINER_CERT
    assert settings.certificate_key_file == IN_CONTAINER_KEY
    assert runtime.client_secret == "compose-test-secret"
    assert runtime.authenticate_origin == "https://authenticate.localhost:8443"
    assert "groups" in settings.idp_scopes
    (route,) = runtime.routes
    assert route.origin == "https://jenkins.localhost:8443"
    options = route.route
    assert options.to == ["unix:///var/run/jenkins/jenkins.socket"]
    assert options.pass_identity_headers
    assert options.host_rewrite_header is True
    assert options.allow_websockets
    assert options.policy == [{"allow": {"and": [{"domain": {"is": "example.com"}}]}}]


def test_stack_config_needs_the_client_secret() -> None:
    from authgate.errors import ConfigError

    environ = {k: v for k, v in _stack_environ().items() if k != "IDP_CLIENT_SECRET"}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("IDP_CLIENT_SECRET", raising=False)
        with pytest.raises(ConfigError, match="idp_client_secret"):
            build_runtime(load_settings(STACK_CONFIG, environ=environ), warn=False)


# ---------------------------------------------------------------------------- (b) compose file


def test_compose_services_and_images(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert set(services) == {"envoy", "authgate", "jenkins", "idp"}
    image = services["envoy"]["image"]
    assert image.startswith("envoyproxy/envoy:") and "1.40" in image
    assert services["authgate"]["build"]["dockerfile"] == "Dockerfile"
    assert services["authgate"]["command"] == [
        "authz", "-c", "/config/config.yaml", "--listen", "0.0.0.0:9191",
    ]
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in _volumes(service):
            if volume["type"] == "volume":
                assert volume["source"] in declared, f"{name}: volume {volume['source']} undeclared"


def test_compose_files_exist_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = REPO_ROOT / _repo_path(build if isinstance(build, str) else build["context"])
            assert context.is_dir(), f"{name}: build context {context} is missing"
            dockerfile = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
            for source in _dockerfile_copy_sources(dockerfile):
                assert (context / source).exists(), f"{dockerfile}: COPY source {source} missing"
        for volume in _volumes(service):
            if volume["type"] != "bind":
                continue
            path = _repo_path(volume["source"])
            if path == USER_GENERATED or USER_GENERATED in path.parents:
                continue  # certificates: created by the user, see the README test below
            assert (REPO_ROOT / path).exists(), f"{name}: bind source {path} is missing"
            assert volume.get("read_only") is True, f"{name}: mount {path} read-only"


def test_compose_secrets_come_from_env_and_are_required(
    services: dict[str, dict[str, Any]],
) -> None:
    env = _env(services["authgate"])
    for name in SECRETS:
        assert env[name].startswith(f"${{{name}:?"), f"{name} must be required from .env"
    assert "${IDP_CLIENT_SECRET:?" in _env(services["idp"])["IDP_CLIENTS"]
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name in SECRETS:
        assert re.search(rf"^{name}=$", example, re.MULTILINE), f"env.example lacks {name}="


def test_compose_wiring_matches_the_stack_config(
    services: dict[str, dict[str, Any]], runtime: RuntimeConfig
) -> None:
    envoy, authgate, jenkins, idp = (services[n] for n in ("envoy", "authgate", "jenkins", "idp"))
    settings = runtime.settings
    (route,) = runtime.routes

    # envoy: bootstrap, certificates, port, aliases for the hosts containers call.
    assert _mount_target(envoy, "./envoy/compose.yaml") == "/etc/envoy/envoy.yaml"
    assert envoy["command"][:3] == ["envoy", "-c", "/etc/envoy/envoy.yaml"]
    tls_source = "${AUTHGATE_TLS_DIR:-./deploy/compose/tls}"
    assert _mount_target(envoy, tls_source) == str(PurePosixPath(IN_CONTAINER_CERT).parent)
    ports = _published(envoy)
    assert ports[settings.listen_port] == ("127.0.0.1", settings.listen_port)
    assert ports[9901][0] == "127.0.0.1", "Envoy's admin must stay on the loopback"
    assert urlsplit(route.origin).port == settings.listen_port
    assert _aliases(envoy) >= {route.hostname, urlsplit(runtime.authenticate_origin).hostname}

    # authgate: the config file it is told to read is the one mounted.
    assert _mount_target(authgate, "./deploy/compose/config.yaml") == "/config/config.yaml"

    # jenkins: the socket Winstone creates is the route's upstream, in the volume Envoy shares.
    socket_path = route.route.upstreams[0].path
    opts = _env(jenkins)["JENKINS_OPTS"].split()
    assert "--httpPort=-1" in opts
    assert f"--httpUnixDomainPath={socket_path}" in opts
    socket_dir = str(PurePosixPath(socket_path).parent)
    assert _mount_target(jenkins, "jenkins-socket") == socket_dir
    assert _mount_target(envoy, "jenkins-socket") == socket_dir
    assert _mount_target(jenkins, f"{tls_source}/cert.pem") == "/etc/authgate/tls/cert.pem"

    # idp: one issuer for the browser and the containers; the client authgate uses.
    idp_env = _env(idp)
    issuer = urlsplit(settings.idp_provider_url)
    assert idp_env["IDP_ISSUER"] == settings.idp_provider_url
    assert issuer.hostname in _aliases(idp)
    assert issuer.hostname is not None and issuer.hostname.endswith(".localhost")
    assert _published(idp)[int(idp_env["IDP_PORT"])] == ("127.0.0.1", issuer.port)
    clients = json.loads(_interpolate(idp_env["IDP_CLIENTS"], {"IDP_CLIENT_SECRET": "s"}))
    (client,) = clients
    assert client["client_id"] == settings.idp_client_id
    assert client["client_secret"] == "s"
    assert client["redirect_uris"] == [f"{runtime.authenticate_origin}/oauth2/callback"]
    assert client["post_logout_redirect_uris"] == [
        f"{runtime.authenticate_origin}/.pomerium/signed_out"
    ]


def test_images_and_build_context(services: dict[str, dict[str, Any]]) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    assert re.search(r"^USER (?!root\b|0\b)\S+", dockerfile, re.MULTILINE), "run as non-root"
    assert 'ENTRYPOINT ["authgate"]' in dockerfile
    ignored = set((REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    for entry in (".venv", "node_modules", ".git", "tests/idp/node_modules", ".demo", ".env"):
        assert entry in ignored, f".dockerignore lacks {entry}"
    jenkins_dockerfile = (JENKINS_DIR / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM jenkins/jenkins:lts-jdk17\b", jenkins_dockerfile, re.MULTILINE)
    assert "jenkins-plugin-cli --plugin-file" in jenkins_dockerfile
    assert "-Djenkins.install.runSetupWizard=false" in jenkins_dockerfile
    plugins = {
        line.split(":")[0].strip()
        for line in (JENKINS_DIR / "plugins.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    assert plugins == {"jwt-auth", "configuration-as-code"}


# ---------------------------------------------------------------------------- (c) Jenkins


def test_jenkins_jwt_settings_follow_the_guide(casc_realm: dict[str, Any]) -> None:
    assert set(casc_realm) <= JWT_AUTH_CASC_KEYS, set(casc_realm) - JWT_AUTH_CASC_KEYS
    assert casc_realm["headerName"] == "x-pomerium-jwt-assertion"
    assert casc_realm["userClaimName"] == "email"
    assert casc_realm["groupsClaimName"] == "groups"
    assert casc_realm["groupsClaimSeparator"] == ","
    assert casc_realm["emailClaimName"] == "email"
    assert casc_realm.get("allowVerificationFailures", False) is False


def test_jenkins_jwt_settings_match_the_stack_config(
    casc_realm: dict[str, Any], runtime: RuntimeConfig
) -> None:
    (route,) = runtime.routes
    # iss: the authenticate host name (jwt_issuer_format: host); aud: the route's host name.
    assert casc_realm["acceptedIssuer"] == runtime.assertion_issuer == "authenticate.localhost"
    assert casc_realm["acceptedAudience"] == route.hostname == "jenkins.localhost"
    assert casc_realm["jwksUrl"] == f"{route.origin}{JWKS_PATH}"
    casc = yaml.safe_load(CASC_FILE.read_text(encoding="utf-8"))
    assert casc["unclassified"]["location"]["url"] == f"{route.origin}/"


def test_readme_creates_the_certificate_for_both_hosts(runtime: RuntimeConfig) -> None:
    readme = DEPLOY_README.read_text(encoding="utf-8")
    for name in ("cert.pem", "key.pem"):
        assert f"{USER_GENERATED}/{name}" in readme
    (route,) = runtime.routes
    for host in (route.hostname, urlsplit(runtime.authenticate_origin).hostname):
        assert f"DNS:{host}" in readme, f"the README's certificate must name {host}"
    assert "authgate keygen" in readme
    assert "alice@example.com" in readme and "alice-password" in readme


# ---------------------------------------------------------------------------- (d) health


def _healthcheck(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "exec form: no shell needed in the image"
    return [str(word) for word in test[1:]]


def test_authgate_healthcheck_asks_readyz_on_metrics_address(
    services: dict[str, dict[str, Any]],
) -> None:
    """The port the compose healthcheck asks is the config's metrics_address, on loopback."""
    raw = yaml.safe_load(STACK_CONFIG.read_text(encoding="utf-8"))
    host, _, port = str(raw["metrics_address"]).rpartition(":")
    assert host == "0.0.0.0", "reachable from the container's loopback (and the network)"
    authgate = services["authgate"]
    program, flag, code = _healthcheck(authgate)
    assert (program, flag) == ("python", "-c"), "the image has Python, not curl"
    assert f"urlopen('http://127.0.0.1:{port}/readyz'" in code
    assert str(port) in {str(p) for p in authgate["expose"]}


def test_envoy_healthcheck_asks_admin_ready(services: dict[str, dict[str, Any]]) -> None:
    bootstrap = yaml.safe_load(ENVOY_BOOTSTRAP.read_text(encoding="utf-8"))
    admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    program, flag, script = _healthcheck(services["envoy"])
    assert (program, flag) == ("bash", "-c"), "the Envoy image has bash, not curl"
    assert f"/dev/tcp/127.0.0.1/{admin_port}" in script
    assert "GET /ready HTTP/1.1" in script and "grep -q ' 200 '" in script


def test_dependencies_wait_for_health(services: dict[str, dict[str, Any]]) -> None:
    envoy, authgate = services["envoy"], services["authgate"]
    assert envoy["depends_on"]["authgate"] == {"condition": "service_healthy"}
    assert authgate["depends_on"]["idp"] == {"condition": "service_healthy"}
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on with conditions"
        for other, how in depends.items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits for {other}'s health"


def test_image_can_keep_the_embedded_session_store(services: dict[str, dict[str, Any]]) -> None:
    """The image runs as uid 10001 with HOME=/nonexistent: STATE_DIRECTORY must be a directory
    it owns (authgate's default store location otherwise), kept in a volume."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    state = re.search(r"^ENV STATE_DIRECTORY=(\S+)$", dockerfile, re.MULTILINE)
    assert state, "the Dockerfile sets STATE_DIRECTORY"
    assert re.search(rf"install -d -o 10001 -g 10001 .*{re.escape(state[1])}$", dockerfile,
                     re.MULTILINE)
    assert _mount_target(services["authgate"], "authgate-state") == state[1]
