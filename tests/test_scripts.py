"""Each Lua script called directly (also after SCRIPT FLUSH), without a worker.

Every call goes through the typed wrappers of ``streamcalc.scripts``, the one
place that knows each script's arguments and reply.
"""

from __future__ import annotations

import contextlib
import time

import pytest
import redis
from helpers import load

from streamcalc.keys import Keys
from streamcalc.scripts import (
    CommitReply,
    CommitRequest,
    DeadLetter,
    LeaseToken,
    Scripts,
    members_script,
)

GROUP = "streamcalc"


@pytest.fixture
def scripts(r: redis.Redis, keys: Keys) -> Scripts:
    return Scripts(r, keys)


@pytest.fixture
def token(scripts: Scripts) -> str:
    """The lease of the test's partition, held by consumer c1."""
    held = scripts.take_lease(GROUP, "c1", 60_000).token
    assert held is not None
    return held


def pending_entry(r: redis.Redis, keys: Keys, consumer: str = "c1", **fields: str) -> str:
    """An entry delivered to ``consumer`` and not yet acknowledged."""
    entry_id = r.xadd(keys.input, fields or {"X": "1"}).decode()  # type: ignore[arg-type]
    with contextlib.suppress(redis.ResponseError):
        r.xgroup_create(keys.input, GROUP, id="0")
    r.xreadgroup(GROUP, consumer, {keys.input: ">"})
    return entry_id


def request(token: str, ids: list[str], consumer: str = "c1", version: str = "1") -> CommitRequest:
    return CommitRequest(GROUP, consumer, version, token, ids=ids)


