"""The dashboard, the recording rules and `tsmindex status` refer only to metrics something exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import Metric
from prometheus_client.metrics import MetricWrapperBase
from sqlalchemy.orm import sessionmaker

from services.core import metrics
from workers.cli.status import PROMETHEUS_FIGURES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "tsmindex.json"
RULES = ROOT / "infra" / "prometheus" / "rules" / "tsmindex.yml"
TORCHSERVE_METRICS = ROOT / "infra" / "torchserve" / "metrics.yaml"
PROMETHEUS_BUILTINS = {"up"}

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names an expression selects; functions and label names excluded."""
    text = _RANGES.sub("", _GROUPING.sub("", _MATCHERS.sub("", _STRINGS.sub("", expr))))
    return {m for m in _IDENT.findall(text) if m not in _KEYWORDS}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _sample_names(family: Metric) -> set[str]:
    name = family.name
    if family.type == "counter":
        return {f"{name}_total"}
    if family.type == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def declared_metrics() -> set[str]:
    """Series names tsmindex exports itself (services.core.metrics) plus TorchServe's (metrics.yaml)."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= _sample_names(family)
    collector = metrics.PlatformCollector(sessionmaker(), "redis://unused", queues=["index"])
    for family in collector.describe():
        names |= _sample_names(family)
    torchserve = yaml.safe_load(TORCHSERVE_METRICS.read_text())
    for section in ("ts_metrics", "model_metrics"):
        for kind, entries in torchserve[section].items():
            for entry in entries:
                name = entry["name"]
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


def test_every_tsmindex_metric_is_prefixed_and_in_base_units() -> None:
    ours = {n for n in declared_metrics() if n.startswith("tsmindex_")}
    assert "tsmindex_handler_batch_size_bucket" in ours  # the handler's histogram, via metrics.yaml
    assert {"tsmindex_queue_depth", "tsmindex_jobs_in_flight", "tsmindex_backfill_jobs"} <= ours
    for name in ours:
        assert not re.search(r"_(ms|milliseconds|microseconds|kb|mb)(_|$)", name), name


def test_the_metric_name_parser() -> None:
    expr = (
        'sum(max by (status) (tsmindex_backfill_jobs{status=~"succeeded|failed"})) '
        "/ clamp_min(max(tsmindex_backfill_objects_listed[5m] offset 1m), 1e-9) / 1e6"
    )
    assert metric_names(expr) == {"tsmindex_backfill_jobs", "tsmindex_backfill_objects_listed"}
    assert metric_names("stage:tsmindex_stage_duration_seconds:p95_5m") == {
        "stage:tsmindex_stage_duration_seconds:p95_5m"
    }


def test_recording_rules_use_exported_metrics_only() -> None:
    known = declared_metrics() | PROMETHEUS_BUILTINS
    for rule in _rules():
        assert metric_names(rule["expr"]) - known == set(), rule["record"]


@pytest.mark.parametrize("expr", dashboard_expressions())
def test_no_panel_refers_to_a_metric_nothing_exports(expr: str) -> None:
    known = declared_metrics() | PROMETHEUS_BUILTINS | {rule["record"] for rule in _rules()}
    names = metric_names(expr)
    assert names, expr
    assert names - known == set()


def test_status_figures_use_exported_metrics_only() -> None:
    known = declared_metrics() | PROMETHEUS_BUILTINS
    for name, expr, _label, _fmt in PROMETHEUS_FIGURES:
        assert metric_names(expr) - known == set(), name


def test_dashboard_panels_have_unique_ids_and_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load(
        (ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["description"], panel["title"]
