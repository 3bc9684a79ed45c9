"""The formula language, typo checks, explain and graph show FILE, through the CLI as typed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import drain

from streamcalc.cli import main
from streamcalc.keys import Keys

PLANT = """
[defaults]
ttl = "60s"

[nodes."dev1.eff"]
expr = "dev1.out / dev1.in"

[nodes.total_out]
expr = "dev1.out + dev2.out"

[nodes.loss]
expr = "total_ot - dev1.out"

[nodes.alarm]
expr = "`dev1.eff` < 0.5 or temp > 25"
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "plant.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_check_lists_inferred_inputs_and_warns_of_a_typo(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, PLANT)
    code, out, err = run(capsys, "graph", "check", str(path))
    assert code == 0
    assert out.splitlines() == [
        f"{path}: ok (4 derived nodes, 5 inputs)",
        "inputs (inferred): dev1.in, dev1.out, dev2.out, temp, total_ot",
    ]
    assert err.splitlines() == [
        f"{path}: warning: input total_ot is close to node total_out: a typo? "
        "(declare the inputs in [inputs] to make an unknown one an error)"
    ]


def test_declared_inputs_make_an_undeclared_one_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    declared = '[inputs]\nnames = ["dev1.in", "dev1.out", "dev2.out", "temp"]\n'
    path = write(tmp_path, declared + PLANT)
    # load refuses it before it touches Redis (none listens on port 1)
    for command in (["check"], ["load", "--redis-url", "redis://127.0.0.1:1"]):
        code, out, err = run(capsys, "graph", *command, str(path))
        assert code == 2 and out == ""
        assert err == (
            f"streamcalc: error: {path}: node loss: argument total_ot is neither a node "
            "nor declared in [inputs] (did you mean total_out?)\n"
        )
    fixed = write(
        tmp_path,
        declared.replace('"temp"', '"temp", "spare"') + PLANT.replace("total_ot", "total_out"),
    )
    code, out, err = run(capsys, "graph", "check", str(fixed))
    assert code == 0
    assert out.splitlines()[1] == "inputs (declared): dev1.in, dev1.out, dev2.out, spare, temp"
    assert err == f"{fixed}: warning: input spare is declared in [inputs] but no node uses it\n"


def test_a_keyword_name_that_cannot_be_parsed_says_what_to_do(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, '[nodes.x]\nexpr = "in * 2"\n')
    code, _, err = run(capsys, "graph", "check", str(path))
    assert code == 2 and err.count("\n") == 1
    assert "in is a Python keyword: write a node of that name in backquotes, `in`" in err


def test_graph_show_renders_a_file_offline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMCALC_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens
    path = write(tmp_path, PLANT)
    code, out, _ = run(capsys, "graph", "show", str(path))
    assert code == 0
    assert out.splitlines()[0].split() == [
        "dev1.eff",
        "=",
        "dev1.out",
        "/",
        "dev1.in",
        "ttl=60s",
        "mode=consume",
    ]
    assert out.splitlines()[-1] == "inputs: dev1.in, dev1.out, dev2.out, temp, total_ot"
    for fmt, marker in (("json", '"inputs"'), ("dot", "digraph"), ("mermaid", "flowchart")):
        code, out, _ = run(capsys, "graph", "show", str(path), "--format", fmt)
        assert code == 0 and marker in out and "dev1.eff" in out
    code, out, err = run(capsys, "graph", "show", str(tmp_path / "missing.toml"))
    assert code == 2 and out == "" and "missing.toml: cannot read file" in err
    # Without a file it reads the stored graph: here Redis is unreachable, exit 1.
    assert run(capsys, "graph", "show")[0] == 1


# --------------------------------------------------------------------------- explain

SEED = """
[nodes.A]
fn = "add"
args = ["C", "D", "E"]

[nodes.B]
expr = "A * F"
mode = "latest"

[nodes.R]
expr = "N / Q"
"""


