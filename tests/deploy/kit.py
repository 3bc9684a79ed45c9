"""Shared helpers of the deployment kit tests: its paths, a Dockerfile parser, the
``.dockerignore`` matcher and YAML loading."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
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


def image_env(stage: Stage) -> dict[str, str]:
    """Every variable the stage's ``ENV`` instructions set."""
    env: dict[str, str] = {}
    for args in stage.args("ENV"):
        env.update(parse_env(args))
    return env


def image_metrics_port(stage: Stage) -> int:
    """The metrics port the image's workers serve on (its ``STREAMCALC_METRICS_PORT``)."""
    return int(image_env(stage)["STREAMCALC_METRICS_PORT"])


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


# ------------------------------------------------------------------------------ YAML


def load_yaml_documents(path: Path) -> list[Any]:
    """Every document of a YAML file."""
    with path.open() as handle:
        return list(yaml.safe_load_all(handle))


def load_yaml(path: Path) -> Any:
    """The one document of a YAML file."""
    (document,) = load_yaml_documents(path)
    return document
