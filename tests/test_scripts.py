"""Each Lua script called directly (also after SCRIPT FLUSH), without a worker."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
import redis
from helpers import load

from streamcalc.keys import Keys
from streamcalc.scripts import ScriptArg, Scripts

GROUP = "streamcalc"


@pytest.fixture
def scripts(r: redis.Redis, keys: Keys) -> Scripts:
    return Scripts(r, keys)


def pending_entry(r: redis.Redis, keys: Keys, consumer: str = "c1", **fields: str) -> str:
    """An entry delivered to ``consumer`` and not yet acknowledged."""
    entry_id = r.xadd(keys.input, fields or {"X": "1"}).decode()  # type: ignore[arg-type]
    with contextlib.suppress(redis.ResponseError):
        r.xgroup_create(keys.input, GROUP, id="0")
    r.xreadgroup(GROUP, consumer, {keys.input: ">"})
    return entry_id


def commit_args(
    graph_version: str,
    ids: list[str],
    checks: list[tuple[str, int]] = (),  # type: ignore[assignment]
    writes: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
    out: list[tuple[str, str, int, str]] = (),  # type: ignore[assignment]
    latest: list[tuple[str, int, str]] = (),  # type: ignore[assignment]
    dead: list[tuple[str, str, str, list[str]]] = (),  # type: ignore[assignment]
    consumer: str = "c1",
) -> list[ScriptArg]:
    def flat(rows: Any) -> list[str]:
        return [x.decode() if isinstance(x, bytes) else str(x) for row in rows for x in row]

    ranged = [min(ids, key=_id_key), max(ids, key=_id_key), *ids] if ids else []
    payload = msgspec.msgpack.encode([ranged, flat(checks), flat(writes), flat(out), flat(latest)])
    args: list[Any] = [GROUP, consumer, graph_version, payload]
    args.append(len(dead))
    for src, error, node, fields in dead:
        args += [src, error, node, len(fields) // 2, *fields]
    return args


def test_commit_writes_everything_and_acks(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    entry = pending_entry(r, keys, X="1")
    bad = pending_entry(r, keys, X="true", **{"@src": "upstream-1"})
    r.hset(keys.latest, "X", "900 5")
    reply = scripts.commit(
        commit_args(
            "1",
            [entry, bad],
            checks=[("S", 0)],
            writes=[("S", b"[[1000,null]]")],
            out=[("S", "2", 1000, entry)],
            latest=[("X", 1000, "1"), ("S", 1000, "2")],
            dead=[(bad, "bad value", "", ["X", "true", "@src", "upstream-1"])],
        )
    )
    assert reply == [b"ok"]
    assert r.hget(keys.slots, "S") == b"[[1000,null]]"
    assert r.hget(keys.versions, "S") == b"1"
    ((_, fields),) = r.xrange(keys.output)
    assert fields == {b"S": b"2", b"@ts": b"1000", b"@src": entry.encode()}
    assert r.hget(keys.latest, "X") == b"1000 1"
    ((_, letter),) = r.xrange(keys.dead)
    assert letter == {
        b"X": b"true",
        b"@in_src": b"upstream-1",
        b"@error": b"bad value",
        b"@src": bad.encode(),
    }
    assert r.xpending(keys.input, GROUP)["pending"] == 0


def test_older_latest_value_does_not_replace(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    entry = pending_entry(r, keys)
    r.hset(keys.latest, "X", "2000 7")
    assert scripts.commit(commit_args("1", [entry], latest=[("X", 1999, "1")])) == [b"ok"]
    assert r.hget(keys.latest, "X") == b"2000 7"
    entry = pending_entry(r, keys)
    assert scripts.commit(commit_args("1", [entry], latest=[("X", 2000, "8")])) == [b"ok"]
    assert r.hget(keys.latest, "X") == b"2000 8"


def test_version_conflict_writes_nothing(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    entry = pending_entry(r, keys)
    r.hset(keys.slots, "S", b"[[5,3]]")
    r.hset(keys.versions, "S", 4)
    reply = scripts.commit(
        commit_args(
            "1",
            [entry],
            checks=[("S", 3)],
            writes=[("S", b"[[9,null]]")],
            out=[("S", "2", 9, entry)],
        )
    )
    assert reply == [b"retry", 0, 1, b"S", b"4", b"[[5,3]]"]
    assert r.hget(keys.slots, "S") == b"[[5,3]]"
    assert r.xlen(keys.output) == 0
    assert r.xpending(keys.input, GROUP)["pending"] == 1


def test_entry_finished_elsewhere_is_gone(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    entry = pending_entry(r, keys)
    r.xack(keys.input, GROUP, entry)
    reply = scripts.commit(commit_args("1", [entry], out=[("S", "2", 1, entry)]))
    assert reply == [b"retry", 1, entry.encode(), 0]
    assert r.xlen(keys.output) == 0


def test_entry_claimed_by_another_consumer_is_gone_for_the_old_owner(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    entry = pending_entry(r, keys, consumer="slow")
    r.xclaim(keys.input, GROUP, "fast", 0, [entry])
    assert scripts.commit(commit_args("1", [entry], consumer="slow")) == [
        b"retry",
        1,
        entry.encode(),
        0,
    ]
    assert scripts.commit(commit_args("1", [entry], consumer="fast")) == [b"ok"]
    assert scripts.commit(commit_args("1", [entry], consumer="fast"))[:3] == [
        b"retry",
        1,
        entry.encode(),
    ]


def test_graph_change_is_reported(r: redis.Redis, ns: str, keys: Keys, scripts: Scripts) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    load(r, ns, '[nodes.S]\nexpr = "X + 2"\n')
    entry = pending_entry(r, keys)
    assert scripts.commit(commit_args("1", [entry])) == [b"graph", b"2"]
    assert r.xpending(keys.input, GROUP)["pending"] == 1


def test_scripts_survive_script_flush(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    r.script_flush()
    entry = pending_entry(r, keys)
    assert scripts.commit(commit_args("1", [entry])) == [b"ok"]
    r.script_flush()
    assert scripts.load_graph("h", 1, {"S": b'{"x":1}'}) == 2


def test_load_graph_keeps_state_of_unchanged_nodes(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    assert scripts.load_graph("h1", 1, {"S": b"def-s", "T": b"def-t", "U": b"def-u"}) == 1
    r.hset(keys.slots, mapping={"S": "s", "T": "t", "U": "u"})
    r.hset(keys.versions, mapping={"S": 3, "T": 3, "U": 3})
    assert scripts.load_graph("h2", 2, {"S": b"def-s", "T": b"def-t2"}) == 2
    assert r.hgetall(keys.graph) == {b"S": b"def-s", b"T": b"def-t2"}
    assert r.hgetall(keys.slots) == {b"S": b"s"}
    assert r.hgetall(keys.versions) == {b"S": b"3", b"T": b"4", b"U": b"4"}
    assert r.hget(keys.meta, "graph_hash") == b"h2"


def test_many_entries_and_fields_stay_within_lua_limits(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    ids = [pending_entry(r, keys) for _ in range(1200)]
    nodes = [(f"N{i}", 0) for i in range(3000)]
    writes = [(f"N{i}", b"[]") for i in range(3000)]
    assert scripts.commit(commit_args("1", ids, checks=nodes, writes=writes)) == [b"ok"]
    assert r.hlen(keys.slots) == 3000
    assert r.xpending(keys.input, GROUP)["pending"] == 0


def test_leave_never_removes_a_consumer_with_pending_entries(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    entry = pending_entry(r, keys, consumer="busy")
    r.xreadgroup(GROUP, "idle", {keys.input: ">"})  # creates "idle" with nothing pending
    assert scripts.leave(GROUP, "busy") is False
    assert scripts.leave(GROUP, "idle") is True
    assert [c["name"] for c in r.xinfo_consumers(keys.input, GROUP)] == [b"busy"]
    r.xack(keys.input, GROUP, entry)
    r.script_flush()
    assert scripts.leave(GROUP, "busy") is True
    assert r.xinfo_consumers(keys.input, GROUP) == []


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)
