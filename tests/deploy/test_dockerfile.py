"""The Dockerfile: stages, user, entrypoint, health check, and its build context."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .kit import (
    ROOT,
    Stage,
    docker_ignores,
    exec_form,
    healthcheck_command,
    image_env,
    image_metrics_port,
    split_flags,
)


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
        "tests/deploy/test_dockerfile.py",
        "deploy",
        "benchmarks",
        "streamcalc/__pycache__/keys.cpython-311.pyc",
        "dist/x.whl",
    ):
        assert docker_ignores(path), f"{path} should not be sent to the Docker daemon"
