"""Decision logs (issue 12): one JSON line per decision, with the rule that decided, and
never a cookie, token, code or secret; Envoy's access log is JSON without them too.

Real `authgate run` (Envoy + 2 workers) and the real test IdP; the lines are read from the
run's own stderr/stdout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from tests.support.gate import Gate, eventually, gates
from tests.support.ops import decisions, json_lines, route_ids
from tests.support.resolve import map_hosts

ALICE = "alice@example.com"
BOB = "bob@evil.org"
QUERY_SECRET = "q-token-5b1e0c9d7a"  # a token a client put in the query string


def _login(gate: Gate, client: httpx.Client, host: str, email: str) -> list[str]:
    """Sign in; the OAuth code and state the IdP sent back (they must never be logged)."""
    page = gate.login(client, host, email)
    seen = []
    for answer in [*page.history, page]:
        query = parse_qs(urlsplit(str(answer.request.url)).query)
        seen += query.get("code", []) + query.get("state", [])
    assert seen, "no OAuth callback seen"
    return seen


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One run, some traffic, and every secret the test saw along the way."""
    with (
        gates(tmp_path_factory.mktemp("decisions"), workers=2) as (gate,),
        map_hosts({"*.test": "127.0.0.1"}),  # module scope: before the per-test mapping
    ):
        config = yaml.safe_load(gate.stack.config_path.read_text())
        secrets = [config["cookie_secret"], config["signing_key"], config["idp_client_secret"]]
        request_ids: dict[str, list[str]] = {}
        with gate.client() as alice:
            secrets += _login(gate, alice, "jenkins.test", ALICE)
            for _ in range(4):  # the first answer is kept; the rest are reused from the memo
                answer = alice.get(gate.url("jenkins.test", f"/job/x?token={QUERY_SECRET}"))
                assert answer.status_code == 200
                echoed = answer.json()["headers"]
                secrets.append(echoed["x-pomerium-jwt-assertion"])
                request_ids.setdefault("allow", []).append(echoed["x-request-id"])
            secrets += [c.value for c in alice.cookies.jar if c.value]
        with gate.client() as bob:
            secrets += _login(gate, bob, "jenkins.test", BOB)
            assert bob.get(gate.url("jenkins.test", "/")).status_code == 403
            secrets += [c.value for c in bob.cookies.jar if c.value]
        with gate.client(follow=False) as anonymous:
            assert anonymous.get(gate.url("other.test", "/")).status_code == 302
        with gate.client(accept="application/json") as script:
            bearer = {"authorization": "Bearer not-a-real-token-3f9a"}
            assert script.get(gate.url("other.test", "/"), headers=bearer).status_code == 401
            secrets.append("not-a-real-token-3f9a")
        ids = route_ids(gate.stack.config_path)
        want = 4 + 2  # at least: alice's four allows, bob's deny, the anonymous redirect
        eventually(lambda: len(decisions(gate.stack.log())) >= want, within=10.0, step=0.2)
        # `authgate run` passes Envoy's stdout (the access log) through to its own.
        access_log = gate.stack.log_path
        yield {
            "gate": gate,
            "log": gate.stack.log(),
            "access_log": access_log,
            "secrets": [s for s in secrets if s],
            "ids": ids,
            "request_ids": request_ids,
        }


def test_every_json_line_parses_and_no_secret_is_logged(traffic: dict[str, Any]) -> None:
    lines = json_lines(traffic["log"])  # json.loads raises on any line that is not JSON
    assert lines
    for secret in traffic["secrets"]:
        assert secret not in traffic["log"], f"a secret was logged: {secret[:12]}..."
    assert QUERY_SECRET not in traffic["log"]


def test_decision_lines_name_request_route_user_outcome_and_rule(
    traffic: dict[str, Any],
) -> None:
    jenkins, other = traffic["ids"]["jenkins.test"], traffic["ids"]["other.test"]
    lines = decisions(traffic["log"])
    for line in lines:
        assert set(line) >= {
            "time", "level", "event", "request_id", "route", "host", "path", "user",
            "outcome", "rule", "latency_ms",
        }, line
        assert "?" not in line["path"]
        assert line["latency_ms"] >= 0
    allows = [d for d in lines if d["route"] == jenkins and d["outcome"] == "allow"]
    assert [d["request_id"] for d in allows[-4:]] == traffic["request_ids"]["allow"]
    for line in allows[-4:]:  # kept answers log like fresh ones
        assert line["user"] == ALICE
        assert line["rule"] == "allow[0]"
        assert line["path"] == "/job/x"
        assert line["host"].startswith("jenkins.test")
    denied = [d for d in lines if d["route"] == jenkins and d["outcome"] == "deny"]
    assert any(d["user"] == BOB and d["rule"] == "no allow matched" for d in denied)
    assert any(
        d["route"] == other and d["outcome"] == "sign_in_redirect" and d["user"] is None
        for d in lines
    )
    assert any(d["route"] == "__authenticate__" and d["outcome"] == "endpoint" for d in lines)


def test_one_decision_line_per_check(traffic: dict[str, Any]) -> None:
    """Alice's four requests: four lines, each with its own request id (no double logging)."""
    ids = [d["request_id"] for d in decisions(traffic["log"]) if d["request_id"]]
    assert len(ids) == len(set(ids))


def test_envoy_access_log_is_json_without_query_or_credentials(traffic: dict[str, Any]) -> None:
    path: Path = traffic["access_log"]
    wanted = set(traffic["request_ids"]["allow"])

    def logged() -> list[dict[str, Any]]:
        text = path.read_text(errors="replace")
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [line for line in lines if "event" not in line]  # Envoy's, not authgate's

    eventually(lambda: wanted <= {e.get("request_id") for e in logged()}, within=15.0, step=0.3)
    entries = [e for e in logged() if e.get("request_id") in wanted]
    for entry in entries:
        assert entry["path"] == "/job/x"
        assert entry["status"] == 200
        assert entry["method"] == "GET"
        assert entry["authority"].startswith("jenkins.test")
        assert entry["upstream"]
    text = path.read_text(errors="replace")
    for secret in [*traffic["secrets"], QUERY_SECRET]:
        assert secret not in text
