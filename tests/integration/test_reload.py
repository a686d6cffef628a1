"""`authgate run` reloads without a failed request (issue 12): SIGHUP or a changed file starts a
new generation of workers and switches Envoy's xDS files; a broken config is refused and the old
keeps serving; a renewed certificate is served without a restart.

One real run (Envoy + 2 workers + the test IdP), file watch on (the default)."""

from __future__ import annotations

import signal
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.certs import make_pki
from tests.support.gate import HOSTS, SESSION_COOKIE, Gate, cookie_of, eventually, gates
from tests.support.hammer import Hammer, run_state
from tests.support.resolve import map_hosts
from tests.support.stack import free_port

REDIRECT_PORT = free_port()


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    """With a second listener (http_redirect_addr): two route tables for Envoy's RDS."""
    extra = {"http_redirect_addr": f"127.0.0.1:{REDIRECT_PORT}"}
    with gates(tmp_path_factory.mktemp("reload"), workers=2, extra=extra) as (gate,):
        yield gate


@pytest.fixture(scope="module")
def cookies(gate: Gate) -> dict[str, str]:
    """alice's session cookie for each app host."""
    with map_hosts({"*.test": "127.0.0.1"}), gate.client() as browser:
        landed = gate.login(browser, "jenkins.test", "alice@example.com")
        assert landed.status_code == 200, landed.text[-500:]
        assert browser.get(gate.url("other.test", "/")).status_code == 200
        return {host: cookie_of(browser, host) for host in ("jenkins.test", "other.test")}


@pytest.fixture(autouse=True)
def hosts() -> Iterator[None]:
    with map_hosts({"*.test": "127.0.0.1"}):
        yield


def config_of(gate: Gate) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(gate.stack.config_path.read_text())
    return loaded


def write_config(gate: Gate, config: dict[str, Any]) -> None:
    gate.stack.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def hangup(gate: Gate) -> None:
    assert gate.stack.proc is not None
    gate.stack.proc.send_signal(signal.SIGHUP)


def jenkins_status(gate: Gate, cookies: dict[str, str]) -> int:
    return gate.get("jenkins.test", "/job/x", cookies["jenkins.test"]).status_code


def redirected(gate: Gate) -> bool:
    answer = httpx.get(f"http://127.0.0.1:{REDIRECT_PORT}/x", headers={"host": "jenkins.test"})
    return answer.status_code == 301 and answer.headers["location"].startswith("https://")


def test_sighup_applies_a_policy_change_while_another_route_serves(
    gate: Gate, cookies: dict[str, str]
) -> None:
    before = run_state(gate.stack.runtime_dir)
    assert jenkins_status(gate, cookies) == 200
    config = config_of(gate)
    config["routes"][0]["policy"] = [{"allow": {"and": [{"groups": {"has": "nobody"}}]}}]
    with Hammer(gate, "other.test", "/", cookies["other.test"], threads=4) as load:
        eventually(lambda: load.total() > 20, within=20)
        write_config(gate, config)
        hangup(gate)
        took = eventually(lambda: jenkins_status(gate, cookies) == 403, within=5, step=0.1)
        # The old generation finishes its Checks and stops while the load goes on.
        eventually(lambda: "reloaded: generation" in gate.stack.log(), within=10)
        eventually(lambda: len(list(gate.stack.runtime_dir.glob("authz-*.ready"))) == 2,
                   within=10)
        count = load.total()
        eventually(lambda: load.total() > count + 40, within=20)
    assert load.errors == [], load.errors[:5]
    assert set(load.statuses) == {200}, load.statuses  # the same session throughout
    after = run_state(gate.stack.runtime_dir)
    assert after["generation"] > before["generation"]
    assert after["envoy_pid"] == before["envoy_pid"]  # no Envoy restart
    assert not set(w["pid"] for w in after["workers"]) & set(w["pid"] for w in before["workers"])
    assert "reloading (SIGHUP)" in gate.stack.log()
    assert redirected(gate)  # the other listener's routes came through the reload too
    print(f"new decision {took:.2f} s after SIGHUP; {load.statuses[200]} requests, all 200")


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda c: c.update(routes="not a list"), "config error: routes"),
        (lambda c: c["routes"][1].update(policy=[{"allow": {"and": [{"nonsense": 1}]}}]),
         "config error"),
        (lambda c: c.update(certificate_file="/nonexistent/cert.pem"),
         "cannot read /nonexistent/cert.pem: No such file or directory"),
    ],
    ids=["not-a-list", "unknown-criterion", "missing-certificate"],
)
def test_a_broken_config_is_refused_and_the_old_one_keeps_serving(
    gate: Gate, cookies: dict[str, str], breakage: Any, reason: str
) -> None:
    good = config_of(gate)
    before = run_state(gate.stack.runtime_dir)
    decided = jenkins_status(gate, cookies)
    refusals = gate.stack.log().count("reload refused")
    broken = config_of(gate)
    breakage(broken)
    try:
        write_config(gate, broken)
        hangup(gate)
        eventually(lambda: gate.stack.log().count("reload refused") > refusals, within=10)
        assert reason in gate.stack.log().split("reloading (")[-1]
        assert gate.get("other.test", "/", cookies["other.test"]).status_code == 200
        assert jenkins_status(gate, cookies) == decided  # the old policies still decide
        assert run_state(gate.stack.runtime_dir)["generation"] == before["generation"]
        assert gate.stack.proc is not None and gate.stack.proc.poll() is None
    finally:
        write_config(gate, good)
        hangup(gate)
    generation = before["generation"]
    eventually(lambda: run_state(gate.stack.runtime_dir)["generation"] > generation, within=10)


def served_certificate(port: int) -> bytes:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return ssl.PEM_cert_to_DER_cert(pem)


def test_a_renewed_certificate_is_served_without_a_restart(
    gate: Gate, cookies: dict[str, str], tmp_path: Path
) -> None:
    before = run_state(gate.stack.runtime_dir)
    renewed = make_pki(tmp_path / "renewed", HOSTS)
    new_der = ssl.PEM_cert_to_DER_cert(renewed.cert_pem.decode())
    assert served_certificate(gate.port) != new_der
    # Renewed in place, as certbot's deploy hook or a copy would (the key first).
    gate.pki.key_file.write_bytes(renewed.key_pem)
    gate.pki.cert_file.write_bytes(renewed.cert_pem)
    eventually(lambda: served_certificate(gate.port) == new_der, within=10, step=0.2)
    after = run_state(gate.stack.runtime_dir)
    assert after["envoy_pid"] == before["envoy_pid"]
    assert after["workers"] == before["workers"]  # a certificate alone needs no new workers
    assert gate.stack.proc is not None and gate.stack.proc.poll() is None
    # Sessions survive the reload; clients now trust the new CA.
    with httpx.Client(verify=renewed.client_ssl_context(), timeout=15) as client:
        answer = client.get(
            gate.url("other.test", "/"),
            headers={"host": gate.host("other.test"),
                     "cookie": f"{SESSION_COOKIE}={cookies['other.test']}"},
        )
    assert answer.status_code == 200, answer.text[:300]
