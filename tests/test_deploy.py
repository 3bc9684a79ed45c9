"""The deployment kit agrees with the code: Dockerfile, compose, Prometheus, Grafana, Kubernetes.

No Docker engine runs in CI, so the image is checked by replaying its steps: the slow
test builds the wheel as the builder stage does, installs it into a fresh virtualenv as
the final stage does, and runs the image's entrypoint there.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from streamcalc import metrics
from streamcalc.keys import Keys
from streamcalc.metrics import METRIC_NAMES
from streamcalc.settings import DEFAULT_GROUP, DEFAULT_NS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamcalc.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
GRAPH = DEPLOY / "graph.toml"

DEPLOY_DATA_FILES = sorted(
    p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in {".yml", ".yaml", ".json"}
)


# --------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    """One ``FROM`` stage of the Dockerfile: its base image, name and instructions."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, op: str) -> list[str]:
        """The arguments of every instruction ``op`` of this stage, in order."""
        return [args for name, args in self.instructions if name == op]


def dockerfile_lines(text: str) -> Iterator[str]:
    """Logical lines: continuation lines joined, comments and blank lines dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile, with global ``ARG`` defaults substituted into ``FROM``."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in dockerfile_lines(text):
        op, _, args = line.partition(" ")
        op, args = op.upper(), args.strip()
        if op == "FROM":
            for key, value in global_args.items():
                args = args.replace("${" + key + "}", value).replace("$" + key, value)
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages and op == "ARG":
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((op, args))
    return stages


def parse_env(args: str) -> dict[str, str]:
    """The variables of one ``ENV K=V ...`` instruction."""
    env = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        assert sep, f"ENV {args!r}: use the KEY=VALUE form"
        env[key] = value
    return env


def split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    """The ``--flag=value`` options of an instruction (``RUN --mount=...``), and the rest."""
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (``ENTRYPOINT [...]``, ``CMD [...]``)."""
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    assert all(isinstance(word, str) for word in value)
    return value


def healthcheck_command(stage: Stage) -> list[str]:
    """The exec-form command of the stage's ``HEALTHCHECK``."""
    (args,) = stage.args("HEALTHCHECK")
    _, _, command = args.partition("CMD ")
    return exec_form(command.strip())


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def image_env(stage: Stage) -> dict[str, str]:
    """Every variable the stage's ``ENV`` instructions set."""
    env: dict[str, str] = {}
    for args in stage.args("ENV"):
        env.update(parse_env(args))
    return env


def image_metrics_port(stage: Stage) -> int:
    """The metrics port the image's workers serve on (its ``STREAMCALC_METRICS_PORT``)."""
    return int(image_env(stage)["STREAMCALC_METRICS_PORT"])


def test_dockerfile_is_multi_stage_on_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert stages[0].name == "builder"
    for stage in stages:
        assert stage.base == "python:3.11-slim"
    builds = [words for _, words in map(split_flags, stages[0].args("RUN"))]
    assert any(words[:2] == ["pip", "wheel"] for words in builds), "the builder builds the wheel"


def test_final_stage_installs_the_wheel_only(final: Stage) -> None:
    installs = [
        words for _, words in map(split_flags, final.args("RUN")) if words[:2] == ["pip", "install"]
    ]
    assert len(installs) == 1, "one `RUN pip install` of the wheel in the final stage"
    (install,) = installs
    assert "--no-cache-dir" in install
    assert any(word.endswith(".whl") for word in install)
    assert not [a for a in final.args("COPY") if "streamcalc" in split_flags(a)[1][:-1]], (
        "the final stage must not copy the source tree"
    )


def test_final_stage_runs_as_a_non_root_user(final: Stage) -> None:
    users = final.args("USER")
    assert users, "the final stage needs a USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    ops = [op for op, _ in final.instructions]
    last_run = len(ops) - 1 - ops[::-1].index("RUN")
    assert ops.index("USER") > last_run, "install as root, then switch to the user"
    creates = [a for a in final.args("RUN") if "useradd" in a]
    assert creates and f"--uid {user}" in creates[0], "the USER must exist in the image"


