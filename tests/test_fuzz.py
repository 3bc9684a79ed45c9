"""Hostile input: random names, binary garbage, huge numbers, NaN, deep JSON, 10 MB values,
thousands of fields. The worker never dies, leaves nothing pending, and every bad entry lands
in the dead-letter stream with a reason while every good one is applied. Large and slow valid
entries never become dead letters; hostile graphs and state written straight to Redis kill no
worker and lose nothing."""

from __future__ import annotations

import json
import math
import random
import re
import time
from typing import Any

import pytest
import redis
from helpers import Background, dead_letters, drain, load, outputs, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamcalc.keys import Keys

GRAPH = '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\nmode = "latest"\n[nodes.V]\nexpr = "X * 2"\n'
NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

Fields = list[tuple[bytes, bytes]]


def oracle(fields: Fields) -> bool:
    """An independent judge of SPEC §2: is this entry valid?"""
    names = [name for name, _ in fields]
    if len(names) != len(set(names)) or len(fields) > 1024:
        return False
    readings = 0
    for name, raw in fields:
        if name == b"@ts":
            if not re.fullmatch(rb"[0-9]{1,16}", raw) or int(raw) > 2**53 - 1:
                return False  # (the fuzzed @ts values all lie in the past)
        elif name == b"@src":
            continue
        elif name == b"@key":
            if not re.fullmatch(rb"[A-Za-z0-9_.:/\-]{1,128}", raw):
                return False
        elif (
            name.startswith(b"@")
            or not NAME.fullmatch(name)
            or len(name) > 128
            or len(raw) > 64 * 1024
            or not _good_value(raw)
        ):
            return False
        else:
            readings += 1
    return readings > 0


def _good_value(raw: bytes) -> bool:
    try:
        value = json.loads(raw, parse_constant=_reject)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return False
    if isinstance(value, list):
        return 0 < len(value) <= 4096 and all(_number(v) for v in value)
    return _number(value)


def _reject(name: str) -> None:
    raise ValueError(name)


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int) and abs(value) >= 2**63:
        return False  # it would lose digits as a float
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def hostile_value(rng: random.Random) -> bytes:
    pick = rng.randrange(14)
    if pick == 0:
        return rng.randbytes(rng.randrange(0, 40))
    if pick == 1:
        return rng.choice([b"NaN", b"Infinity", b"-Infinity", b"nan", b"1e400", b"-1e999"])
    if pick == 2:
        return b"9" * rng.randrange(300, 2000)
    if pick == 3:
        depth = rng.randrange(2, 3000)
        return b"[" * depth + b"1" + b"]" * depth
    if pick == 4:
        return json.dumps([rng.random() for _ in range(rng.choice([0, 5, 5000]))]).encode()
    if pick == 5:
        return rng.choice([b"true", b"null", b'"7"', b"{}", b'{"a": 1}', b"", b" ", b"[1,]"])
    if pick == 6:
        return b"1" * (64 * 1024 + 1)
    if pick == 7:
        return json.dumps(rng.uniform(-1e300, 1e300)).encode()
    if pick == 8:
        return str(rng.randrange(-(10**30), 10**30)).encode()
    return json.dumps(rng.randrange(-1000, 1000)).encode()


def hostile_name(rng: random.Random) -> bytes:
    pick = rng.randrange(10)
    if pick == 0:
        return rng.randbytes(rng.randrange(1, 20))
    if pick == 1:
        return b"@" + rng.choice([b"key", b"ts", b"src", b"error", b"", b"\x00"])
    if pick == 2:
        return b"a" * rng.choice([128, 129, 5000])
    if pick == 3:
        return rng.choice(["température", "1X", "x.", ".x", "a..b", "a-b", "😀"]).encode()
    return rng.choice([b"X", b"Y", b"Z", b"plant1.boiler.temp", b"_q"])


def hostile_entry(rng: random.Random) -> Fields:
    if rng.randrange(200) == 0:
        return [(f"n{i}".encode(), b"1") for i in range(rng.choice([1024, 1025, 3000]))]
    fields = [(hostile_name(rng), hostile_value(rng)) for _ in range(rng.randrange(1, 6))]
    if rng.randrange(4) == 0:
        fields.append((b"@ts", rng.choice([b"5", b"-1", b"1.5", b"x", b"9" * 19, b"170"])))
    return fields


