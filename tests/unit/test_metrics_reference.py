"""docs/metrics.md lists exactly the metrics Herald registers, with their type and labels, and the
registered metrics follow the naming rules (prefix, `_total` counters, no channel or socket label)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY, Metric

import shared.metrics
import trigger_api.metrics  # noqa: F401  (registers the HTTP API's metrics)

ROOT = Path(__file__).resolve().parents[2]
ROW_RE = re.compile(r"^\| `(?P<name>herald_\w+)` \| (?P<type>\w+) \|(?P<labels>[^|]*)\|")
FORBIDDEN_LABELS = {"channel", "channel_name", "socket", "socket_id", "user", "user_id"}


def documented() -> dict[str, tuple[str, set[str]]]:
    rows = {}
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        if m := ROW_RE.match(line):
            labels = set(re.findall(r"`(\w+)`", m.group("labels")))
            rows[m.group("name")] = (m.group("type"), labels)
    return rows


def registered() -> dict[str, tuple[str, set[str]]]:
    out: dict[str, tuple[str, set[str]]] = {}
    for collector in list(REGISTRY._collector_to_names):  # every collector, including SampledGauges
        describe = getattr(collector, "describe", None)
        families: list[Metric] = list(describe() if describe else collector.collect())
        for family in families:
            if not family.name.startswith("herald_"):
                continue
            labels: set[str] = set(getattr(collector, "_labelnames", ()) or getattr(collector, "labelnames", ()))
            for sample in family.samples:
                labels |= set(sample.labels) - {"le"}
            name = family.name + ("_total" if family.type == "counter" else "")
            out[name] = (family.type, labels)
    return out


def test_every_registered_metric_is_documented_with_its_type_and_labels() -> None:
    docs, code = documented(), registered()
    assert sorted(set(code) - set(docs)) == [], "registered but not in docs/metrics.md"
    assert sorted(set(docs) - set(code)) == [], "in docs/metrics.md but not registered"
    for name, (kind, labels) in code.items():
        assert docs[name] == (kind, labels), f"{name}: docs say {docs[name]}, code registers {(kind, labels)}"


def test_names_follow_the_rules() -> None:
    for name, (kind, labels) in registered().items():
        assert re.fullmatch(r"herald_[a-z0-9_]+", name), name
        assert (kind == "counter") == name.endswith("_total"), name
        assert not labels & FORBIDDEN_LABELS, f"{name} has an unbounded label"
    assert shared.metrics.PRESENCE_MEMBERS.name == "herald_presence_members"