def test_commit_writes_everything_and_acks(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    entry = pending_entry(r, keys, X="1")
    keyed = pending_entry(r, keys, X="2", **{"@key": "dev1"})
    bad = pending_entry(r, keys, X="true", **{"@src": "upstream-1"})
    r.hset(keys.latest, "X", "900 5")
    req = request(token, [entry, keyed, bad])
    req.writes = ["S", "g [[1000,null]]", "dev1|S", "g [[1001,null]]"]
    req.fired = ["S", "2", "1000", entry, "", "S", "3", "1001", keyed, "dev1"]
    req.latest = ["X", "1000", "1", "S", "1000", "2", "dev1|X", "1001", "2"]
    req.fresh = ["X", "1001", "S", "1001"]
    req.key_ts = ["dev1", "1001"]
    req.dead = [DeadLetter(bad, "bad value", "", [b"X", b"true", b"@src", b"upstream-1"])]
    assert scripts.commit(req) == CommitReply("ok")
    assert r.hgetall(keys.slots) == {b"S": b"g [[1000,null]]", b"dev1|S": b"g [[1001,null]]"}
    (_, plain), (_, with_key) = r.xrange(keys.output)
    assert plain == {b"S": b"2", b"@ts": b"1000", b"@src": entry.encode()}
    assert with_key == {b"S": b"3", b"@ts": b"1001", b"@src": keyed.encode(), b"@key": b"dev1"}
    assert r.hget(keys.latest, "X") == b"1000 1"
    assert r.hget(keys.latest, "dev1|X") == b"1001 2"
    assert r.hgetall(keys.fresh) == {b"X": b"1001", b"S": b"1001"}
    assert r.zrange(keys.key_index, 0, -1, withscores=True) == [(b"dev1", 1001.0)]
    ((_, letter),) = r.xrange(keys.dead)
    assert letter == {
        b"X": b"true",
        b"@in_src": b"upstream-1",
        b"@error": b"bad value",
        b"@src": bad.encode(),
    }
    assert r.xpending(keys.input, GROUP)["pending"] == 0


def test_older_values_never_replace_newer_ones(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    r.hset(keys.latest, "X", "2000 7")
    r.hset(keys.fresh, "X", "2000")
    r.zadd(keys.key_index, {"k": 2000})
    req = request(token, [pending_entry(r, keys)])
    req.latest, req.fresh, req.key_ts = ["X", "1999", "1"], ["X", "1999"], ["k", "1999"]
    assert scripts.commit(req) == CommitReply("ok", kept=frozenset({"X"}))  # X stayed
    assert r.hget(keys.latest, "X") == b"2000 7"
    assert r.hget(keys.fresh, "X") == b"2000"
    assert r.zscore(keys.key_index, "k") == 2000
    req = request(token, [pending_entry(r, keys)])
    req.latest = ["X", "2000", "8"]
    assert scripts.commit(req).outcome == "ok"
    assert r.hget(keys.latest, "X") == b"2000 8"


def test_latest_values_the_worker_knows_are_newer_are_written_without_reading(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    r.hset(keys.latest, mapping={"X": "2000 7", "Y": "2000 7"})
    req = request(token, [pending_entry(r, keys)])
    req.latest_known = ["X", "1999", "1"]  # the worker's word: written as it is
    req.latest = ["Y", "1999", "1"]
    assert scripts.commit(req) == CommitReply("ok", kept=frozenset({"Y"}))
    assert r.hmget(keys.latest, ["X", "Y"]) == [b"1999 1", b"2000 7"]


def test_timestamps_beyond_doubles_compare_exactly(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    big = 2**60
    r.hset(keys.latest, "X", f"{big + 1} 7")  # equal to big as a double
    req = request(token, [pending_entry(r, keys)])
    req.latest = ["X", str(big), "1"]
    assert scripts.commit(req).outcome == "ok"
    assert r.hget(keys.latest, "X") == f"{big + 1} 7".encode()
    req = request(token, [pending_entry(r, keys)])
    req.latest = ["X", "999", "2"]  # shorter digit string: older
    assert scripts.commit(req).outcome == "ok"
    assert r.hget(keys.latest, "X") == f"{big + 1} 7".encode()


def test_graph_change_is_reported(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    load(r, ns, '[nodes.S]\nexpr = "X + 2"\n')
    entry = pending_entry(r, keys)
    assert scripts.commit(request(token, [entry])) == CommitReply("graph", graph_version="2")
    assert r.xpending(keys.input, GROUP)["pending"] == 1


def test_a_commit_without_the_lease_is_fenced_and_writes_nothing(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    entry = pending_entry(r, keys)
    assert scripts.release_lease(GROUP, token)
    newer = scripts.take_lease(GROUP, "c2", 60_000).token
    assert newer is not None and newer != token
    req = request(token, [entry])
    req.fired = ["S", "2", "1", entry, ""]
    req.writes = ["S", "g [[1,null]]"]
    assert scripts.commit(req) == CommitReply("fenced", holder=newer)
    assert r.xlen(keys.output) == 0
    assert r.hlen(keys.slots) == 0
    assert r.xpending(keys.input, GROUP)["pending"] == 1


def test_entry_finished_or_claimed_elsewhere_is_gone(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    done = pending_entry(r, keys)
    r.xack(keys.input, GROUP, done)
    claimed = pending_entry(r, keys)
    r.xclaim(keys.input, GROUP, "other", 0, [claimed])
    req = request(token, [done, claimed])
    req.fired = ["S", "2", "1", done, ""]
    assert scripts.commit(req) == CommitReply("gone", gone=frozenset({done, claimed}))
    assert r.xlen(keys.output) == 0


def test_scripts_survive_script_flush(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    r.script_flush()
    entry = pending_entry(r, keys)
    assert scripts.commit(request(token, [entry])).outcome == "ok"
    r.script_flush()
    assert scripts.load_graph("h", 1, {"S": b'{"x":1}'}) == 2
    r.script_flush()
    assert scripts.renew_lease(GROUP, token, 60_000)
    r.script_flush()
    assert not scripts.read(GROUP, "c1", token, 10).fenced
    r.script_flush()
    assert members_script(r)(keys=[f"sc:{{{ns}}}:workers"], args=["c1", 1000]) == [b"c1"]


def test_load_graph_leaves_slot_state_alone(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts
) -> None:
    assert scripts.load_graph("h1", 1, {"S": b"def-s", "T": b"def-t"}) == 1
    r.hset(keys.slots, mapping={"S": "s", "k|T": "t"})
    assert scripts.load_graph("h2", 2, {"S": b"def-s2"}) == 2
    assert r.hgetall(keys.graph) == {b"S": b"def-s2"}
    assert r.hgetall(keys.slots) == {b"S": b"s", b"k|T": b"t"}  # generations decide, not a scan
    assert r.hget(keys.meta, "graph_hash") == b"h2"


def test_many_entries_and_fields_stay_within_lua_limits(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    ids = [pending_entry(r, keys) for _ in range(1200)]
    req = request(token, ids)
    for i in range(3000):
        req.writes += [f"k{i}|S", "g []"]
        req.latest += [f"k{i}|S", "5", "1"]
        req.key_ts += [f"k{i}", "5"]
    assert scripts.commit(req).outcome == "ok"
    assert r.hlen(keys.slots) == 3000
    assert r.zcard(keys.key_index) == 3000
    assert r.xpending(keys.input, GROUP)["pending"] == 0


@pytest.mark.parametrize("stray", [b"garbage", b"", b"c9 5 i9", b"\xff" * 300])
def test_a_stray_value_without_expiry_is_no_lease(
    r: redis.Redis, keys: Keys, scripts: Scripts, stray: bytes
) -> None:
    r.set(keys.lease(GROUP), stray)  # a hand or a hostile writer; it never expires
    taken = scripts.take_lease(GROUP, "c1", 60_000, "i1").token
    assert taken is not None and r.get(keys.lease(GROUP)) == taken.encode()
    assert r.pttl(keys.lease(GROUP)) > 0
    r.set(keys.lease(GROUP), b"garbage", px=60_000)  # not a token: no holder either
    assert scripts.take_lease(GROUP, "c2", 60_000, "i2").token is not None


def test_lease_take_renew_release_and_expiry(r: redis.Redis, scripts: Scripts) -> None:
    first = scripts.take_lease(GROUP, "c1", 200, "i1")
    assert first.token is not None and first.token.startswith("c1 ") and first.token.endswith(" i1")
    refused = scripts.take_lease(GROUP, "c2", 200, "i2")
    assert refused.token is None and refused.holder == first.token
    assert refused.held_by() == LeaseToken("c1", 1, "i1")
    assert scripts.renew_lease(GROUP, first.token, 200)
    assert not scripts.renew_lease(GROUP, "c2 99 i2", 200)
    time.sleep(0.3)
    assert not scripts.renew_lease(GROUP, first.token, 200)  # expired: renewal cannot revive it
    second = scripts.take_lease(GROUP, "c1", 60_000, "i1").token
    assert second is not None and second != first.token  # a new tenure, a new token
    assert not scripts.release_lease(GROUP, first.token)
    assert scripts.release_lease(GROUP, second)
    assert scripts.take_lease(GROUP, "c2", 60_000, "i2").token is not None


def test_a_restarted_consumer_takes_over_only_from_the_instance_it_names(
    scripts: Scripts,
) -> None:
    held = scripts.take_lease(GROUP, "w b", 60_000, "old").token
    assert held is not None
    assert scripts.take_lease(GROUP, "w", 60_000, "new", "old").token is None  # not its name
    assert scripts.take_lease(GROUP, "w b", 60_000, "new").token is None  # no gone instance
    assert scripts.take_lease(GROUP, "w b", 60_000, "new", "other").token is None  # not it
    restarted = scripts.take_lease(GROUP, "w b", 60_000, "new", "old").token
    assert restarted is not None and restarted.startswith("w b ") and restarted.endswith(" new")
    assert not scripts.renew_lease(GROUP, held, 60_000)  # the old process is fenced


def test_fetch_is_fenced_by_the_lease(
    r: redis.Redis, ns: str, keys: Keys, scripts: Scripts, token: str
) -> None:
    r.xgroup_create(keys.input, GROUP, id="0", mkstream=True)
    first = r.xadd(keys.input, {"X": "1"}).decode()
    assert scripts.read(GROUP, "intruder", "intruder 1", 10).fenced
    assert r.xpending(keys.input, GROUP)["pending"] == 0  # nothing was delivered to it
    got = scripts.read(GROUP, "c1", token, 10)
    assert [e[0].decode() for e in got.entries] == [first]
    nothing = scripts.read(GROUP, "c1", token, 10)
    assert nothing.entries == [] and nothing.newest == first
    assert [e[0].decode() for e in scripts.read(GROUP, "c1", token, 10, "0").entries] == [first]
    pending_entry(r, keys, consumer="old-owner")
    assert scripts.claim(GROUP, "intruder", "intruder 1", 10, "0-0").fenced
    claimed = scripts.claim(GROUP, "c1", token, 10, "0-0")
    assert (claimed.claimed, claimed.cursor) == (2, "0-0")
    assert [c["name"] for c in r.xinfo_consumers(keys.input, GROUP) if c["pending"]] == [b"c1"]


def test_route_moves_in_order_and_never_twice(r: redis.Redis, ns: str) -> None:
    target = Keys(ns, 3)
    route = Scripts(r, target)
    batch = [(f"{100 + i}-0", [b"X", str(i).encode(), b"@ts", b"5"]) for i in range(4)]
    assert route.route(batch[:2]) == 2
    assert route.route(batch) == 2  # the first two were moved before
    assert route.route(batch[1:3]) == 0
    assert [f[b"X"] for _, f in r.xrange(target.input)] == [b"0", b"1", b"2", b"3"]
    assert r.hget(target.meta, "routed") == b"103-0"
    assert route.route([("99999999999999-0", [b"X", b"9"]), ("1000-0", [b"X", b"8"])]) == 1


def test_members_expire_in_redis_time_and_come_sorted(r: redis.Redis, ns: str) -> None:
    members = members_script(r)
    key = f"sc:{{{ns}}}:workers:g"
    assert members(keys=[key], args=["b", 150]) == [b"b"]
    assert members(keys=[key], args=["a", 60_000]) == [b"a", b"b"]
    time.sleep(0.25)
    assert members(keys=[key], args=["c", 60_000]) == [b"a", b"c"]
    assert members(keys=[key], args=["a", 0]) == [b"c"]


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