def push(r: redis.Redis, keys: Keys, entries: list[Fields]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for fields in entries:
        flat = [x for pair in fields for x in pair]
        pipe.execute_command("XADD", keys.input, "*", *flat)
    return [entry_id.decode() for entry_id in pipe.execute()]


def check(r: redis.Redis, keys: Keys, ids: list[str], entries: list[Fields]) -> None:
    dead = dead_letters(r, keys)
    whole = {d["@src"]: d for d in dead if "@node" not in d}
    for entry_id, fields in zip(ids, entries, strict=True):
        if oracle(fields):
            assert entry_id not in whole, (fields[:3], whole.get(entry_id, {}).get("@error"))
        else:
            assert entry_id in whole, fields[:3]
            assert whole[entry_id]["@error"], "a dead letter says why"
    for letter in dead:
        assert "\n" not in letter["@error"]
        if "@node" in letter:
            assert letter["@node"] in ("S", "V")
    info = r.xinfo_groups(keys.input)[0]
    assert info["pending"] == 0
    assert info["last-delivered-id"].decode() == ids[-1]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 60))
def test_hostile_entries(redis_url: str, r: redis.Redis, seed: int, size: int) -> None:
    rng = random.Random(seed)
    ns = f"fz{seed}-{size}"
    keys = Keys(ns)
    r.delete(*keys.all())
    load(r, ns, GRAPH)
    entries = [hostile_entry(rng) for _ in range(size)]
    ids = push(r, keys, entries)
    drain(redis_url, ns, batch=rng.choice([1, 13, 500]))
    check(r, keys, ids, entries)
    r.delete(*keys.all())


def test_ten_megabyte_values(redis_url: str, r: redis.Redis, ns: str) -> None:
    keys = Keys(ns)
    load(r, ns, GRAPH)
    entries: list[Fields] = [
        [(b"X", b"1" * 10_000_000)],
        [(b"X", b"[" + b"1," * 5_000_000 + b"1]")],
        [(b"X", b"2"), (b"Y", b"3")],
    ]
    ids = push(r, keys, entries)
    drain(redis_url, ns)
    check(r, keys, ids, entries)
    first, second = dead_letters(r, keys)[:2]
    assert first["X"] == "1" * 256 and first["@truncated"] == "1"  # a bounded prefix
    assert second["X"] == ("[" + "1," * 5_000_000)[:256] and second["@truncated"] == "1"


@pytest.mark.fuzz
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_hundred_thousand_hostile_entries(redis_url: str, r: redis.Redis, ns: str) -> None:
    rng = random.Random(100_000)
    keys = Keys(ns)
    load(r, ns, GRAPH)
    total = 0
    for _ in range(10):
        entries = [hostile_entry(rng) for _ in range(10_000)]
        ids = push(r, keys, entries)
        drain(redis_url, ns)
        check(r, keys, ids, entries)
        total += len(entries)
        r.delete(keys.dead, keys.output)
    assert total == 100_000


SLOW_GRAPH = GRAPH + '[nodes.L]\nfn = "blocking_plugins:slow"\nargs = ["Z"]\n'
VECTOR = b"[" + b",".join(b"%d.25" % i for i in range(4096)) + b"]"  # the longest vector
FILLER = b"[" + b",".join([b"123456789.1234"] * 4000) + b"]"  # 60 KB of a name not in the graph


@pytest.mark.slow
def test_large_and_slow_valid_entries_never_become_dead_letters(
    redis_url: str, r: redis.Redis, ns: str
) -> None:
    """Two workers with a short lease on entries that take longer than it (a slow plugin) or
    weigh many megabytes: nobody claims work from under the other, nothing is poison."""
    keys = Keys(ns)
    load(r, ns, SLOW_GRAPH)
    entries: list[Fields] = []
    for i in range(6):  # ~12 MB each: 200 fields of 60 KB, and the longest vectors
        big = [(b"X", VECTOR), (b"Y", VECTOR)]
        entries.append(big + [(f"pad{j}".encode(), FILLER) for j in range(198)])
        entries.append([(b"X", str(i).encode()), (b"Y", b"1"), (b"Z", str(i).encode())])
    ids = push(r, keys, entries[:6])
    ids += push(r, keys, entries[6:])
    fast = {"lease_ms": 1000, "claim_idle_ms": 300, "plugins": ("blocking_plugins",)}
    first = Background(redis_url, ns, consumer="w1", batch=8, **fast)
    with first, Background(redis_url, ns, consumer="w2", batch=8, **fast):
        wait_for(lambda: len(outputs(r, keys)) == 6 * 2 + 6 * 3, timeout=100)
        time.sleep(1.5)  # a second emission of anything would come now
    check(r, keys, ids, entries)
    assert dead_letters(r, keys) == []
    pairs = [(node, src) for node, _, _, src in outputs(r, keys)]
    assert len(pairs) == len(set(pairs)) == 30
    assert sorted(v for node, v, _, _ in outputs(r, keys) if node == "L") == list(range(6))


