"""docker-compose: the image, Redis, the workers, and Prometheus and Grafana wired to them."""

from __future__ import annotations

import posixpath
import shlex
import tomllib
from pathlib import Path
from typing import Any

from .kit import (
    ALERTS,
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    GRAPH,
    PROMETHEUS,
    ROOT,
    Stage,
    image_metrics_port,
    load_yaml,
)


def compose() -> dict[str, Any]:
    value = load_yaml(COMPOSE)
    assert isinstance(value, dict)
    return value


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, whether written as a mapping or a list."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {key: str(value) for key, value in env.items()}


def streamcalc_image(services: dict[str, Any]) -> str:
    """The image name compose builds from the repository's Dockerfile."""
    (image,) = {s["image"] for s in services.values() if "build" in s}
    return str(image)


def worker_services(services: dict[str, Any]) -> dict[str, Any]:
    """Services that run the image's entrypoint (``streamcalc worker``) unchanged."""
    image = streamcalc_image(services)
    return {
        name: service
        for name, service in services.items()
        if service.get("image") == image and "entrypoint" not in service
    }


def bind_mount(service: dict[str, Any], container_path: str) -> Path:
    """The file of the deploy directory that a service sees at ``container_path``."""
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        target = rest.split(":")[0]
        if source.startswith(".") and (
            container_path == target or container_path.startswith(target.rstrip("/") + "/")
        ):
            return (DEPLOY / source / posixpath.relpath(container_path, target)).resolve()
    raise AssertionError(f"nothing is mounted at {container_path}")


def test_compose_builds_the_image_from_the_repository() -> None:
    services = compose()["services"]
    for service in services.values():
        if "build" in service:
            build = service["build"]
            assert (DEPLOY / build["context"]).resolve() == ROOT
            assert (DEPLOY / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()


def test_compose_redis_persists_with_aof() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7"), "KEDA's lagCount needs Redis 7"
    command = redis["command"]
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    assert words[words.index("--appendonly") + 1] == "yes"
    assert words[words.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.split(":")[1] == "/data" for volume in redis["volumes"])


def test_compose_runs_two_workers_after_the_graph_is_loaded(final: Stage) -> None:
    services = compose()["services"]
    workers = worker_services(services)
    assert len(workers) >= 2
    consumers = set()
    for worker in workers.values():
        env = environment(worker)
        assert env["STREAMCALC_REDIS_URL"].startswith("redis://redis:")
        consumers.add(env["STREAMCALC_CONSUMER"])
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
        after_graph = worker["depends_on"]["graph-load"]["condition"]
        assert after_graph == "service_completed_successfully"
        ports = {p.split(":")[-1] for p in worker["ports"]}
        assert str(image_metrics_port(final)) in ports
    assert len(consumers) == len(workers), "each worker needs its own consumer name"


def test_compose_graph_load_loads_the_example_graph() -> None:
    service = compose()["services"]["graph-load"]
    entrypoint = service["entrypoint"]
    assert entrypoint[:3] == ["streamcalc", "graph", "load"]
    assert bind_mount(service, entrypoint[3]) == GRAPH


def scrape_targets(job: str) -> set[str]:
    (config,) = [c for c in load_yaml(PROMETHEUS)["scrape_configs"] if c["job_name"] == job]
    assert config.get("metrics_path", "/metrics") == "/metrics"
    return {target for static in config["static_configs"] for target in static["targets"]}


def test_prometheus_scrapes_every_compose_worker(final: Stage) -> None:
    services = compose()["services"]
    expected = {
        f"{name}:{environment(worker).get('STREAMCALC_METRICS_PORT', image_metrics_port(final))}"
        for name, worker in worker_services(services).items()
    }
    assert scrape_targets("streamcalc") == expected


def test_prometheus_and_grafana_find_their_files_in_compose() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert bind_mount(prometheus, config_flag.partition("=")[2]) == PROMETHEUS
    for rule_file in load_yaml(PROMETHEUS)["rule_files"]:
        assert bind_mount(prometheus, rule_file) == ALERTS

    grafana = services["grafana"]
    provisioning = bind_mount(grafana, "/etc/grafana/provisioning")
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(provisioning / "dashboards" / "streamcalc.yml")["providers"]
    assert bind_mount(grafana, provider["options"]["path"] + "/streamcalc.json") == DASHBOARD
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert bind_mount(grafana, home) == DASHBOARD


def test_example_graph_is_the_seed_graph() -> None:
    graph = tomllib.loads(GRAPH.read_text())
    assert graph["defaults"]["ttl"] == "60s"
    assert graph["nodes"]["A"] == {"fn": "add", "args": ["C", "D", "E"]}
    assert graph["nodes"]["B"] == {"expr": "A * F"}
