"""The formula language, typo checks, explain and graph show FILE, through the CLI as typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcalc.cli import main

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
    assert out.splitlines()[1] == "inputs (declared): dev1.in, dev1.out, dev2.out, temp"
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