def test_entrypoint_is_the_worker(final: Stage) -> None:
    (entrypoint,) = final.args("ENTRYPOINT")
    assert exec_form(entrypoint) == ["streamcalc", "worker"]


def test_metrics_port_is_exposed_and_configured(final: Stage) -> None:
    port = image_metrics_port(final)
    assert str(port) in " ".join(final.args("EXPOSE")).split()
    assert image_env(final)["STREAMCALC_LOG_FORMAT"] == "json"


def test_healthcheck_probes_healthz_with_the_standard_library(final: Stage) -> None:
    command = healthcheck_command(final)
    assert command[:2] == ["python", "-c"], "slim images have no curl: use python -c"
    code = command[2]
    compile(code, "<HEALTHCHECK>", "exec")
    assert "/healthz" in code
    assert "127.0.0.1" in code


class _Healthz(BaseHTTPRequestHandler):
    """Answers ``GET /healthz`` with the status the test sets; 404 for anything else."""

    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def healthz_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_healthcheck(final: Stage, port: int) -> int:
    """Run the image's HEALTHCHECK command with this interpreter against ``port``."""
    command = healthcheck_command(final)
    env = {**os.environ, **image_env(final), "STREAMCALC_METRICS_PORT": str(port)}
    done = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    return done.returncode


def test_healthcheck_passes_on_200_and_fails_on_503_or_no_answer(
    final: Stage, healthz_server: ThreadingHTTPServer
) -> None:
    port = healthz_server.server_address[1]
    _Healthz.status = 200
    assert run_healthcheck(final, port) == 0
    _Healthz.status = 503
    assert run_healthcheck(final, port) != 0
    healthz_server.shutdown()
    healthz_server.server_close()
    assert run_healthcheck(final, port) != 0


# ------------------------------------------------------------------------- .dockerignore


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """The ``.dockerignore`` patterns as (is an exception, regex), in file order."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, docker_pattern(line.lstrip("!").strip("/"))))
    return patterns


def docker_pattern(pattern: str) -> re.Pattern[str]:
    """Translate one ``.dockerignore`` pattern (Go ``filepath.Match`` plus ``**``) to a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out)


def docker_ignores(relative: str) -> bool:
    """Whether Docker leaves ``relative`` (a path in the context) out of the build context.

    As Docker does: a pattern matches a path or one of its parent directories, and the
    last pattern that matches decides.
    """
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in ignore_patterns():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def context_sources(stages: list[Stage]) -> list[str]:
    """Every path that a ``COPY`` takes from the build context."""
    sources = []
    for stage in stages:
        for args in stage.args("COPY"):
            flags, words = split_flags(args)
            if "from" not in flags:
                sources.extend(words[:-1])
    return sources


def test_every_copied_source_exists_and_is_in_the_build_context(stages: list[Stage]) -> None:
    sources = context_sources(stages)
    assert "pyproject.toml" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not docker_ignores(source.rstrip("/")), f"COPY {source}: .dockerignore drops it"
    assert not docker_ignores("streamcalc/scripts/commit.lua")


def test_dockerignore_keeps_the_context_small() -> None:
    for path in (
        ".git",
        ".venv",
        "tests/test_deploy.py",
        "deploy",
        "benchmarks",
        "streamcalc/__pycache__/keys.cpython-311.pyc",
        "dist/x.whl",
    ):
        assert docker_ignores(path), f"{path} should not be sent to the Docker daemon"


# ------------------------------------------------------------------------- deploy files


def load_yaml_documents(path: Path) -> list[Any]:
    """Every document of a YAML file."""
    with path.open() as handle:
        return list(yaml.safe_load_all(handle))


