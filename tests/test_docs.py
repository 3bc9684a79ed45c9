"""The README and docs/ run as written, and cannot fall behind the code.

A shell block is run when the line before its fence is a marker (see the
README's Development section):

- ``<!-- runnable -->``: run it with ``bash -e -o pipefail`` (a ``python`` block
  with ``python``); it must exit 0.
- ``<!-- runnable: background -->``: start it (one long-running command, such
  as a worker) and leave it running; it is stopped with SIGTERM when the
  document ends or the next background block starts, and must then exit 0.
  While one runs, every later block waits until the worker has processed
  every entry sent so far, as a reader would before looking at results.
- ``<!-- output -->`` before a ``text`` block right after a runnable block:
  each of its lines must appear in that block's output, in order; runs of
  spaces count as one and ``...`` stands for anything.

The blocks of one document run in order, in one temporary directory holding a
copy of ``examples/``, against the test's own redis-server and namespace
(``STREAMCALC_REDIS_URL``, ``STREAMCALC_NS``), with this venv's ``streamcalc``
and ``python`` first on ``PATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import typer

from streamcalc.cli.app import app
from streamcalc.graph.functions import BUILTINS
from streamcalc.keys import Keys
from streamcalc.metrics import METRIC_NAMES
from streamcalc.store import partition_keys

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "README.md",
    ROOT / "examples" / "README.md",
    ROOT / "deploy" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
EXAMPLES = ROOT / "examples"

_MARKER = re.compile(r"<!--\s*(runnable(?::\s*(?P<mode>[\w-]+))?|output)\s*-->")
_FENCE = re.compile(r"^```\s*(?P<lang>[\w-]*)")
BLOCK_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 60.0


@dataclass
class Block:
    """A fenced block that a marker makes part of the test."""

    doc: str
    line: int
    mode: str  # "run", "background" or "output"
    text: str
    lang: str = "sh"
    expected: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """The marked blocks of a Markdown file, outputs attached to the block they follow.

    A marker that is not followed by the kind of block it needs is an error, so
    a typo cannot quietly take an example out of the test.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        marker = _MARKER.fullmatch(lines[index].strip())
        if marker is None:
            index += 1
            continue
        start = index + 1
        fence = _FENCE.match(lines[start]) if start < len(lines) else None
        if fence is None:
            raise AssertionError(f"{name}:{index + 1}: a marker must be followed by a ``` block")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("```")), None)
        if end is None:
            raise AssertionError(f"{name}:{start + 1}: unterminated block")
        body = "\n".join(lines[start + 1 : end]) + "\n"
        lang = fence.group("lang")
        if marker.group(1) == "output":
            if lang != "text" or not blocks or blocks[-1].mode == "output":
                raise AssertionError(f"{name}:{index + 1}: output needs a text block after a run")
            if blocks[-1].expected:
                raise AssertionError(f"{name}:{index + 1}: a second output for one block")
            blocks[-1].expected = [ln for ln in body.splitlines() if ln.strip()]
        else:
            mode = marker.group("mode") or "run"
            if lang not in ("sh", "bash", "python") or mode not in ("run", "background"):
                raise AssertionError(
                    f"{name}:{index + 1}: runnable needs a sh or python block (or :background)"
                )
            if lang == "python" and mode != "run":
                raise AssertionError(f"{name}:{index + 1}: a python block runs in the foreground")
            blocks.append(
                Block(name, start + 1, mode, body, "python" if lang == "python" else "sh")
            )
        index = end + 1
    return blocks


def _pattern(line: str) -> re.Pattern[str]:
    """A whole output line; any run of spaces counts as one.

    A word ``...`` stands for any words (or none); ``...`` inside a word
    (``{...:...}``) for any characters.
    """
    words = line.split()
    if words == ["..."]:
        return re.compile(".*")
    regex = ""
    for i, word in enumerate(words):
        if word == "...":
            regex += "(?:.* )?" if i == 0 else "(?: .*)?" if i == len(words) - 1 else "(?: .* | )"
            continue
        if i > 0 and words[i - 1] != "...":
            regex += " "
        regex += ".*".join(re.escape(part) for part in word.split("..."))
    return re.compile(regex)


def missing_output(expected: list[str], output: str) -> str | None:
    """The first expected line not found (in order) in ``output``, or None when all are."""
    actual = [" ".join(line.split()) for line in output.splitlines()]
    position = 0
    for line in expected:
        pattern = _pattern(line)
        while position < len(actual) and not pattern.fullmatch(actual[position]):
            position += 1
        if position == len(actual):
            return line
        position += 1
    return None


