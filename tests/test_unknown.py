"""Readings of names that are not nodes: ignored and counted, or dead with ``unknown = "dead"``;
``status`` shows the most frequent ones, kept bounded in Redis."""

from __future__ import annotations

import json

import pytest
import redis
from helpers import dead_letters, drain, load, outputs

from streamcalc import ops
from streamcalc.cli import main
from streamcalc.errors import GraphError
from streamcalc.graph import Graph, parse_graph_text
from streamcalc.keys import Keys
from streamcalc.scripts import UNKNOWN_NAMES_KEPT, Scripts

SUM = '[nodes.S]\nexpr = "X + Y"\nmode = "latest"\n'
DEAD = '[defaults]\nunknown = "dead"\n' + SUM


def test_unknown_dead_makes_the_whole_entry_a_dead_letter(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, DEAD)
    r.xadd(keys.input, {"X": "1", "Y": "2"})
    r.xadd(keys.input, {"X": "10", "Y": "20", "junk": "5"})  # none of it applied
    r.xadd(keys.input, {"X": "3"})
    drain(redis_url, ns)
    assert [value for _, value, _, _ in outputs(r, keys)] == [3, 5]
    (letter,) = dead_letters(r, keys)
    assert letter["junk"] == "5" and letter["X"] == "10"
    assert letter["@error"] == "'junk' is not a node of the graph (unknown = \"dead\")"
    assert r.hget(keys.latest, "X").split()[1] == b"3"  # type: ignore[union-attr]


def test_by_default_unknown_names_are_ignored_counted_and_listed_by_status(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    load(r, ns, SUM)
    for i in range(30):
        r.xadd(keys.input, {"X": str(i), "Y": "1", "typo": "1", **({"rare": "1"} if i < 3 else {})})
    drain(redis_url, ns)
    assert len(outputs(r, keys)) == 30 and not dead_letters(r, keys)
    assert not r.hexists(keys.latest, "typo")
    snapshot = ops.status(r, keys)
    assert [(u.name, u.count) for u in snapshot.unknown_names] == [("typo", 30), ("rare", 3)]
    assert main(["status", "--redis-url", redis_url, "--ns", ns]) == 0
    assert "not nodes of the graph, most frequent: typo (30), rare (3)" in capsys.readouterr().out
    assert main(["status", "--json", "--redis-url", redis_url, "--ns", ns]) == 0
    listed = json.loads(capsys.readouterr().out)["unknown_names"]
    assert listed == [{"name": "typo", "count": 30}, {"name": "rare", "count": 3}]
    load(r, ns, SUM.replace("Y", "typo"))  # a new graph counts anew
    assert ops.status(r, keys).unknown_names == []


def test_the_set_of_unknown_names_stays_bounded_and_lets_a_frequent_newcomer_in(
    r: redis.Redis, keys: Keys
) -> None:
    scripts = Scripts(r, keys)
    for i in range(5 * UNKNOWN_NAMES_KEPT):
        scripts.count_unknown([(f"junk{i}", 1)])
    assert r.zcard(keys.unknown) == UNKNOWN_NAMES_KEPT
    scripts.count_unknown([("newcomer", 50)])
    top = r.zrevrange(keys.unknown, 0, 0, withscores=True)
    assert top[0][0] == b"newcomer" and top[0][1] >= 50
    assert r.zcard(keys.unknown) == UNKNOWN_NAMES_KEPT


def test_the_unknown_option_is_checked_and_stored_with_the_graph(
    r: redis.Redis, ns: str, keys: Keys
) -> None:
    with pytest.raises(GraphError, match="bad unknown 'drop' in \\[defaults\\]"):
        parse_graph_text('[defaults]\nunknown = "drop"\n' + SUM, "g.toml")
    dead, ignore = parse_graph_text(DEAD, "g.toml"), parse_graph_text(SUM, "g.toml")
    assert dead.unknown == "dead" and ignore.unknown == "ignore"
    assert dead.version_hash != ignore.version_hash
    assert Graph.from_definitions(dead.stored()).unknown == "dead"
    assert ignore.stored() == ignore.definitions()  # graphs stored before stay as they were
    load(r, ns, DEAD)
    assert r.hget(keys.graph, "@unknown") == b"dead"