def load_yaml(path: Path) -> Any:
    """The one document of a YAML file."""
    (document,) = load_yaml_documents(path)
    return document


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


# ---------------------------------------------------------------------------- metrics


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


# ---------------------------------------------------------------------------- compose


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


# ------------------------------------------------------------------------- Kubernetes


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


def test_keda_scales_the_worker_deployment_on_the_group_lag() -> None:
    scaled = the_one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker_deployment()["metadata"]["name"]
    assert scaled["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    # The shipped kit runs the default namespace and group ...
    assert meta["stream"] == Keys(DEFAULT_NS).input == "sc:{default}:in"
    assert meta["consumerGroup"] == DEFAULT_GROUP
    # ... and the trigger follows what the workers are configured with.
    config = worker_config()
    assert meta["stream"] == Keys(config.get("STREAMCALC_NS", DEFAULT_NS)).input
    assert meta["consumerGroup"] == config.get("STREAMCALC_GROUP", DEFAULT_GROUP)
    assert int(meta["lagCount"]) > 0
    assert "pendingEntriesCount" not in meta and "streamLength" not in meta
    assert int(meta["activationLagCount"]) >= 0
    assert scaled["spec"]["minReplicaCount"] >= 1


def test_keda_reads_redis_address_and_password_from_the_worker_env() -> None:
    meta = the_one("ScaledObject")["spec"]["triggers"][0]["metadata"]
    names = container_env_names(worker_container())
    for key in ("addressFromEnv", "passwordFromEnv"):
        assert meta[key] in names, f"{key}: {meta[key]} is not set in the worker container"
    address = worker_config()[meta["addressFromEnv"]]
    assert re.fullmatch(r"[A-Za-z0-9.\-]+:\d+", address), "KEDA wants host:port, not a URL"


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


# --------------------------------------------------------------- the image, replayed


@dataclass
class Replay:
    """Replays the ``COPY``, ``ENV``, ``WORKDIR`` and ``pip`` steps of Dockerfile stages.

    Each stage gets a directory standing for its root file system. Paths are the
    Dockerfile's own, mapped into that directory; ``RUN --mount=type=bind,from=...``
    maps its target onto the other stage's directory. ``pip`` runs as ``python -m pip``
    of the interpreter given for the stage. Other ``RUN`` steps (users, groups) are
    system set-up and are skipped.
    """

    work: Path
    roots: dict[str, Path] = field(default_factory=dict)

    def host(self, stage: str, path: str, mounts: dict[str, Path]) -> Path:
        """Where the stage's container ``path`` lives here (through ``mounts`` first)."""
        for target, source in mounts.items():
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return source / posixpath.relpath(path, target)
        return self.roots[stage] / path.lstrip("/")

    def run(self, name: str, stage: Stage, python: Path) -> dict[str, str]:
        """Replay ``stage`` under ``name``; return the environment its ``ENV`` steps set."""
        self.roots[name] = self.work / name
        self.roots[name].mkdir(parents=True)
        env: dict[str, str] = {}
        workdir = "/"
        for op, args in stage.instructions:
            if op == "ENV":
                env.update(parse_env(args))
            elif op == "WORKDIR":
                workdir = posixpath.join(workdir, args)
                self.host(name, workdir, {}).mkdir(parents=True, exist_ok=True)
            elif op == "COPY":
                self.copy(name, workdir, args)
            elif op == "RUN":
                self.pip(name, workdir, args, python, env)
        return env

    def copy(self, name: str, workdir: str, args: str) -> None:
        """Replay ``COPY sources... dest`` from the build context."""
        flags, words = split_flags(args)
        assert "from" not in flags, "replaying COPY --from is not supported"
        *sources, dest = words
        target = self.host(name, posixpath.join(workdir, dest), {})
        into = dest.endswith("/") or len(sources) > 1
        for source in sources:
            copy_from_context(source, target, into)

    def pip(self, name: str, workdir: str, args: str, python: Path, env: dict[str, str]) -> None:
        """Replay ``RUN [--mount=...] pip ...`` with ``python -m pip``; skip any other RUN."""
        flags, command = split_flags(args)
        if command[0] != "pip":
            return
        assert not {"&&", ";", "|"} & set(command), "keep pip steps one simple command"
        mounts = {}
        if "mount" in flags:
            mount = dict(item.split("=", 1) for item in flags["mount"].split(","))
            assert mount["type"] == "bind"
            mounts[mount["target"]] = self.host(mount["from"], mount["source"], {})
        argv = []
        for word in command[1:]:
            if not word.startswith("/"):
                argv.append(word)
                continue
            path = self.host(name, word, mounts)
            if any(char in path.name for char in "*?["):
                matches = sorted(path.parent.glob(path.name))
                assert len(matches) == 1, f"{word}: expected one match, found {matches}"
                path = matches[0]
            argv.append(str(path))
        cwd = self.host(name, workdir, {})
        done = subprocess.run(
            [str(python), "-m", "pip", *argv],
            cwd=cwd,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"RUN {args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def copy_from_context(source: str, target: Path, into: bool) -> None:
    """Copy ``source`` from the repository to ``target`` as ``COPY`` would.

    Only what Docker sends (``.dockerignore`` applied). A file goes into ``target`` when
    ``into`` (the destination ends with ``/`` or there are several sources), else
    becomes ``target``; a directory's contents go into ``target``.
    """
    origin = ROOT / source
    assert origin.exists(), f"COPY {source}: no such file in the repository"
    assert not docker_ignores(source.rstrip("/")), f"COPY {source}: .dockerignore drops it"
    if origin.is_file():
        destination = target / origin.name if into else target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, destination)
        return
    for path in sorted(origin.rglob("*")):
        if path.is_file() and not docker_ignores(path.relative_to(ROOT).as_posix()):
            destination = target / path.relative_to(origin)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)


