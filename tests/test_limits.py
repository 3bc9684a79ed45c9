"""Limits a careless producer meets: huge integers (exact or a dead letter, never rounded),
fields written twice (shown as they are)."""

from __future__ import annotations

import json

import pytest
import redis
from helpers import dead_letters, drain, load

from streamcalc import ops
from streamcalc.cli import main
from streamcalc.keys import Keys


def test_huge_integers_are_exact_end_to_end_or_dead_letters(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    r.xadd(keys.input, {"X": str(2**62 + 1)})
    rounded = r.xadd(keys.input, {"X": "18446744073709551617"}).decode()
    drain(redis_url, ns)
    ((_, out),) = r.xrange(keys.output)
    assert out[b"S"] == str(2**62 + 2).encode()  # not 4.611686018427388e+18
    assert r.hget(keys.latest, "X").split()[1] == str(2**62 + 1).encode()  # type: ignore[union-attr]
    (letter,) = dead_letters(r, keys)
    assert letter["@src"] == rounded and "integer beyond +-(2^63 - 1)" in letter["@error"]


def test_dead_list_and_history_show_a_field_written_twice_faithfully(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    good = r.xadd(keys.input, {"X": "1"}).decode()
    twice = r.execute_command("XADD", keys.input, "*", "X", "7", "Y", "0", "X", "8").decode()
    r.execute_command("XADD", keys.output, "*", "S", "5", "@ts", "1", "@src", good, "S", "6")
    drain(redis_url, ns)
    (letter,) = ops.dead_list(r, keys)
    assert letter.src == twice
    assert letter.pairs == [("X", "7"), ("Y", "0"), ("X", "8")]
    assert main(["dead", "list", "--redis-url", redis_url, "--ns", ns]) == 0
    assert "X=7 Y=0 X=8" in capsys.readouterr().out
    assert main(["dead", "list", "--json", "--redis-url", redis_url, "--ns", ns]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["pairs"] == [["X", "7"], ["Y", "0"], ["X", "8"]]
    r.script_flush()  # the live page's pipelined read loads its script itself
    assert ops.dead_recent(r, keys)[0].pairs == [("X", "7"), ("Y", "0"), ("X", "8")]
    # history: the entry with X twice went to dead letters, so it is no reading of X (it was
    # shown as X = 8), and the hand-written out entry with S twice is no value of S
    assert [(v.value, v.entry_id) for v in ops.history(r, keys, "X")] == [(1, good)]
    assert [v.value for v in ops.history(r, keys, "S")] == [2]


def test_graph_show_of_a_hostile_stored_graph_sends_no_control_characters(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    for hostile in (
        {"S": b'{"name": "S", "args": ["X"], "expr": "X + 1 \\u001b[2J"}'},
        {"S\x1b]0;owned\x07": b"{}"},
    ):
        r.delete(keys.graph)
        r.hset(keys.graph, mapping=hostile)  # type: ignore[arg-type]
        r.hincrby(keys.meta, "graph_version", 1)
        for fmt in ("text", "json", "dot"):
            code = main(["graph", "show", "--format", fmt, "--redis-url", redis_url, "--ns", ns])
            out, err = capsys.readouterr()
            assert code == 2 and "\x1b" not in out + err and "\x07" not in out + err
            assert err.startswith("streamcalc: error: redis: node S") and "\\x1b" in err
