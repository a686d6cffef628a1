"""Routes that answer without an upstream (`redirect`, `response`) and `http_redirect_addr`,
through real Envoy and `authgate run`: the route's policy still decides first."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from authgate.config.runtime import generate_signing_key_b64
from tests.support.certs import TestPKI, make_pki
from tests.support.resolve import map_hosts
from tests.support.stack import AuthgateStack, free_port


@dataclass
class Actions:
    port: int
    redirect_port: int
    pki: TestPKI

    def get(self, url: str) -> httpx.Response:
        with map_hosts({"*.test": "127.0.0.1"}), httpx.Client(
            verify=self.pki.client_ssl_context(), timeout=20, follow_redirects=False
        ) as client:
            return client.get(url, headers={"accept": "application/json"})


@pytest.fixture(scope="module")
def actions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Actions]:
    workdir = tmp_path_factory.mktemp("actions")
    pki = make_pki(workdir / "tls", ["old.test", "app.test", "authenticate.test"])
    port, redirect_port = free_port(), free_port()
    public = {"allow_public_unauthenticated_access": True}
    config = {
        "address": f"127.0.0.1:{port}",
        "http_redirect_addr": f"127.0.0.1:{redirect_port}",
        "certificate_file": str(pki.cert_file),
        "certificate_key_file": str(pki.key_file),
        "authenticate_service_url": f"https://authenticate.test:{port}",
        "idp_provider_url": "http://127.0.0.1:9",  # never reached: nobody signs in here
        "idp_client_id": "authgate",
        "idp_client_secret": "secret",
        "cookie_secret": base64.b64encode(os.urandom(32)).decode(),
        "signing_key": generate_signing_key_b64(),
        "routes": [
            {"from": f"https://old.test:{port}", "prefix": "/docs/",
             "redirect": {"host_redirect": "app.test", "port_redirect": port,
                          "prefix_rewrite": "/manual/",
                          "response_code": 308}, **public},
            {"from": f"https://old.test:{port}",
             "redirect": {"path_redirect": "/", "strip_query": True}, **public},
            {"from": f"https://app.test:{port}", "path": "/health",
             "response": {"status": 200, "body": "ok"}, **public},
            {"from": f"https://app.test:{port}", "prefix": "/gone",
             "response": {"status": 410}, **public},
            {"from": f"https://app.test:{port}", "response": {"status": 200, "body": "secret"},
             "allow_any_authenticated_user": True},
        ],
    }
    with AuthgateStack(workdir / "gate", config, ca_file=pki.ca_file):
        yield Actions(port, redirect_port, pki)


def test_redirect_route(actions: Actions) -> None:
    moved = actions.get(f"https://old.test:{actions.port}/docs/intro?lang=en")
    assert moved.status_code == 308
    assert moved.headers["location"] == f"https://app.test:{actions.port}/manual/intro?lang=en"
    home = actions.get(f"https://old.test:{actions.port}/anything?x=1")
    assert home.status_code == 301  # Envoy's default
    assert home.headers["location"] == f"https://old.test:{actions.port}/"


def test_response_route(actions: Actions) -> None:
    health = actions.get(f"https://app.test:{actions.port}/health")
    assert (health.status_code, health.text) == (200, "ok")
    assert actions.get(f"https://app.test:{actions.port}/gone/x").status_code == 410


def test_the_policy_still_applies(actions: Actions) -> None:
    answer = actions.get(f"https://app.test:{actions.port}/private")
    assert answer.status_code == 401
    assert "secret" not in answer.text


def test_http_redirect_addr_sends_plain_http_to_https(actions: Actions) -> None:
    answer = actions.get(f"http://app.test:{actions.redirect_port}/health?x=1")
    assert answer.status_code == 301
    assert answer.headers["location"] == f"https://app.test:{actions.port}/health?x=1"