def package_files(package_dir: Path) -> set[str]:
    """The files of a package directory that a wheel must carry (no bytecode caches)."""
    return {
        p.relative_to(package_dir).as_posix()
        for p in package_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


WHERE_IS_STREAMCALC = "import streamcalc; print(streamcalc.__file__)"


def run_in(cwd: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command of the new virtualenv, away from the repository (so no import finds it)."""
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_image_builds_installs_and_runs_its_entrypoint(
    stages: list[Stage], final: Stage, tmp_path: Path
) -> None:
    replay = Replay(tmp_path / "stages")
    builder = stages[0]
    assert builder.name
    replay.run(builder.name, builder, Path(sys.executable))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = replay.run("final", final, venv / "bin" / "python")
    env = {**os.environ, **env, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("FORCE_COLOR", None)

    # The package as installed carries every file of the source package (Lua included).
    where = run_in(tmp_path, env, str(venv / "bin" / "python"), "-c", WHERE_IS_STREAMCALC)
    assert where.returncode == 0, where.stderr
    installed = Path(where.stdout.strip()).parent
    assert installed.is_relative_to(venv), "streamcalc must come from the new virtualenv"
    assert package_files(ROOT / "streamcalc") <= package_files(installed)

    (entrypoint,) = final.args("ENTRYPOINT")
    program, *arguments = exec_form(entrypoint)
    done = run_in(tmp_path, env, str(venv / "bin" / program), *arguments, "--help")
    assert done.returncode == 0, done.stdout + done.stderr
    help_text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    for option in ("--metrics-port", "--redis-url", "--processes", "--group"):
        assert option in help_text, f"`{program} {' '.join(arguments)} --help` lacks {option}"

    # What the graph-load service runs, minus Redis: the example graph is valid.
    checked = run_in(tmp_path, env, str(venv / "bin" / program), "graph", "check", str(GRAPH))
    assert checked.returncode == 0, checked.stdout + checked.stderr
