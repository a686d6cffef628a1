"""deploy/kubernetes/ is valid Kubernetes and wired together the way a user's cluster needs.

Every manifest is checked against the Kubernetes JSON schemas offline (kubernetes-validate,
strict: an unknown field fails) for the oldest and the newest Kubernetes version we claim.
Then what the schemas cannot see: selectors that match the pods, Service and probe ports that
exist, probes on the port of `metrics_address`, NetworkPolicies that let only Envoy reach authz
and the app, the Secret keys the pods read, authgate's own loader on the ConfigMap's config,
and kubectl's kustomize building the directory. Each check is a function that raises
AssertionError; the `test_check_catches` cases break a copy of the manifests and show the
check fails. The real Envoy on the Envoy ConfigMap: tests/integration/test_kubernetes_envoy.py.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from authgate.config import Settings, build_runtime, load_settings
from authgate.config.runtime import generate_cookie_secret, generate_signing_key_b64
from authgate.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
SECRET_EXAMPLE = K8S_DIR / "secret.example.yaml"
# Oldest and newest Kubernetes minor versions the manifests are checked against (the schemas
# ship inside kubernetes-validate; nothing is downloaded).
K8S_VERSIONS = ("1.30", "1.37")
AUTHZ = {"app.kubernetes.io/name": "authgate", "app.kubernetes.io/component": "authz"}
ENVOY = {"app.kubernetes.io/name": "authgate", "app.kubernetes.io/component": "envoy"}
REDIS = {"app.kubernetes.io/name": "authgate", "app.kubernetes.io/component": "redis"}
APP = {"app.kubernetes.io/name": "jenkins"}
GRPC_HEALTH = "grpc_health_check"

Doc = dict[str, Any]
Manifests = dict[tuple[str, str], Doc]  # (kind, name) -> document

requires_metrics_address = pytest.mark.skipif(
    "metrics_address" not in Settings.model_fields,
    reason="authgate's loader does not know `metrics_address` yet (issue #12, ops-observe)",
)


# ---------------------------------------------------------------------------- loading


def _docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _resource_files() -> list[Path]:
    listed = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))["resources"]
    return [K8S_DIR / name for name in listed]


def load_manifests() -> Manifests:
    found: Manifests = {}
    for path in _resource_files():
        for doc in _docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


@pytest.fixture
def manifests() -> Manifests:
    """A fresh copy per test: the `_catches_` tests change it."""
    return load_manifests()


def _all_docs() -> Iterator[tuple[str, Doc]]:
    for path in [*_resource_files(), SECRET_EXAMPLE]:
        for doc in _docs(path):
            yield f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc


def of_kind(m: Manifests, kind: str) -> dict[str, Doc]:
    return {name: doc for (k, name), doc in m.items() if k == kind}


def pod_labels(deployment: Doc) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def containers(deployment: Doc) -> dict[str, Doc]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def deployment_for(m: Manifests, labels: dict[str, str]) -> Doc:
    (found,) = [d for d in of_kind(m, "Deployment").values() if selects(labels, pod_labels(d))]
    return found


def container_port(deployment: Doc, port: int | str) -> int:
    """The containerPort a Service targetPort / probe port / policy port means in these pods."""
    for container in containers(deployment).values():
        for p in container.get("ports", []):
            if port in (p.get("name"), p["containerPort"]):
                return int(p["containerPort"])
    raise AssertionError(f"no container port {port!r} in {deployment['metadata']['name']}")


def configmap_file(m: Manifests, name: str, key: str) -> str:
    return str(m[("ConfigMap", name)]["data"][key])


def authgate_config(m: Manifests) -> Doc:
    doc = yaml.safe_load(configmap_file(m, "authgate-config", "config.yaml"))
    assert isinstance(doc, dict)
    return doc


def envoy_config(m: Manifests) -> Doc:
    doc = yaml.safe_load(configmap_file(m, "authgate-envoy", "envoy.yaml"))
    assert isinstance(doc, dict)
    return doc


def envoy_clusters(m: Manifests) -> dict[str, Doc]:
    return {c["name"]: c for c in envoy_config(m)["static_resources"]["clusters"]}


def envoy_listeners(m: Manifests) -> dict[str, Doc]:
    return {x["name"]: x for x in envoy_config(m)["static_resources"]["listeners"]}


def hcm(listener: Doc) -> Doc:
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    config: Doc = manager["typed_config"]
    return config


def socket_address(cluster: Doc) -> tuple[str, int]:
    (group,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = group["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    return str(address["address"]), int(address["port_value"])


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def mount_path(deployment: Doc, container: str, volume_source: tuple[str, str]) -> str:
    """Where `container` mounts the volume made from (kind key, object name)."""
    kind_key, name = volume_source
    spec = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if kind_key in v and name in v[kind_key].values()]
    mounts = containers(deployment)[container]["volumeMounts"]
    (mount,) = [x for x in mounts if x["name"] == volume["name"]]
    return str(mount["mountPath"])


def secret_refs(m: Manifests) -> set[tuple[str, str]]:
    """(secret name, key) of every secretKeyRef in the Deployments."""
    refs = set()
    for deployment in of_kind(m, "Deployment").values():
        for container in containers(deployment).values():
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    return refs


def secret_environ(m: Manifests) -> dict[str, str]:
    """Real values for the secrets authz reads, as `kubectl create secret` would hold them."""
    authz = containers(deployment_for(m, AUTHZ))["authz"]
    redis_service = of_kind(m, "Service")["authgate-redis"]
    (redis_port,) = [p["port"] for p in redis_service["spec"]["ports"]]
    values = {
        "COOKIE_SECRET": generate_cookie_secret(),
        "SIGNING_KEY": generate_signing_key_b64(),
        "IDP_CLIENT_SECRET": "k8s-test-client-secret",
        "DATABROKER_STORAGE_CONNECTION_STRING": f"redis://:pw@authgate-redis:{redis_port}/0",
    }
    wanted = {e["valueFrom"]["secretKeyRef"]["key"] for e in authz["env"]}
    assert wanted == set(values), wanted ^ set(values)
    return values


def load_authgate_config(m: Manifests, tmp_path: Path, environ: dict[str, str]) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(configmap_file(m, "authgate-config", "config.yaml"), encoding="utf-8")
    return load_settings(path, environ=environ)


# ---------------------------------------------------------------------------- the checks


def check_kustomization_lists_every_manifest() -> None:
    listed = {p.name for p in _resource_files()}
    present = {p.name for p in K8S_DIR.glob("*.yaml")} - {KUSTOMIZATION.name, SECRET_EXAMPLE.name}
    assert listed == present, f"kustomization.yaml resources differ: {listed ^ present}"


def check_selectors(m: Manifests) -> None:
    deployments = of_kind(m, "Deployment")
    for name, d in deployments.items():
        selector = d["spec"]["selector"]["matchLabels"]
        assert selects(selector, pod_labels(d)), f"Deployment {name}: selector misses its pods"
        others = [o for o, od in deployments.items()
                  if o != name and selects(selector, pod_labels(od))]
        assert not others, f"Deployment {name}: selector also takes the pods of {others}"
    for kind in ("Service", "PodDisruptionBudget"):
        for name, doc in of_kind(m, kind).items():
            spec = doc["spec"]
            selector = spec["selector"] if kind == "Service" else spec["selector"]["matchLabels"]
            hits = [d for d, dd in deployments.items() if selects(selector, pod_labels(dd))]
            assert len(hits) == 1, f"{kind} {name} selects the pods of {hits}, not of one"
    for name, d in deployments.items():  # several replicas: one PDB keeps some through drains
        pdbs = [p for p, pd in of_kind(m, "PodDisruptionBudget").items()
                if selects(pd["spec"]["selector"]["matchLabels"], pod_labels(d))]
        assert d["spec"]["replicas"] < 2 or len(pdbs) == 1, f"Deployment {name}: PDBs {pdbs}"
    for name, hpa in of_kind(m, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["apiVersion"]) == ("Deployment", "apps/v1")
        assert target["name"] in deployments, f"HPA {name} scales a missing {target['name']}"


def check_service_ports(m: Manifests) -> None:
    for service in of_kind(m, "Service").values():
        deployment = deployment_for(m, service["spec"]["selector"])
        for port in service["spec"]["ports"]:
            container_port(deployment, port.get("targetPort", port["port"]))


def check_authz(m: Manifests) -> None:
    """authz listens where Envoy and the Service expect it; probes on metrics_address's port."""
    deployment = deployment_for(m, AUTHZ)
    authz = containers(deployment)["authz"]
    args = authz["args"]
    assert args[:1] == ["authz"]
    config_path = args[args.index("-c") + 1]
    mounted = mount_path(deployment, "authz", ("configMap", "authgate-config"))
    assert str(Path(config_path).parent) == mounted, f"{config_path} is not in the mount {mounted}"
    assert Path(config_path).name in m[("ConfigMap", "authgate-config")]["data"]
    _, listen_port = host_port(args[args.index("--listen") + 1])
    assert container_port(deployment, "grpc") == listen_port

    _, metrics_port = host_port(authgate_config(m)["metrics_address"])
    probes = {kind: authz[kind]["httpGet"] for kind in
              ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for kind, probe in probes.items():
        assert container_port(deployment, probe["port"]) == metrics_port, f"{kind} port"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"


def check_envoy(m: Manifests) -> None:
    """Envoy's config reaches the authz Service and the app; probes and scrape on its ops port."""
    deployment = deployment_for(m, ENVOY)
    envoy = containers(deployment)["envoy"]
    assert "1.40" in envoy["image"]
    args = envoy["args"]
    config_path = args[args.index("-c") + 1]
    assert str(Path(config_path).parent) == mount_path(
        deployment, "envoy", ("configMap", "authgate-envoy")
    )
    assert Path(config_path).name in m[("ConfigMap", "authgate-envoy")]["data"]
    clusters, listeners = envoy_clusters(m), envoy_listeners(m)
    config = envoy_config(m)

    # authz: the headless Service's name and port, gRPC health checks, HTTP/2.
    authz_service = of_kind(m, "Service")["authgate-authz"]
    assert authz_service["spec"]["clusterIP"] == "None", "headless: Envoy balances per pod"
    cluster = clusters["authgate_authz"]
    assert cluster["type"] == "STRICT_DNS"
    (grpc,) = [p for p in authz_service["spec"]["ports"] if p["name"] == "grpc"]
    assert socket_address(cluster) == (authz_service["metadata"]["name"], grpc["port"])
    assert [GRPC_HEALTH in hc for hc in cluster.get("health_checks", [])] == [True]
    options = cluster["typed_extension_protocol_options"]
    (http,) = options.values()
    assert "http2_protocol_options" in http["explicit_http_config"]

    # The ext_authz filter fails closed and sees every header.
    https = hcm(listeners["https"])
    (ext_authz,) = [f for f in https["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    settings = ext_authz["typed_config"]
    assert settings["grpc_service"]["envoy_grpc"]["cluster_name"] == "authgate_authz"
    assert settings["failure_mode_allow"] is False
    assert settings["status_on_error"] == {"code": 503}
    assert "allowed_headers" not in settings
    retry = settings["grpc_service"].get("retry_policy", {})
    assert "connect-failure" in retry.get("retry_on", ""), "a pod that went away: retry elsewhere"
    assert https["http_filters"][-1]["name"] == "envoy.filters.http.router"

    # The app: the route's upstream; TLS from the mounted Secret.
    (route,) = authgate_config(m)["routes"]
    upstream = urlsplit(route["to"])
    assert socket_address(clusters["app"]) == (upstream.hostname, upstream.port)
    tls_dir = mount_path(deployment, "envoy", ("secret", "authgate-tls"))
    (chain,) = listeners["https"]["filter_chains"]
    (cert,) = chain["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"]
    for key, file in (("certificate_chain", "tls.crt"), ("private_key", "tls.key")):
        assert cert[key]["filename"] == f"{tls_dir}/{file}"  # a kubernetes.io/tls Secret's keys
    https_port = listeners["https"]["address"]["socket_address"]["port_value"]
    assert container_port(deployment, "https") == https_port

    # Admin on the loopback; the ops listener forwards only GET /ready and /stats/prometheus.
    admin = config["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1"
    assert socket_address(clusters["envoy_admin"]) == (admin["address"], admin["port_value"])
    ops = listeners["ops"]
    ops_port = ops["address"]["socket_address"]["port_value"]
    (vhost,) = hcm(ops)["route_config"]["virtual_hosts"]
    forwarded = {r["match"].get("path"): r for r in vhost["routes"] if "route" in r}
    assert set(forwarded) == {"/ready", "/stats/prometheus"}
    for r in forwarded.values():
        assert r["route"]["cluster"] == "envoy_admin"
        assert r["match"].get("headers") == [{"name": ":method", "string_match": {"exact": "GET"}}]
    probes = [envoy[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")]
    for probe in probes:
        assert probe["path"] == "/ready"
        assert container_port(deployment, probe["port"]) == ops_port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ops_port
    assert annotations["prometheus.io/path"] == "/stats/prometheus"

    service = of_kind(m, "Service")["authgate"]
    assert service["spec"]["externalTrafficPolicy"] == "Local", "source_ip needs the client IP"
    assert https["use_remote_address"] is True


def _ingress_rules(m: Manifests, target: dict[str, str]) -> list[Doc]:
    """The ingress rules of every NetworkPolicy that selects the pods labelled `target`."""
    rules: list[Doc] = []
    policies = [p for p in of_kind(m, "NetworkPolicy").values()
                if selects(p["spec"]["podSelector"]["matchLabels"], target)]
    assert policies, f"no NetworkPolicy selects {target}"
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        rules += policy["spec"].get("ingress", [])
    return rules


def _who_may_reach(m: Manifests, target: dict[str, str], port: int) -> list[Doc]:
    """The `from` peers allowed to `port` of the pods labelled `target` ({} = anyone)."""
    pods = deployment_for(m, target) if target != APP else None
    peers: list[Doc] = []
    for rule in _ingress_rules(m, target):
        ports = rule.get("ports")
        opens = ports is None or any(
            (container_port(pods, p["port"]) if pods else p["port"]) == port for p in ports
        )
        if opens:
            peers += rule.get("from") or [{}]
    return peers


def _only_envoy(peers: list[Doc], what: str) -> None:
    assert peers, f"{what}: nobody may connect (Envoy must)"
    for peer in peers:
        assert set(peer) == {"podSelector"}, f"{what}: allows {peer}, not only Envoy's pods"
        assert peer["podSelector"] == {"matchLabels": ENVOY}, f"{what}: allows {peer}"


def check_network_policies(m: Manifests) -> None:
    envoy = deployment_for(m, ENVOY)
    authz = deployment_for(m, AUTHZ)
    assert selects(ENVOY, pod_labels(envoy)) and not selects(ENVOY, pod_labels(authz))
    _only_envoy(_who_may_reach(m, AUTHZ, container_port(authz, "grpc")), "authz gRPC")
    metrics = _who_may_reach(m, AUTHZ, container_port(authz, "metrics"))
    assert metrics and all("namespaceSelector" in p for p in metrics), "metrics: Prometheus only"
    (route,) = authgate_config(m)["routes"]
    app_port = urlsplit(route["to"]).port
    assert app_port is not None
    _only_envoy(_who_may_reach(m, APP, app_port), "the app")
    redis = deployment_for(m, REDIS)
    redis_peers = _who_may_reach(m, REDIS, container_port(redis, "redis"))
    assert redis_peers == [{"podSelector": {"matchLabels": AUTHZ}}], redis_peers
    assert _who_may_reach(m, ENVOY, container_port(envoy, "https")) == [{}], "Envoy: public"


def check_pods_are_locked_down(m: Manifests) -> None:
    for name, d in of_kind(m, "Deployment").items():
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for cname, c in containers(d).items():
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, f"{name}/{cname}"
            assert sc["allowPrivilegeEscalation"] is False, f"{name}/{cname}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{name}/{cname}"
            assert "memory" in c["resources"]["limits"], f"{name}/{cname}"
        if d["spec"]["replicas"] >= 2:  # served by several pods: stop one without errors
            (container,) = containers(d).values()
            sleep = container["lifecycle"]["preStop"]["exec"]["command"]
            assert sleep[0] == "sleep" and int(sleep[1]) >= 5, f"{name}: preStop {sleep}"
            grace = spec.get("terminationGracePeriodSeconds", 30)
            assert grace >= int(sleep[1]) + 10, f"{name}: no time left to finish after preStop"


def check_scaling(m: Manifests) -> None:
    (hpa,) = of_kind(m, "HorizontalPodAutoscaler").values()
    target = of_kind(m, "Deployment")[hpa["spec"]["scaleTargetRef"]["name"]]
    assert selects(AUTHZ, pod_labels(target)), "the HPA scales authz"
    assert hpa["spec"]["minReplicas"] >= 2 and target["spec"]["replicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    for name, c in containers(target).items():  # Utilization is a share of the request
        assert "cpu" in c["resources"]["requests"], f"{name}: the HPA needs a CPU request"
    for name, pdb in of_kind(m, "PodDisruptionBudget").items():
        deployment = deployment_for(m, pdb["spec"]["selector"]["matchLabels"])
        least = (hpa["spec"]["minReplicas"] if deployment is target
                 else deployment["spec"]["replicas"])
        assert 0 < pdb["spec"]["minAvailable"] < least, f"PDB {name} would block every drain"


def check_secrets(m: Manifests) -> None:
    """Every key the pods read is in secret.example.yaml, and only config keys reach authz."""
    (example,) = _docs(SECRET_EXAMPLE)
    refs = secret_refs(m)
    assert {name for name, _ in refs} == {example["metadata"]["name"]}
    assert {key for _, key in refs} == set(example["stringData"])
    authz_pods = deployment_for(m, AUTHZ)["spec"]["template"]["spec"]
    assert authz_pods["enableServiceLinks"] is False, "Service variables would reach the config"
    authz = containers(deployment_for(m, AUTHZ))["authz"]
    assert "envFrom" not in authz
    for env in authz["env"]:
        assert env["name"].lower() in Settings.model_fields, f"{env['name']} sets no config key"
    config = authgate_config(m)
    for key in ("cookie_secret", "signing_key", "idp_client_secret",
                "databroker_storage_connection_string"):
        assert key not in config, f"{key} belongs in the Secret, not in the ConfigMap"
    assert config["databroker_storage_type"] == "redis", "replicas need one shared store"
    # The Secret's creation command names the Redis Service the manifests define.
    redis = of_kind(m, "Service")["authgate-redis"]
    (port,) = redis["spec"]["ports"]
    assert f"@{redis['metadata']['name']}:{port['port']}/0" in SECRET_EXAMPLE.read_text()


CHECKS: list[Callable[[Manifests], None]] = [
    check_selectors,
    check_service_ports,
    check_authz,
    check_envoy,
    check_network_policies,
    check_pods_are_locked_down,
    check_scaling,
    check_secrets,
]


# ---------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "doc"), list(_all_docs()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_is_valid_kubernetes(name: str, doc: Doc, version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{name} against Kubernetes {version}: {path}: {exc.message}")


def test_every_kind_has_a_schema() -> None:
    """A kind without a schema would pass unchecked (kubernetes-validate only warns)."""
    kinds = {(d["apiVersion"], d["kind"]) for _, d in _all_docs()}
    assert kinds == {
        ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"),
        ("v1", "PersistentVolumeClaim"), ("apps/v1", "Deployment"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    }


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda c: c["securityContext"].update(readOnlyRoot=True),
                     id="unknown-nested-field"),
        pytest.param(lambda c: c.update(livenessProbes=c["livenessProbe"]), id="unknown-field"),
        pytest.param(lambda c: c["ports"][0].update(containerPort="9191"), id="wrong-type"),
        pytest.param(lambda c: c.pop("name"), id="missing-required"),
    ],
)
def test_schema_validation_catches_a_broken_manifest(
    manifests: Manifests, breakage: Callable[[Doc], None]
) -> None:
    deployment = manifests[("Deployment", "authgate-authz")]
    breakage(deployment["spec"]["template"]["spec"]["containers"][0])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


# ---------------------------------------------------------------------------- semantics


def test_kustomization_lists_every_manifest() -> None:
    check_kustomization_lists_every_manifest()
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    assert "namespace" not in kustomization, "namespace-agnostic: `kubectl apply -k ... -n NS`"
    for (_, name), doc in load_manifests().items():
        assert "namespace" not in doc["metadata"], f"{name} pins a namespace"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_exactly_these_manifests(tmp_path: Path) -> None:
    """`kubectl apply -k` applies what these tests check, nothing more or changed (kubectl's
    own kustomize, offline). A namespace given at build time lands on every object."""
    built = subprocess.run(["kubectl", "kustomize", str(K8S_DIR)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert {(d["kind"], d["metadata"]["name"]): d for d in docs} == load_manifests()
    # The same directory with `namespace:` set, as a user's overlay would.
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "gate", "resources": [os.path.relpath(K8S_DIR, overlay)],
    }))
    built = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert {d["metadata"]["namespace"] for d in docs} == {"gate"}


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_manifests_pass(manifests: Manifests, check: Callable[[Manifests], None]) -> None:
    check(manifests)


def _set(path: list[Any], value: Any) -> Callable[[Manifests], None]:
    def apply(m: Manifests) -> None:
        node: Any = m
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return apply


def _edit_config(m: Manifests, key: str, value: str) -> None:
    config = authgate_config(m)
    config[key] = value
    m[("ConfigMap", "authgate-config")]["data"]["config.yaml"] = yaml.safe_dump(config)


def _edit_envoy(m: Manifests, edit: Callable[[Doc], None]) -> None:
    config = envoy_config(m)
    edit(config)
    m[("ConfigMap", "authgate-envoy")]["data"]["envoy.yaml"] = yaml.safe_dump(config)


def _clusters(config: Doc) -> dict[str, Doc]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


AUTHZ_DEPLOYMENT = ("Deployment", "authgate-authz")
AUTHZ_POD = [AUTHZ_DEPLOYMENT, "spec", "template", "spec"]


@pytest.mark.parametrize(
    ("check", "breakage"),
    [
        pytest.param(check_selectors,
                     _set([("Service", "authgate-authz"), "spec", "selector"],
                          {"app.kubernetes.io/component": "authz-typo"}),
                     id="service-selects-nothing"),
        pytest.param(check_selectors,
                     _set([AUTHZ_DEPLOYMENT, "spec", "selector", "matchLabels"],
                          {"app.kubernetes.io/name": "authgate"}),
                     id="deployment-selector-takes-other-pods"),
        pytest.param(check_selectors,
                     _set([("PodDisruptionBudget", "authgate-envoy"), "spec", "selector",
                           "matchLabels"], AUTHZ), id="pdb-on-the-wrong-pods"),
        pytest.param(check_service_ports,
                     _set([("Service", "authgate"), "spec", "ports", 0, "targetPort"], "http"),
                     id="service-target-port-missing"),
        pytest.param(check_authz,
                     lambda m: _edit_config(m, "metrics_address", "0.0.0.0:9100"),
                     id="probes-not-on-metrics-address"),
        pytest.param(check_authz,
                     _set([*AUTHZ_POD, "containers", 0, "args", 4], "0.0.0.0:9000"),
                     id="listen-port-not-the-grpc-port"),
        pytest.param(check_authz,
                     _set([*AUTHZ_POD, "containers", 0, "readinessProbe", "httpGet", "path"],
                          "/healthz"), id="readiness-on-liveness"),
        pytest.param(check_envoy,
                     lambda m: _edit_envoy(m, lambda c: _clusters(c)["authgate_authz"][
                         "load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
                         "address"]["socket_address"].update(address="authz")),
                     id="envoy-reaches-a-missing-service"),
        pytest.param(check_envoy,
                     lambda m: _edit_envoy(m, lambda c: c["static_resources"]["listeners"][0][
                         "filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0][
                         "typed_config"].update(failure_mode_allow=True)),
                     id="ext-authz-fails-open"),
        pytest.param(check_envoy,
                     lambda m: _edit_envoy(m, lambda c: _clusters(c)["authgate_authz"].pop(
                         "health_checks")), id="no-grpc-health-checks"),
        pytest.param(check_envoy,
                     lambda m: _edit_envoy(m, lambda c: c["static_resources"]["listeners"][0][
                         "filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0][
                         "typed_config"]["grpc_service"].pop("retry_policy")),
                     id="no-retry-on-another-pod"),
        pytest.param(check_envoy,
                     lambda m: _edit_envoy(m, lambda c: c["static_resources"]["listeners"][1][
                         "filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
                         "virtual_hosts"][0]["routes"][0]["match"].pop("headers")),
                     id="ops-listener-forwards-any-method"),
        pytest.param(check_envoy,
                     lambda m: _edit_envoy(m, lambda c: c["admin"]["address"][
                         "socket_address"].update(address="0.0.0.0")),
                     id="admin-on-the-pod-ip"),
        pytest.param(check_network_policies,
                     _set([("NetworkPolicy", "authgate-authz"), "spec", "ingress", 0, "from"],
                          [{"podSelector": {}}]), id="authz-open-to-every-pod"),
        pytest.param(check_network_policies,
                     _set([("NetworkPolicy", "authgate-authz"), "spec", "podSelector",
                           "matchLabels"], ENVOY), id="policy-selects-envoy-not-authz"),
        pytest.param(check_network_policies,
                     _set([("NetworkPolicy", "authgate-authz"), "spec", "ingress", 1, "ports"],
                          None), id="prometheus-rule-opens-grpc-too"),
        pytest.param(check_network_policies,
                     _set([("NetworkPolicy", "jenkins-from-authgate-only"), "spec", "ingress", 0,
                           "from", 0, "podSelector", "matchLabels"], AUTHZ),
                     id="app-reachable-from-authz"),
        pytest.param(check_pods_are_locked_down,
                     _set([*AUTHZ_POD, "containers", 0, "securityContext",
                           "readOnlyRootFilesystem"], False), id="writable-root"),
        pytest.param(check_pods_are_locked_down,
                     _set([*AUTHZ_POD, "terminationGracePeriodSeconds"], 5),
                     id="grace-shorter-than-prestop"),
        pytest.param(check_scaling,
                     _set([*AUTHZ_POD, "containers", 0, "resources", "requests"],
                          {"memory": "1Gi"}),
                     id="hpa-without-cpu-request"),
        pytest.param(check_scaling,
                     _set([("PodDisruptionBudget", "authgate-envoy"), "spec", "minAvailable"], 2),
                     id="pdb-blocks-drains"),
        pytest.param(check_secrets,
                     _set([*AUTHZ_POD, "containers", 0, "env", 0, "valueFrom", "secretKeyRef",
                           "key"], "COOKIE"), id="secret-key-not-in-the-example"),
        pytest.param(check_secrets,
                     lambda m: _edit_config(m, "cookie_secret", "x"), id="secret-in-configmap"),
        pytest.param(check_secrets, _set([*AUTHZ_POD, "enableServiceLinks"], True),
                     id="service-links-into-the-config"),
    ],
)
def test_check_catches(
    manifests: Manifests, check: Callable[[Manifests], None], breakage: Callable[[Manifests], None]
) -> None:
    check(manifests)  # passes before
    breakage(manifests)
    with pytest.raises(AssertionError):
        check(manifests)


# ---------------------------------------------------------------------------- authgate's loader


@requires_metrics_address
def test_configmap_config_loads_with_authgates_loader(manifests: Manifests, tmp_path: Path) -> None:
    settings = load_authgate_config(manifests, tmp_path, secret_environ(manifests))
    cfg = build_runtime(settings, warn=False)
    assert settings.databroker_storage_type == "redis"
    redis_url = urlsplit(settings.databroker_storage_connection_string or "")
    assert redis_url.hostname == "authgate-redis"
    assert cfg.authenticate_origin == "https://authenticate.example.com"
    (route,) = cfg.routes
    assert route.origin == "https://jenkins.example.com"


@requires_metrics_address
def test_configmap_config_needs_the_secrets(manifests: Manifests, tmp_path: Path) -> None:
    """Without the Secret, or with its placeholders, authz stops with a config error."""
    environ = secret_environ(manifests)
    del environ["DATABROKER_STORAGE_CONNECTION_STRING"]
    with pytest.raises(ConfigError, match="databroker_storage_connection_string"):
        load_authgate_config(manifests, tmp_path, environ)
    (example,) = _docs(SECRET_EXAMPLE)
    placeholders = {k: str(v) for k, v in example["stringData"].items()}
    for key in ("COOKIE_SECRET", "SIGNING_KEY", "DATABROKER_STORAGE_CONNECTION_STRING"):
        environ = {**secret_environ(manifests), key: placeholders[key]}
        with pytest.raises(ConfigError, match=key.lower()):
            build_runtime(load_authgate_config(manifests, tmp_path, environ), warn=False)


def test_readme_and_secret_example_create_the_same_keys() -> None:
    """The `kubectl create secret` command in secret.example.yaml sets every key it needs."""
    (example,) = _docs(SECRET_EXAMPLE)
    text = SECRET_EXAMPLE.read_text(encoding="utf-8")
    command = " ".join(
        line.lstrip("# ").rstrip("\\ ") for line in text.splitlines()
        if line.startswith("#   kubectl") or line.startswith("#     --from-literal")
    )
    words = shlex.split(command)
    created = {w.removeprefix("--from-literal=").split("=", 1)[0] for w in words
               if w.startswith("--from-literal=")}
    assert created == set(example["stringData"]), created ^ set(example["stringData"])
    assert words[:5] == ["kubectl", "create", "secret", "generic", example["metadata"]["name"]]
    readme = (REPO_ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    assert f"create secret generic {example['metadata']['name']}" in readme
    for key in example["stringData"]:
        assert f"--from-literal={key}=" in readme, f"deploy/README.md does not create {key}"
    redis_url = urlsplit(example["stringData"]["DATABROKER_STORAGE_CONNECTION_STRING"]
                         .removeprefix("REPLACE: "))
    assert f"@{redis_url.hostname}:{redis_url.port}/0" in readme

