"""The Grafana dashboard (compose/grafana/orchestrator-dashboard.json) cannot drift from the
code: every metric a panel queries exists in `orchestrator.metrics.REGISTRY` with the right
suffix for its type, and every label a query filters or groups on is one of that metric's labels
(or one Prometheus adds at scrape time). No servers needed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from orchestrator import metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "compose/grafana/orchestrator-dashboard.json"

# Series names a family exposes, by type (prometheus_client strips `_total` off counter names).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum", ""),
}
# Labels every series gets from the scrape (target labels) or from its type.
SCRAPE_LABELS = {"instance", "job"}
METRIC_RE = re.compile(r"\b(orc_[a-zA-Z0-9_]+)\b")
SELECTOR_RE = re.compile(r"\b(orc_[a-zA-Z0-9_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def series_labels() -> dict[str, set[str]]:
    """Every series name the registry exposes -> the labels it may carry."""
    labels_of = {
        m._name: set(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    out: dict[str, set[str]] = {}
    for family in metrics.REGISTRY.collect():
        labels = labels_of.get(family.name, set()) | SCRAPE_LABELS
        for suffix in SUFFIXES[family.type]:
            out[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def expressions(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = [
        (f"panel {p.get('title')!r}", t["expr"])
        for p in panels(doc)
        for t in p.get("targets", [])
        if t.get("expr")
    ]
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]
            out.append((f"variable {var['name']!r}", q["query"] if isinstance(q, dict) else q))
    return out


def test_every_metric_in_the_dashboard_exists() -> None:
    known = series_labels()
    seen = set()
    problems = []
    for where, expr in expressions(dashboard()):
        for name in METRIC_RE.findall(expr):
            seen.add(name)
            if name not in known:
                problems.append(f"{where}: {name} is not exported by orchestrator.metrics")
    assert not problems, "\n".join(problems)
    assert seen, "the dashboard queries no orc_ metric at all"


def test_every_label_in_the_dashboard_exists() -> None:
    known = series_labels()
    problems = []
    for where, expr in expressions(dashboard()):
        names = [n for n in METRIC_RE.findall(expr) if n in known]
        for name, matchers in SELECTOR_RE.findall(expr):
            for label in MATCHER_RE.findall(matchers):
                if name in known and label not in known[name]:
                    problems.append(f"{where}: {name} has no label {label!r}")
        usable = set().union(*(known[n] for n in names)) if names else set()
        for group in GROUPING_RE.findall(expr):
            for label in (x.strip() for x in group.split(",")):
                if label and label not in usable:
                    problems.append(f"{where}: no metric in {expr!r} has label {label!r}")
    assert not problems, "\n".join(problems)


def test_panels_cover_the_important_metrics() -> None:
    used = {n for _, e in expressions(dashboard()) for n in METRIC_RE.findall(e)}
    for family in (
        "orc_reparent_total",
        "orc_reparent_duration_seconds_bucket",
        "orc_health_check_duration_seconds_bucket",
        "orc_health_check_failures_total",
        "orc_tablets",
        "orc_recoveries_total",
        "orc_lock_wait_seconds_bucket",
        "orc_etcd_operation_duration_seconds_bucket",
        "orc_outbox_depth",
        "orc_leader",
    ):
        assert family in used, f"no panel shows {family}"


def test_dashboard_is_well_formed() -> None:
    doc = dashboard()
    assert doc["uid"] and doc["title"]
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in doc["templating"]["list"]}
    for p in panels(doc):
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['title']!r} has no query"
        assert p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            for var in re.findall(r"\$(?:\{)?([a-zA-Z_]+)", t["expr"]):
                assert var in variables or var.startswith("__"), f"unknown variable ${var}"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel {p['title']!r} is off the grid"


@pytest.mark.parametrize(
    "expr, ok",
    [
        ("sum(rate(orc_reparent_total[5m]))", True),
        ("sum(rate(orc_reparent_totl[5m]))", False),
        ("orc_leader_total", False),  # a gauge has no _total series
        ('sum by (action) (orc_reparent_total{result="failed"})', True),
    ],
)
def test_the_checker_itself_catches_drift(expr: str, ok: bool) -> None:
    known = series_labels()
    assert all(n in known for n in METRIC_RE.findall(expr)) is ok


def test_the_label_checker_catches_a_wrong_label() -> None:
    known = series_labels()
    assert "action" in known["orc_reparent_total"]
    assert "shard" not in known["orc_reparent_total"]
    assert "le" in known["orc_lock_wait_seconds_bucket"]
