"""The image, replayed without Docker: build the wheel, install it, run the entrypoint."""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .kit import GRAPH, ROOT, Stage, docker_ignores, exec_form, parse_env, split_flags


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