def drained(client: redis.Redis, ns: str) -> bool:
    """True when every entry of every input stream (routing stream first) is acknowledged."""
    streams = [Keys(ns)]
    streams += [k for k in partition_keys(client, ns) if k.partition is not None]
    for keys in streams:
        length = client.xlen(keys.input)
        if not length:
            continue
        groups = {g["name"].decode(): g for g in client.xinfo_groups(keys.input)}
        group = groups.get("streamcalc")
        if group is None or group["pending"]:
            return False
        last = client.xinfo_stream(keys.input)["last-generated-id"]
        if group["last-delivered-id"] != last:
            return False
    return True


class Session:
    """One document's blocks: a working directory, an environment, a background process."""

    def __init__(self, workdir: Path, env: dict[str, str], client: redis.Redis) -> None:
        self.workdir = workdir
        self.env = env
        self.client = client
        self.background: subprocess.Popen[bytes] | None = None
        self.log = workdir / "background.log"
        self.background_block: Block | None = None

    def run(self, block: Block) -> None:
        if self.background is not None:
            self.wait_drained(block)
        if block.mode == "background":
            self.stop_background()
            self.start_background(block)
            return
        try:
            command = ["bash", "-e", "-o", "pipefail", "-c", block.text]
            if block.lang == "python":
                command = [sys.executable, "-c", block.text]
            done = subprocess.run(
                command,
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # interleaved, as on a terminal
                text=True,
                timeout=BLOCK_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{block.where()}: still running after {BLOCK_TIMEOUT_S:g} s")
        output = done.stdout
        assert done.returncode == 0, f"{block.where()}: exit {done.returncode}\n{output}"
        absent = missing_output(block.expected, output)
        assert absent is None, f"{block.where()}: expected {absent!r} in:\n{output}"

    def start_background(self, block: Block) -> None:
        # One command: bash execs it, so the process we signal is the command itself.
        # Its output goes to a file: a pipe nobody reads could fill and stall it.
        self.log = self.workdir / f"background-{block.line}.log"
        with self.log.open("wb") as log:
            self.background = subprocess.Popen(
                ["bash", "-e", "-c", block.text],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background_block = block
        time.sleep(0.2)
        self.check_alive()

    def check_alive(self) -> None:
        proc, block = self.background, self.background_block
        if proc is not None and block is not None and proc.poll() is not None:
            output = self.log.read_text(errors="replace")
            pytest.fail(f"{block.where()}: exited {proc.returncode} early\n{output}")

    def wait_drained(self, block: Block) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not drained(self.client, self.env["STREAMCALC_NS"]):
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"{block.where()}: the worker did not catch up in {DRAIN_TIMEOUT_S} s")
            time.sleep(0.05)

    def stop_background(self) -> None:
        proc, block = self.background, self.background_block
        if proc is None or block is None:
            return
        self.background = self.background_block = None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{block.where()}: did not stop within 60 s of SIGTERM")
        output = self.log.read_text(errors="replace")
        assert code == 0, f"{block.where()}: exit {code} after SIGTERM\n{output}"

    def close(self) -> None:
        proc = self.background
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _runnable_docs() -> list[Path]:
    return [doc for doc in DOCS if any(b.mode != "output" for b in parse_blocks(doc))]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("doc", _runnable_docs(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_runnable_blocks(doc: Path, env: dict[str, str], r: redis.Redis, tmp_path: Path) -> None:
    """Every runnable block of the document exits 0 and prints what it says it prints."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    bin_dir = str(Path(sys.executable).parent)
    run_env = {
        **env,
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "NO_COLOR": "1",
        "COLUMNS": "120",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    run_env.pop("PYTHONPATH", None)
    session = Session(tmp_path, run_env, r)
    try:
        for block in parse_blocks(doc):
            session.run(block)
        if session.background is not None:
            session.wait_drained(session.background_block)  # type: ignore[arg-type]
        session.stop_background()
    finally:
        session.close()


def test_docs_have_runnable_examples() -> None:
    """The harness finds the blocks: the README and most guides have runnable ones."""
    blocks = [b for doc in DOCS for b in parse_blocks(doc)]
    assert sum(b.mode == "run" for b in blocks) >= 20
    assert sum(b.mode == "background" for b in blocks) >= 2
    assert sum(bool(b.expected) for b in blocks) >= 8
    assert len(_runnable_docs()) >= 5


def test_marker_without_block_is_an_error(tmp_path: Path) -> None:
    """A marker with nothing to run fails the parse instead of skipping the example."""
    bad = tmp_path / "bad.md"
    for text in (
        "<!-- runnable -->\nstreamcalc values\n",
        "<!-- runnable -->\n```toml\n[nodes.A]\n```\n",
        "<!-- output -->\n```text\nA\n```\n",
        "<!-- runnable: later -->\n```sh\ntrue\n```\n",
    ):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(AssertionError):
            parse_blocks(bad)


def test_output_matching() -> None:
    """Expected lines match whole lines in order, spaces collapsed, ``...`` as a wildcard."""
    output = "A   15   ts=1  age=2s\nB  9   ts=3  age=1s\n"
    assert missing_output(["A 15 ...", "B 9 ..."], output) is None
    assert missing_output(["B 9 ...", "A 15 ..."], output) == "A 15 ..."
    assert missing_output(["B 45 ..."], output) == "B 45 ..."
    assert missing_output(["B 9"], output) == "B 9"  # a line matches whole
    assert missing_output(["B 9 ..."], "B 90 ts=3\n") == "B 9 ..."  # whole values only
    assert missing_output(["... 3"], "x 1796126583258-0 out 30\n") == "... 3"
    assert missing_output(["x ... out 30"], "x 1796126583258-0 out 30\n") is None
    assert missing_output(["x ... 1796126583258-0 ... out 30"], "x 1796126583258-0 out 30") is None
    assert missing_output(["... sc:{...:...}:in"], "3 sc:{tabc:3}:in\n") is None
    assert missing_output(["..."], "anything at all\n") is None


def _docs_text() -> str:
    return "\n".join(doc.read_text(encoding="utf-8") for doc in DOCS)


def test_every_builtin_function_is_documented() -> None:
    """Each built-in function has an entry in the graph file reference."""
    reference = (ROOT / "docs" / "graph-file.md").read_text(encoding="utf-8")
    missing = [name for name in BUILTINS if f"`{name}(" not in reference]
    assert not missing, f"docs/graph-file.md lacks {missing}"


def test_every_metric_family_is_documented() -> None:
    """Each metric family a worker exposes is described in the metrics reference."""
    reference = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    missing = sorted(name for name in METRIC_NAMES if f"`{name}" not in reference)
    assert not missing, f"docs/metrics.md lacks {missing}"


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings (duplicates get -1, -2, ...)."""
    anchors: set[str] = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence or not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in anchors:
            n += 1
            unique = f"{slug}-{n}"
        anchors.add(unique)
    return anchors


def test_docs_link_only_to_files_that_exist() -> None:
    """Relative links of the README and docs/ point at files, and headings, that exist."""
    broken = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            path = (doc.parent / target) if target else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{doc.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken, broken


#: The internal contract's name and section numbers, and its word for the original design.
_INTERNAL = re.compile(
    r"\.\./shared|\bSPEC\b|§\s*\d|\bS\d{1,2}\b|\b(?i:the seed|seed's|seed (graph|example|design))\b"
)


def test_nothing_cites_the_internal_contract() -> None:
    """What a user reads names no internal document or section number."""
    readable = [*DOCS, ROOT / "deploy" / "graph.toml"]
    readable += sorted(EXAMPLES.rglob("*.*"))
    hits = [
        f"{doc.relative_to(ROOT)}: {line.strip()}"
        for doc in readable
        if doc.suffix != ".pyc"
        for line in doc.read_text(encoding="utf-8").splitlines()
        if _INTERNAL.search(line)
    ]
    assert not hits, hits


def _help_texts(command: Any, path: list[str]) -> Iterator[tuple[str, str]]:
    context = command.make_context(" ".join(["streamcalc", *path]), [], resilient_parsing=True)
    yield " ".join(path), command.get_help(context)
    for name, sub in getattr(command, "commands", {}).items():
        yield from _help_texts(sub, [*path, name])


def test_help_texts_cite_no_internal_contract() -> None:
    """``streamcalc ... --help`` of every command reads on its own (no section numbers)."""
    helps = list(_help_texts(typer.main.get_command(app), []))
    assert len(helps) >= 15
    hits = [f"{path or 'streamcalc'}: {text}" for path, text in helps if _INTERNAL.search(text)]
    assert not hits, hits


def test_the_package_cites_no_internal_contract() -> None:
    """Docstrings, messages and comments of the package point at docs/, not at section numbers."""
    sources = [
        path
        for path in sorted((ROOT / "streamcalc").rglob("*"))
        if path.suffix in (".py", ".lua") and "vendor" not in path.parts
    ]
    assert len(sources) > 40
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _INTERNAL.search(line)
    ]
    assert not hits, hits
