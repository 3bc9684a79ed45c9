"""The kit's files, and the Prometheus alerts and Grafana dashboard against the code's metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from streamcalc import metrics
from streamcalc.metrics import METRIC_NAMES

from .kit import ALERTS, DASHBOARD, DEPLOY, DEPLOY_DATA_FILES, load_yaml, load_yaml_documents


def test_the_kit_is_complete() -> None:
    expected = {
        "README.md",
        "docker-compose.yml",
        "graph.toml",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "grafana/dashboards/streamcalc.json",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "k8s/keda-scaledobject.yaml",
        "k8s/kustomization.yaml",
    }
    present = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert expected <= present, f"missing: {sorted(expected - present)}"


@pytest.mark.parametrize(
    "path", DEPLOY_DATA_FILES, ids=[p.relative_to(DEPLOY).as_posix() for p in DEPLOY_DATA_FILES]
)
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    if path.suffix == ".json":
        documents = [json.loads(path.read_text())]
    else:
        documents = load_yaml_documents(path)
    assert documents
    assert all(isinstance(document, dict) for document in documents), "each document is a mapping"


def histogram_names() -> set[str]:
    """Names of the histogram families of ``streamcalc.metrics`` (exposed only with suffixes)."""
    return {
        family.name
        for collector in vars(metrics).values()
        if isinstance(collector, MetricWrapperBase)
        for family in collector.describe()
        if family.type == "histogram"
    }


_METRIC = re.compile(r"\bstreamcalc_[a-z0-9_]+")
_HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def unknown_metrics(exprs: list[str]) -> set[str]:
    """Metric names used in PromQL ``exprs`` that streamcalc does not expose.

    A histogram exists only as ``_bucket``, ``_sum`` and ``_count`` series; any other
    name must be one of ``METRIC_NAMES`` as it is.
    """
    histograms = histogram_names()
    unknown = set()
    for name in {m for expr in exprs for m in _METRIC.findall(expr)}:
        base = _HISTOGRAM_SUFFIX.sub("", name)
        if base != name and base in histograms and base in METRIC_NAMES:
            continue
        if name in METRIC_NAMES and name not in histograms:
            continue
        unknown.add(name)
    return unknown


def strings_in(value: Any) -> Iterator[str]:
    """Every string anywhere inside a parsed JSON or YAML value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def dashboard() -> dict[str, Any]:
    value = json.loads(DASHBOARD.read_text())
    assert isinstance(value, dict)
    return value


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, including panels nested in rows."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in panels(dashboard()) for target in panel.get("targets", [])]


def test_the_metric_checker_rejects_what_is_not_exposed() -> None:
    assert histogram_names() >= {"streamcalc_batch_seconds", "streamcalc_event_latency_seconds"}
    assert unknown_metrics(["rate(streamcalc_readings_total[1m])"]) == set()
    assert unknown_metrics(["streamcalc_batch_seconds_count"]) == set()
    assert unknown_metrics(["streamcalc_batch_seconds"]) == {"streamcalc_batch_seconds"}
    assert unknown_metrics(["streamcalc_pending_count"]) == {"streamcalc_pending_count"}
    assert unknown_metrics(["streamcalc_readings"]) == {"streamcalc_readings"}


def test_dashboard_uses_only_metrics_the_code_exposes() -> None:
    assert dashboard_exprs()
    # Every string: panel queries, variable queries, descriptions.
    assert unknown_metrics(list(strings_in(dashboard()))) == set()


def test_alert_rules_use_only_metrics_the_code_exposes() -> None:
    rules = [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]
    assert rules
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}
    assert unknown_metrics([rule["expr"] for rule in rules]) == set()


def any_expr(exprs: list[str], *needles: str) -> bool:
    """Whether one expression contains every needle."""
    return any(all(needle in expr for needle in needles) for expr in exprs)


def test_dashboard_covers_the_operating_questions() -> None:
    exprs = dashboard_exprs()
    covered = {
        "throughput": any_expr(exprs, "rate(streamcalc_entries_total", 'outcome="ok"')
        and any_expr(exprs, "rate(streamcalc_readings_total")
        and any_expr(exprs, "rate(streamcalc_derived_total"),
        "latency p50": any_expr(
            exprs, "histogram_quantile(0.5,", "streamcalc_event_latency_seconds_bucket"
        ),
        "latency p99": any_expr(
            exprs, "histogram_quantile(0.99,", "streamcalc_event_latency_seconds_bucket"
        ),
        "batch time": any_expr(exprs, "histogram_quantile(", "streamcalc_batch_seconds_bucket"),
        "lag": any_expr(exprs, "streamcalc_stream_lag"),
        "pending": any_expr(exprs, "streamcalc_pending"),
        "dead letters": any_expr(exprs, "streamcalc_entries_total", 'outcome="dead"')
        and any_expr(exprs, "streamcalc_function_errors_total"),
        "node staleness": any_expr(exprs, "by (node)", "streamcalc_node_staleness_seconds"),
        "total lag": any_expr(exprs, "sum(max by (partition) (streamcalc_stream_lag"),
        "lag per partition": any_expr(exprs, "max by (partition) (streamcalc_stream_lag"),
        "partitions owned": any_expr(exprs, "streamcalc_partitions_owned"),
        "rebalances": any_expr(exprs, "streamcalc_rebalances_total"),
    }
    assert [topic for topic, ok in covered.items() if not ok] == []


def test_dashboard_panels_are_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "streamcalc"
    all_panels = list(panels(board))
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in all_panels:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'job=~"$job"' in target["expr"], f"{panel['title']}: filter by $job"


def test_lag_and_pending_are_taken_once_per_partition() -> None:
    """Every worker reports every partition: a query adds partitions, never workers' copies."""
    rules = [rule["expr"] for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]
    for expr in [*dashboard_exprs(), *rules]:
        for gauge in ("streamcalc_stream_lag", "streamcalc_pending"):
            for use in expr.split(gauge)[:-1]:
                assert use.rstrip().endswith("max by (partition) ("), f"{gauge} in {expr!r}"


def test_alerts_cover_partitions() -> None:
    rules = {
        rule["alert"]: rule["expr"] for g in load_yaml(ALERTS)["groups"] for rule in g["rules"]
    }
    assert "sum(max by (partition) (streamcalc_stream_lag))" in rules["StreamcalcLagHigh"]
    assert "streamcalc_rebalances_total" in rules["StreamcalcRebalancing"]
    assert "streamcalc_partitions_owned" in rules["StreamcalcNoPartitionOwned"]
