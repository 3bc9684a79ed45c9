"""The Kubernetes manifests: the worker Deployment, its Service, KEDA and the graph-load Job."""

from __future__ import annotations

import re
from typing import Any

from streamcalc.metrics import PENDING, STREAM_LAG

from .kit import GRAPH, K8S, Stage, image_metrics_port, load_yaml, load_yaml_documents
from .test_monitoring import unknown_metrics


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of the Kubernetes manifests, by (kind, name)."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in load_yaml_documents(path):
            if document and "kind" in document and document["kind"] != "Kustomization":
                objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def the_one(kind: str) -> dict[str, Any]:
    (found,) = [obj for (k, _), obj in k8s_objects().items() if k == kind]
    return found


def worker_deployment() -> dict[str, Any]:
    return the_one("Deployment")


def worker_container() -> dict[str, Any]:
    (container,) = worker_deployment()["spec"]["template"]["spec"]["containers"]
    return dict(container)


def worker_config() -> dict[str, str]:
    """The ConfigMap the worker container takes its environment from."""
    objects = k8s_objects()
    names = [ref["configMapRef"]["name"] for ref in worker_container().get("envFrom", [])]
    config: dict[str, str] = {}
    for name in names:
        config.update(objects[("ConfigMap", name)]["data"])
    return config


def container_env_names(container: dict[str, Any]) -> set[str]:
    return set(worker_config()) | {item["name"] for item in container.get("env", [])}


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == manifests - {"secret.example.yaml"}
    assert "secret.example.yaml" in manifests, "show the Secret the workers need"


def test_deployment_runs_the_image_entrypoint_with_redis_url_from_a_secret() -> None:
    container = worker_container()
    assert "command" not in container, "keep the image's `streamcalc worker` entrypoint"
    env = {item["name"]: item for item in container["env"]}
    url = env["STREAMCALC_REDIS_URL"]
    assert "value" not in url, "the Redis URL may hold a password: take it from a Secret"
    assert url["valueFrom"]["secretKeyRef"]["name"]
    secret = k8s_objects()[("Secret", url["valueFrom"]["secretKeyRef"]["name"])]
    assert url["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]


def test_deployment_probes_healthz_on_the_metrics_port(final: Stage) -> None:
    container = worker_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["metrics"] == image_metrics_port(final)
    assert container_env_names(container) >= {"STREAMCALC_METRICS_PORT"}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert ports.get(get["port"], get["port"]) == image_metrics_port(final)


def test_deployment_stops_gracefully_and_is_bounded() -> None:
    spec = worker_deployment()["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert spec["securityContext"]["runAsNonRoot"] is True
    resources = worker_container()["resources"]
    assert set(resources["requests"]) >= {"cpu", "memory"}
    assert "memory" in resources["limits"]
    assert "replicas" not in worker_deployment()["spec"], "KEDA owns the replica count"


def test_metrics_service_selects_the_workers(final: Stage) -> None:
    service = the_one("Service")
    labels = worker_deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == image_metrics_port(final)
    assert port["targetPort"] in {"metrics", image_metrics_port(final)}
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(image_metrics_port(final))
    assert annotations["prometheus.io/path"] == "/metrics"


def test_keda_scales_the_worker_deployment_on_the_total_lag_of_every_partition() -> None:
    scaled = the_one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker_deployment()["metadata"]["name"]
    assert scaled["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    # One series per partition (every worker reports every partition), then the total.
    query = " ".join(meta["query"].split())
    assert query.startswith("sum(max by (partition) (streamcalc_stream_lag")
    assert unknown_metrics([query]) == set()
    assert re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:\d+)?/?", meta["serverAddress"])
    assert int(meta["threshold"]) > 0
    assert int(meta["activationThreshold"]) >= 0
    assert scaled["spec"]["minReplicaCount"] >= 1
    assert scaled["spec"]["maxReplicaCount"] >= scaled["spec"]["minReplicaCount"]


def test_the_lag_gauge_keda_scales_on_has_a_partition_label() -> None:
    assert STREAM_LAG._labelnames == ("partition",)
    assert PENDING._labelnames == ("partition",)


def test_no_manifest_sets_what_only_the_redis_streams_scaler_needed() -> None:
    names = container_env_names(worker_container())
    assert "REDIS_PASSWORD" not in names
    assert "REDIS_ADDRESS" not in worker_config()


def test_graph_load_job_loads_the_example_graph() -> None:
    objects = k8s_objects()
    job = the_one("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["streamcalc", "graph", "load"]
    (mount,) = container["volumeMounts"]
    (volume,) = job["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"]
    directory, _, key = command[3].rpartition("/")
    assert directory == mount["mountPath"]
    graph = objects[("ConfigMap", volume["configMap"]["name"])]["data"][key]
    assert graph == GRAPH.read_text(), "graph-configmap.yaml and graph.toml differ"
    assert container["image"] == worker_container()["image"]