@pytest.fixture
def seed(tmp_path: Path, redis_url: str, ns: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The seed graph (plus R = N / Q) loaded in a fresh namespace; the common options."""
    common = ["--redis-url", redis_url, "--ns", ns]
    assert run(capsys, "graph", "load", str(write(tmp_path, SEED)), *common)[0] == 0
    return common


def send(capsys: pytest.CaptureFixture[str], common: list[str], *pairs: str) -> None:
    code, _, err = run(capsys, "send", *pairs, *common)
    assert code == 0, err


def explain_json(capsys: pytest.CaptureFixture[str], common: list[str], *args: str) -> Any:
    code, out, err = run(capsys, "explain", *args, "--json", *common)
    assert code == 0, err
    return json.loads(out)


def test_explain_says_what_a_node_waits_for(
    capsys: pytest.CaptureFixture[str], seed: list[str], redis_url: str, ns: str
) -> None:
    now = int(time.time() * 1000)
    send(capsys, seed, "C=4", "D=5", "--ts", str(now))
    drain(redis_url, ns)
    code, out, _ = run(capsys, "explain", "A", *seed)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "A",
        "=",
        "add(C,",
        "D,",
        "E)",
        "mode=consume",
        "ttl=60s",
        "the",
        "empty",
        "key",
    ]
    assert lines[1] == "latest: none"
    assert lines[2].split() == ["slot", "arg", "holds", "value", "ts", "age", "expired"]
    assert lines[3].split()[:5] == ["0", "C", "filled", "4", str(now)]
    assert lines[5].split() == ["2", "E", "empty", "-", "-", "-", "no"]
    assert lines[-2:] == ["state: waiting", "- waits for a value of E (none received yet)"]
    shown = explain_json(capsys, seed, "A")
    assert shown["state"] == "waiting" and shown["mode"] == "consume" and shown["ttl_ms"] == 60_000
    assert [s["status"] for s in shown["slots"]] == ["filled", "filled", "empty"]
    assert shown["slots"][1]["value"] == 5 and shown["slots"][1]["expired"] is False

    # E comes: A fires (15) and its slots are used; B waits for F.
    send(capsys, seed, "E=6", "--ts", str(now + 1))
    drain(redis_url, ns)
    shown = explain_json(capsys, seed, "A")
    assert shown["latest"]["value"] == 15 and shown["latest"]["ts"] == now + 1
    assert [s["status"] for s in shown["slots"]] == ["used", "used", "used"]
    assert shown["explanation"][0].startswith(
        f"waits for a new value of C (the last one, ts {now}, was used when the node fired, "
        "or expired), a new value of D"
    )
    shown = explain_json(capsys, seed, "B")
    assert shown["explanation"] == ["waits for a value of F (none received yet)"]
    assert shown["slots"][0]["value"] == 15


def test_explain_names_expired_slots(
    capsys: pytest.CaptureFixture[str], seed: list[str], redis_url: str, ns: str
) -> None:
    now = int(time.time() * 1000)
    send(capsys, seed, "C=1", "D=1", "--ts", str(now - 600_000))  # ten minutes old
    send(capsys, seed, "E=1", "--ts", str(now))
    drain(redis_url, ns)
    shown = explain_json(capsys, seed, "A")
    assert shown["state"] == "waiting"
    # The wave emptied the expired slots, the ts stays: C and D are "used", E is there.
    assert [s["status"] for s in shown["slots"]] == ["used", "used", "filled"]
    assert "was used when the node fired, or expired" in shown["explanation"][0]
    # A latest-mode node keeps its slots; one older than the newest by more than the ttl
    # is expired: explain says so before any wave empties it.
    send(capsys, seed, "A=2", "--ts", str(now - 600_000))
    send(capsys, seed, "F=3", "--ts", str(now))
    drain(redis_url, ns)
    shown = explain_json(capsys, seed, "B")
    assert shown["mode"] == "latest"
    assert [s["status"] for s in shown["slots"]] == ["used", "filled"]
    assert shown["explanation"][0].startswith("waits for a new value of A (the last one, ts")
    assert shown["explanation"][0].endswith("was expired)")
    # A value older than the ttl by now: the next argument value would expire it.
    send(capsys, seed, "C=1", "--key", "old", "--ts", str(now - 600_000))
    drain(redis_url, ns)
    shown = explain_json(capsys, seed, "A", "--key", "old")
    assert [s["expired"] for s in shown["slots"]] == [True, False, False]
    assert shown["explanation"] == [
        "waits for a value of D (none received yet) and a value of E (none received yet)",
        f"C (ts {now - 600_000}) is older than the ttl 60s: "
        "an argument value that came now would expire it",
    ]
    code, out, _ = run(capsys, "explain", "A", "--key", "old", *seed)
    assert code == 0
    assert out.splitlines()[3].split()[-2:] == ["10.0m", "yes"]


def test_explain_of_a_failing_function_and_of_a_ready_node(
    capsys: pytest.CaptureFixture[str], seed: list[str], redis_url: str, ns: str
) -> None:
    send(capsys, seed, "N=1", "Q=0")
    drain(redis_url, ns)
    shown = explain_json(capsys, seed, "R")
    assert shown["state"] == "failing" and shown["error"] == "division by zero"
    assert "its function fails on them: division by zero (a dead letter" in shown["explanation"][0]
    send(capsys, seed, "A=2", "F=3")
    drain(redis_url, ns)
    shown = explain_json(capsys, seed, "B")
    assert shown["state"] == "ready" and shown["value"] == 6 and shown["latest"]["value"] == 6
    assert shown["explanation"][0].startswith(
        "every argument is there: it fired with 6, and fires again"
    )


def test_explain_of_an_input_and_of_a_key(
    capsys: pytest.CaptureFixture[str], seed: list[str], redis_url: str, ns: str
) -> None:
    send(capsys, seed, "C=7", "--key", "dev7", "--ts", "1000")
    drain(redis_url, ns)
    code, out, _ = run(capsys, "explain", "C", "--key", "dev7", *seed)
    assert code == 0
    assert out.splitlines()[0] == "C: input, key dev7"
    assert out.splitlines()[1].startswith("latest: 7  ts=1000  age=")
    assert out.splitlines()[-3:] == [
        "state: input",
        "- C is an input: its values come from producers",
        "- it feeds A",
    ]
    shown = explain_json(capsys, seed, "C")  # the empty key has none
    assert shown["latest"] is None
    assert shown["explanation"][-1] == "no value of it has been received"
    shown = explain_json(capsys, seed, "A", "--key", "dev7")
    assert [s["status"] for s in shown["slots"]] == ["filled", "empty", "empty"]


def test_unknown_nodes_exit_1_with_a_suggestion(
    capsys: pytest.CaptureFixture[str], seed: list[str], ns: str
) -> None:
    for command in (["explain", "AA"], ["values", "AA"], ["history", "AA"], ["values", "C", "AA"]):
        code, out, err = run(capsys, *command, *seed)
        assert code == 1, command
        assert out == ""
        assert err == (
            f"streamcalc: error: unknown node AA in the graph of namespace {ns!r} "
            "(did you mean A?)\n"
        ), command
    code, _, err = run(capsys, "explain", "A", *seed[:2], "--ns", ns + "x")
    assert code == 1 and "unknown node A: no graph is loaded in namespace" in err


def test_explain_usage_and_runtime_errors(capsys: pytest.CaptureFixture[str]) -> None:
    dead = ["--redis-url", "redis://127.0.0.1:1/0"]
    code, _, err = run(capsys, "explain", "A", *dead)
    assert code == 1 and err.count("\n") == 1 and "cannot reach Redis" in err
    for bad in (["bad name"], ["A", "--key", "a b"]):
        code, _, err = run(capsys, "explain", *bad, *dead)
        assert code == 2 and err.count("\n") == 1, bad


def test_send_of_a_name_not_in_the_graph_warns_and_sends(
    capsys: pytest.CaptureFixture[str],
    seed: list[str],
    ns: str,
    r: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = run(capsys, "send", "CC=1", "D=2", *seed)
    assert code == 0 and out.strip() == r.xrange(Keys(ns).input)[-1][0].decode()
    assert err == (
        f"streamcalc: warning: CC is not a node of the graph of namespace {ns!r} "
        "(did you mean C?); sent anyway\n"
    )
    code, _, err = run(capsys, "send", "C=1", "D=2", *seed)
    assert code == 0 and err == ""
    lines = tmp_path / "entries.jsonl"
    lines.write_text('{"C": 1}\n{"X1": 2, "X2": 3}\n{"@ts": 5, "F": 1}\n')
    code, out, err = run(capsys, "send", "--file", str(lines), *seed)
    assert code == 0 and out == "sent 3 entries\n"
    assert err.count("\n") == 1 and "X1, X2 are not nodes of the graph" in err
    monkeypatch.setattr("sys.stdin", io.StringIO('{"Q": 1, "nope": 2}\n'))
    code, out, err = run(capsys, "send", "--file", "-", *seed)
    assert code == 0 and out == "sent 1 entries\n" and "nope is not a node" in err
    assert r.xlen(Keys(ns).input) == 6  # every entry sent
    # Before any graph is loaded, nothing is unknown yet.
    code, _, err = run(capsys, "send", "CC=1", *seed[:2], "--ns", ns + "x")
    assert code == 0 and err == ""


def test_explain_runs_no_plugin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_url: str, ns: str
) -> None:
    common = ["--redis-url", redis_url, "--ns", ns]
    path = write(
        tmp_path,
        '[nodes.eff]\nfn = "graph_plugins:explode"\nargs = ["p_in", "p_out"]\nmode = "latest"\n',
    )
    assert run(capsys, "graph", "load", str(path), "--plugins", "graph_plugins", *common)[0] == 0
    send(capsys, common, "p_in=2", "p_out=1")
    drain(redis_url, ns, plugins=("graph_plugins",))
    shown = explain_json(capsys, common, "eff")
    assert shown["state"] == "ready" and shown["value"] is None
    assert shown["explanation"] == [
        "every argument is there; explain does not run the plugin graph_plugins:explode "
        "(a failure of it is a dead letter)"
    ]


def test_a_python_syntax_warning_is_no_stray_line(tmp_path: Path) -> None:
    """Python warns about "1if C" on stderr and parses on; graph check says one line."""
    path = write(tmp_path, '[nodes.x]\nexpr = "C * 1if C"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "streamcalc", "graph", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "syntax error: invalid decimal literal at column 5" in proc.stderr


def test_explain_reads_the_partition_of_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_url: str, ns: str
) -> None:
    common = ["--redis-url", redis_url, "--ns", ns]
    path = write(tmp_path, SEED)
    assert run(capsys, "graph", "load", str(path), "--partitions", "4", *common)[0] == 0
    for key, value in (("boiler-1", 1), ("boiler-2", 2), ("boiler-3", 3)):
        send(capsys, common, f"C={value}", "D=1", "--key", key)
    drain(redis_url, ns)
    for key, value in (("boiler-1", 1), ("boiler-2", 2), ("boiler-3", 3)):
        shown = explain_json(capsys, common, "A", "--key", key)
        assert [s["value"] for s in shown["slots"]] == [value, 1, None], key
        assert shown["slots"][0]["arg_latest"]["value"] == value


def test_a_declared_input_no_node_uses_is_a_node(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_url: str, ns: str, r: redis.Redis
) -> None:
    """Its readings are stored (values shows them), never unknown (nor dead letters)."""
    common = ["--redis-url", redis_url, "--ns", ns]
    text = '[inputs]\nnames = ["a", "spare"]\n[defaults]\nunknown = "dead"\n'
    text += '[nodes.x]\nexpr = "a * 2"\n'
    assert run(capsys, "graph", "load", str(write(tmp_path, text)), *common)[0] == 0
    code, _, err = run(capsys, "send", "spare=5", "a=1", "--ts", "1000", *common)
    assert code == 0 and err == ""
    drain(redis_url, ns)
    assert r.xlen(Keys(ns).dead) == 0
    code, out, _ = run(capsys, "values", "spare", "--json", *common)
    assert code == 0 and json.loads(out)["spare"]["value"] == 5
    code, out, _ = run(capsys, "graph", "show", *common)
    assert out.splitlines()[-1] == "inputs: a, spare"
    assert explain_json(capsys, common, "spare")["explanation"][1] == "no node takes it"
