"""One configuration of a run, checked before anything is switched to it: the settings, the
runtime view, the environment of its workers and Envoy's resources."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authgate.config import build_runtime, load_settings
from authgate.config.runtime import (
    RuntimeConfig,
    generate_cookie_secret,
    generate_signing_key_b64,
)
from authgate.config.schema import Settings
from authgate.envoy import validate_config
from authgate.envoy.bootstrap import AUTHZ_CLUSTER, build_bootstrap
from authgate.envoy.xds import Resources, split

# Envoy drains a replaced listener's connections this long (HTTP/1: `Connection: close` on the
# next answer, HTTP/2: GOAWAY) before closing them. Only listener changes drain (an address or
# filter change); routes, clusters and certificates change in place.
DRAIN_TIME_S = 30


@dataclass(frozen=True)
class Plan:
    settings: Settings
    cfg: RuntimeConfig
    env: dict[str, str]  # for the workers: the generated secrets, if the config has none


def load_plan(config: Path, generated: dict[str, str]) -> Plan:
    """ConfigError for a bad config. `generated` keeps the secrets `run` made up when the config
    has none: the same ones across reloads, or every session would end."""
    settings = load_settings(config)
    env = dict(os.environ)
    if settings.cookie_secret is None:
        env["COOKIE_SECRET"] = generated.setdefault("COOKIE_SECRET", generate_cookie_secret())
    if settings.signing_key is None:
        env["SIGNING_KEY"] = generated.setdefault("SIGNING_KEY", generate_signing_key_b64())
    cfg = build_runtime(load_settings(config, environ=env), warn=False)
    return Plan(settings, cfg, env)


def envoy_resources(
    plan: Plan, endpoints: list[str], runtime_dir: Path, *, validate: bool
) -> tuple[dict[str, Any], Resources]:
    """(Envoy's bootstrap, its xDS resources) for `plan` with the workers at `endpoints`.
    ValueError (Envoy's own message) if Envoy refuses it, OSError if a certificate is
    unreadable."""
    static = build_bootstrap(
        plan.cfg,
        endpoints,
        admin_address=f"unix:{runtime_dir / 'admin.sock'}",
        authz_health_checked=True,
    )
    split_up = split(static, runtime_dir / "xds", eds_clusters=(AUTHZ_CLUSTER,))  # reads certs
    if validate:  # ~40 ms: catches what only Envoy knows (a certificate that does not parse...)
        validate_config(static, runtime_dir)
    return split_up
