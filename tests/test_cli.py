"""The command line: exit codes, one-line errors, and each command against a real Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import drain, load, outputs, wait_for

from streamcalc.cli import main
from streamcalc.embedded import free_port
from streamcalc.keys import Keys

SEED_TOML = '[nodes.A]\nfn = "add"\nargs = ["C", "D", "E"]\n[nodes.B]\nexpr = "A * F"\n'


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def dead_url() -> str:
    return f"redis://:hunter2@127.0.0.1:{free_port()}/0"


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    path = tmp_path / "graph.toml"
    path.write_text(SEED_TOML)
    return path


def test_graph_check_ok(capsys: pytest.CaptureFixture[str], graph_file: Path) -> None:
    code, out, _ = run(capsys, "graph", "check", str(graph_file))
    assert code == 0
    assert "2 derived nodes" in out


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[nodes.A]\nexpr = "B + 1"\n[nodes.B]\nexpr = "A + 1"\n', "cycle"),
        ('[nodes.A]\nfn = "nope"\nargs = ["X"]\n', "unknown function"),
        ('[nodes.A]\nfn = "sub"\nargs = ["X"]\n', "argument"),
        ('[nodes."1A"]\nexpr = "X"\n', "name"),
        ('[nodes.A]\nfn = "add"\nargs = ["X"]\nexpr = "X"\n', "fn"),
        ('[nodes.A]\nexpr = "X +"\n', "expression"),
        ('[nodes.A]\nexpr = "X"\nttl = "soon"\n', "ttl"),
        ('[nodes.A]\nexpr = "X"\nmode = "eager"\n', "mode"),
    ],
)
def test_graph_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, toml: str, needle: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    # An unreachable Redis proves the file is rejected before Redis is touched.
    code, out, err = run(capsys, "graph", "load", str(path), "--redis-url", dead_url())
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and str(path) in err and needle in err.lower()
    assert "Traceback" not in err


def test_unreachable_redis_exits_1_with_masked_url(
    capsys: pytest.CaptureFixture[str], graph_file: Path
) -> None:
    url = dead_url()
    for args in (
        ["graph", "load", str(graph_file)],
        ["graph", "show"],
        ["send", "C=4"],
        ["values"],
    ):
        code, _, err = run(capsys, *args, "--redis-url", url)
        assert code == 1, args
        assert err.count("\n") == 1 and "cannot reach Redis" in err
        assert "hunter2" not in err and ":***@" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    assert run(capsys, "send", "--redis-url", redis_url)[0] == 2
    assert run(capsys, "send", "C", "--redis-url", redis_url)[0] == 2
    assert run(capsys, "send", "C=true", "--redis-url", redis_url)[0] == 2
    assert run(capsys, "send", "C=abc", "--redis-url", redis_url)[0] == 2
    assert run(capsys, "send", "@key=1", "--redis-url", redis_url)[0] == 2
    assert run(capsys, "graph", "show", "--format", "png", "--redis-url", redis_url)[0] == 2
    assert run(capsys, "no-such-command")[0] == 2
    assert run(capsys, "values", "--ns", "bad{ns}", "--redis-url", redis_url)[0] == 2


def test_load_show_send_values(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str, graph_file: Path
) -> None:
    common = ["--redis-url", redis_url, "--ns", ns]
    code, out, _ = run(capsys, "graph", "load", str(graph_file), *common)
    assert code == 0 and "graph version 1" in out
    code, out, _ = run(capsys, "graph", "show", "--format", "json", *common)
    shown = json.loads(out)
    assert shown["nodes"]["A"]["args"] == ["C", "D", "E"]
    assert sorted(shown["inputs"]) == ["C", "D", "E", "F"]
    for fmt, marker in (("text", "A = add(C, D, E)"), ("dot", "digraph"), ("mermaid", "flowchart")):
        code, out, _ = run(capsys, "graph", "show", "--format", fmt, *common)
        assert code == 0 and marker in out
    code, out, _ = run(capsys, "send", "C=1", "D=2", "E=3", "F=[1, 2]", "--ts", "1000", *common)
    entry_id = out.strip()
    assert code == 0 and r.xrange(Keys(ns).input)[0][0].decode() == entry_id
    drain(redis_url, ns)
    assert outputs(r, Keys(ns)) == [("A", 6, 1000, entry_id), ("B", (6, 12), 1000, entry_id)]
    code, out, _ = run(capsys, "values", "A", "B", "--json", *common)
    values = json.loads(out)
    assert values["A"]["value"] == 6 and values["B"]["value"] == [6, 12]
    assert values["A"]["ts"] == 1000
    code, out, _ = run(capsys, "values", *common)
    assert code == 0 and "B" in out and "[6,12]" in out


def test_send_file_is_all_or_nothing(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps({"C": i, "@ts": 1000 + i}) for i in range(2500)) + "\n")
    code, out, _ = run(capsys, "send", "--file", str(good), "--redis-url", redis_url, "--ns", ns)
    assert code == 0 and "sent 2500 entries" in out
    assert r.xlen(Keys(ns).input) == 2500
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"C": 1}\n{"C": "x"}\n')
    code, _, err = run(capsys, "send", "--file", str(bad), "--redis-url", redis_url, "--ns", ns)
    assert code == 2 and f"{bad}:2" in err
    assert r.xlen(Keys(ns).input) == 2500


def test_send_stdin(redis_url: str, r: redis.Redis, ns: str, env: dict[str, str]) -> None:
    lines = "".join(json.dumps({"C": i}) + "\n" for i in range(10))
    proc = subprocess.run(
        [sys.executable, "-m", "streamcalc", "send", "--file", "-"],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert r.xlen(Keys(ns).input) == 10


def test_worker_process_stops_cleanly_on_sigterm(
    redis_url: str, r: redis.Redis, ns: str, env: dict[str, str]
) -> None:
    load(r, ns, SEED_TOML)
    keys = Keys(ns)
    with subprocess.Popen(
        [sys.executable, "-m", "streamcalc", "worker", "--consumer", "w1", "--block-ms", "50"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            r.xadd(keys.input, {"C": "1", "D": "2", "E": "3", "F": "4"})
            wait_for(lambda: r.xlen(keys.output) == 2, timeout=20)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert any(line["event"] == "worker stopped" for line in lines)
    for line in lines:
        assert line["consumer"] == "w1" and line["ns"] == ns and line["group"] == "streamcalc"
    # a consumer that left cleanly with nothing pending is removed from the group
    assert r.xinfo_consumers(keys.input, "streamcalc") == []


def test_worker_without_redis_exits_1(env: dict[str, str]) -> None:
    env = {**env, "STREAMCALC_REDIS_URL": dead_url()}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "streamcalc", "worker", "--wait", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    # It says at once what it waits for (one log line), then fails with a one-line error.
    waiting, error = proc.stderr.splitlines()
    assert "waiting up to 0.5s for Redis" in waiting
    assert error.startswith("streamcalc: error: cannot reach Redis")
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30


def test_demo_on_embedded_redis() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCALC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "streamcalc", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    derived = [line.split()[1:4] for line in proc.stdout.splitlines() if "<- derived" in line]
    assert derived == [["A", "=", "15"], ["A", "=", "3"], ["B", "=", "9"], ["B", "=", "20"]]
    port = int(proc.stdout.split("port ")[1].split(",")[0])
    with pytest.raises(redis.ConnectionError):  # the private server is gone
        redis.Redis(port=port, socket_connect_timeout=0.5).ping()


def test_demo_with_given_redis(redis_url: str, r: redis.Redis, ns: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamcalc", "demo", "--redis-url", redis_url, "--ns", ns],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [v for _, v, _, _ in outputs(r, Keys(ns))] == [15, 3, 9, 20]


def test_shell_completion() -> None:
    env = {**os.environ, "_STREAMCALC_COMPLETE": "complete_bash"}
    proc = subprocess.run(
        [sys.executable, "-m", "streamcalc"],
        env={**env, "COMP_WORDS": "streamcalc gr", "COMP_CWORD": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.split() == ["graph"]
    proc = subprocess.run(
        [sys.executable, "-m", "streamcalc"],
        env={**env, "COMP_WORDS": "streamcalc dead ", "COMP_CWORD": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert set(proc.stdout.split()) >= {"list", "retry", "purge"}


def test_send_file_shows_progress_on_a_terminal(
    redis_url: str, r: redis.Redis, ns: str, env: dict[str, str], tmp_path: Path
) -> None:
    import pty

    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"C": i}) + "\n" for i in range(3000)))
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamcalc", "send", "--file", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    out, _ = proc.communicate(timeout=60)
    shown = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(controller, 4096):
            shown += chunk
    os.close(controller)
    assert proc.returncode == 0 and b"sent 3000 entries" in out
    assert b"sending" in shown and b"100%" in shown
    assert r.xlen(Keys(ns).input) == 3000


def test_every_option_has_its_env_var() -> None:
    """SPEC §5: --lease-ms reads STREAMCALC_LEASE_MS; the demo's own are STREAMCALC_DEMO_*."""
    import typer.main

    from streamcalc.cli import app

    def options(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                yield path, param
        for name, sub in getattr(command, "commands", {}).items():
            yield from options(sub, f"{path} {name}".strip())

    root = typer.main.get_command(app)
    found = [(path, opt) for path, opt in options(root, "") if path]  # not --install-completion
    assert len(found) > 40
    for path, opt in found:
        long_name = max(opt.opts, key=len).lstrip("-").replace("-", "_").upper()
        scope = "DEMO_" if path == "demo" else ""
        assert opt.envvar == f"STREAMCALC_{scope}{long_name}", (path, opt.opts)
