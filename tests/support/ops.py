"""Reading authgate's ops endpoint and logs in tests: /metrics samples, decision lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from authgate.config import build_runtime, load_settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str, path: str = "/metrics") -> Samples:
    """Every sample on the page, by name and sorted labels."""
    answer = httpx.get(f"{base}{path}", timeout=15)
    assert answer.status_code == 200, answer.text
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def route_ids(config_path: Path) -> dict[str, str]:
    """Route id by the route's host name, as the decision log and metrics name routes."""
    cfg = build_runtime(load_settings(config_path), warn=False)
    return {route.hostname: rid for rid, route in cfg.routes_by_id.items()}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every JSON line of a log (each must parse); other lines (plain `authgate:` messages,
    Envoy's own log) are skipped."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def decisions(text: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(text) if line.get("event") == "decision"]