HOSTILE_GRAPHS: list[dict[bytes, bytes]] = [
    {b"S": b"garbage"},
    {b"S": b'{"name": "S", "args": ["X"], "fn": "os:system"}'},
    {b"S": b'{"name": "S", "args": ["S"], "expr": "S + 1"}'},  # a cycle
    {b"S": b'{"name": "T", "args": ["X"], "expr": "X"}'},  # names another node
    {b"S": b'{"name": "S", "args": ["X"], "expr": "' + b"(" * 5000 + b"X" + b")" * 5000 + b'"}'},
    {b"\xff\xfe": b"{}"},
    {b"@unknown": b"sometimes", b"S": b'{"name": "S", "args": ["X", "Y"], "fn": "add"}'},
    {b"S": b"[" * 100_000},
]


def _hostile_state(r: redis.Redis, keys: Keys, rng: random.Random) -> None:
    """Garbage in every piece of state a worker reads (slots, latest, fresh, keys, lease)."""
    garbage = rng.choice([b"", b"x", b"1 [1,", b"\xff" * 10, b"9" * 400, b"[" * 10_000, b"1 2 3"])
    pipe = r.pipeline(transaction=False)
    pipe.hset(keys.slots, rng.choice(["S", "V", "k|"]), garbage)
    pipe.hset(keys.latest, rng.choice(["X", "S", "V"]), garbage)
    pipe.hset(keys.fresh, rng.choice(["X", "S"]), garbage)
    pipe.zadd(keys.key_index, {garbage or b"-": 1})
    if rng.randrange(3) == 0:
        pipe.set(keys.lease("streamcalc"), garbage)  # no expiry: a stray value, not a lease
    pipe.execute()


def test_hostile_graphs_and_state_written_to_redis_kill_no_worker_and_lose_nothing(
    redis_url: str, r: redis.Redis, ns: str
) -> None:
    rng = random.Random(7)
    keys = Keys(ns)
    load(r, ns, GRAPH)
    good = r.hgetall(keys.graph)
    sent: list[str] = []
    background = Background(redis_url, ns, lease_ms=1000, export_values=True)
    with background:
        for round_ in range(len(HOSTILE_GRAPHS) * 2):
            if round_ % 2 == 0:  # a hostile graph, announced as a new version
                pipe = r.pipeline(transaction=True)
                pipe.delete(keys.graph)
                pipe.hset(keys.graph, mapping=HOSTILE_GRAPHS[round_ // 2])
                pipe.hincrby(keys.meta, "graph_version", 1)
                pipe.execute()
            else:
                _hostile_state(r, keys, rng)
                background.worker.observe_group()  # the gauges read the garbage too
            for _ in range(5):
                sent.append(r.xadd(keys.input, {"X": str(rng.randrange(100)), "Y": "1"}).decode())
            time.sleep(0.2)
            if round_ % 2 == 0:  # the good graph back: the paused partition goes on
                pipe = r.pipeline(transaction=True)
                pipe.delete(keys.graph)
                pipe.hset(keys.graph, mapping=good)
                pipe.hincrby(keys.meta, "graph_version", 1)
                pipe.execute()
        wait_for(lambda: r.xpending(keys.input, "streamcalc")["pending"] == 0, timeout=60)
        wait_for(lambda: len(outputs(r, keys)) == 2 * len(sent), timeout=60)
        assert background.thread.is_alive()
    per_node = {"S": set(), "V": set()}
    for node, _, _, src in outputs(r, keys):
        assert src not in per_node[node], "emitted twice"
        per_node[node].add(src)
    assert per_node["S"] == per_node["V"] == set(sent)  # every entry processed, once
    assert dead_letters(r, keys) == []
