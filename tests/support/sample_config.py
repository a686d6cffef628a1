"""A Pomerium-style config as a user writes it, its keys, and one-line mutations of it.

Shared by tests/unit/test_config.py (loading in-process) and tests/integration/test_cli.py (the
same configs through `python -m authgate`).
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authgate.config import build_runtime, settings_from_mapping


def pem_of(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


P256_KEY = ec.generate_private_key(ec.SECP256R1())
SIGNING_KEY = b64(pem_of(P256_KEY))
COOKIE_SECRET = b64(os.urandom(32))
P384_KEY = b64(pem_of(ec.generate_private_key(ec.SECP384R1())))

EXAMPLE_YAML = f"""\
address: 127.0.0.1:8443
certificate_file: tls/cert.pem
certificate_key_file: tls/key.pem
authenticate_service_url: https://authenticate.test:8443
idp_provider: oidc
idp_provider_url: http://127.0.0.1:9400
idp_client_id: authgate
idp_client_secret: secret
signing_key: {SIGNING_KEY}
cookie_secret: {COOKIE_SECRET}
routes:
  - from: https://jenkins.test:8443
    to: unix:///run/jenkins/jenkins.socket
    pass_identity_headers: true
    host_rewrite_header: true
    allow_websockets: true
    policy:
      - allow:
          and:
            - domain:
                is: example.com
  - from: https://status.test:8443
    to: http://127.0.0.1:8081
    allow_public_unauthenticated_access: true
"""


def example() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(EXAMPLE_YAML))


def load_and_build(raw: dict[str, Any], base: Path | None = None) -> Any:
    """What `authgate run` does with a config: validate it, then build the runtime view."""
    return build_runtime(settings_from_mapping(raw, base=base, environ={}), warn=False)


def public_numbers(key: ec.EllipticCurvePrivateKey) -> tuple[int, int]:
    numbers = key.public_key().public_numbers()
    return numbers.x, numbers.y


# ---- one mistake each ----------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def set_key(key: str, value: object) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        raw[key] = value

    return mutate


def drop_keys(*keys: str) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        for key in keys:
            raw.pop(key)

    return mutate


def set_route_key(index: int, key: str, value: object) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        raw["routes"][index][key] = value

    return mutate


def yaml_with(mutate: Mutation) -> str:
    """The example config with one mutation, as the YAML text a user would write."""
    raw = example()
    mutate(raw)
    return yaml.safe_dump(raw)
