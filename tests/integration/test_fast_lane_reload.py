"""The fast lane across a reload (issue 15): passes minted before a policy change stop letting
requests through as soon as the reload lands, because Envoy's new config asks for the new policy
version; the next request takes a Check and gets the new decision."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.support.gate import Gate, eventually, gates
from tests.support.resolve import map_hosts

CHECKS = "cluster.authgate_authz.upstream_rq_total"
PASS_PREFIX = "__Host-_pomerium_fl_"


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    with gates(
        tmp_path_factory.mktemp("fast-lane-reload"), workers=1, extra={"fast_lane": True}
    ) as (gate,):
        yield gate


def checks(gate: Gate) -> int:
    """Check calls Envoy has sent to authz so far (Envoy's own counter)."""
    transport = httpx.HTTPTransport(uds=str(gate.stack.runtime_dir / "admin.sock"))
    with httpx.Client(transport=transport, timeout=10) as admin:
        text = admin.get("http://admin/stats", params={"filter": f"^{CHECKS}$"}).text
    return int(text.split(":")[1])


def test_a_reload_with_a_new_policy_retires_the_passes(gate: Gate) -> None:
    url = gate.url("jenkins.test", "/job/x")
    with map_hosts({"*.test": "127.0.0.1"}), gate.client() as browser:
        landed = gate.login(browser, "jenkins.test", "alice@example.com")
        assert landed.status_code == 200, landed.text[-300:]
        assert any(c.name.startswith(PASS_PREFIX) for c in browser.cookies.jar)
        browser.follow_redirects = False
        before = checks(gate)
        assert browser.get(url).status_code == 200
        assert checks(gate) == before  # served on the pass, no Check

        config = yaml.safe_load(gate.stack.config_path.read_text())
        config["routes"][0]["policy"] = [{"allow": {"and": [{"groups": {"has": "nobody"}}]}}]
        gate.stack.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        assert gate.stack.proc is not None
        gate.stack.proc.send_signal(signal.SIGHUP)

        took = eventually(lambda: browser.get(url).status_code == 403, within=10, step=0.1)
        denied_at = checks(gate)
        assert browser.get(url).status_code == 403
        assert checks(gate) > denied_at  # refused by a Check, not by a stale pass
    print(f"the old pass stopped working {took:.2f} s after SIGHUP")
