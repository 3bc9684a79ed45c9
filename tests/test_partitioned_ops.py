"""Operator commands on a namespace of 4 partitions, against a real Redis and live workers.

Every command reads or acts on every partition (and the routing stream), and
``--key`` narrows it to the key's own partition.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, cast

import pytest
import redis
from helpers import Background, drain, outputs, wait_for

from streamcalc import ops
from streamcalc.cli import main
from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys, Namespace, partition_of
from streamcalc.store import store_graph

P = 4
PLUS_ONE = '[nodes.S]\nexpr = "X + 1"\n'
TEN_BY = '[nodes.S]\nexpr = "10 / X"\n'
#: One key of each partition: dev5 -> 0, dev1 -> 1, dev4 -> 2, dev0 -> 3.
KEYS = {0: "dev5", 1: "dev1", 2: "dev4", 3: "dev0"}


def cli(capsys: pytest.CaptureFixture[str], redis_url: str, ns: str, *args: str) -> Any:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = main([*args, "--redis-url", redis_url, "--ns", ns])
    out, err = capsys.readouterr()
    return code, out, err


def load(r: redis.Redis, ns: str, toml: str = PLUS_ONE) -> None:
    store_graph(r, ns, parse_graph_text(toml, "<test>"), partitions=P)


def part(ns: str, p: int) -> Keys:
    return Namespace(ns).partition(p, P)


def send(r: redis.Redis, ns: str, key: str, entry_id: str = "*", **fields: str) -> str:
    """XADD an entry of ``key`` ("" = the empty key) to its partition's input."""
    target = Namespace(ns).of_key(key, P)
    body = {**fields, **({"@key": key} if key else {})}
    return cast(bytes, r.xadd(target.input, body, id=entry_id)).decode()  # type: ignore[arg-type]


def ids_of(r: redis.Redis, key: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in r.xrange(key)]


def test_the_test_keys_cover_every_partition() -> None:
    assert {partition_of(key, P): key for key in KEYS.values()} == KEYS


# -- status --------------------------------------------------------------------------------------


def test_status_json_lists_every_partition_with_its_owner_while_a_worker_runs(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns)
    for p, key in KEYS.items():
        for i in range(p + 1):  # partition p gets p + 1 entries
            send(r, ns, key, X=str(i))
    root = Namespace(ns).root
    r.xadd(root.input, {"X": "1", "@key": "bad key"})  # a dead letter of the routing stream
    with Background(redis_url, ns, consumer="w1", lease_ms=2000):

        def all_owned() -> bool:
            code, out, _ = cli(capsys, redis_url, ns, "status", "--json")
            snapshot = json.loads(out)
            owners = [p["owner"] for p in [*snapshot["partitions"], snapshot["router"]]]
            done = snapshot["totals"]["lag"] == 0 and snapshot["streams"]["out"]["length"] == 10
            return code == 0 and done and all(o and o["consumer"] == "w1" for o in owners)

        wait_for(all_owned)
        code, out, err = cli(capsys, redis_url, ns, "status", "--json")
        human_code, human, _ = cli(capsys, redis_url, ns, "status")
    assert (code, err, human_code) == (0, "", 0)
    snapshot = json.loads(out)
    assert (snapshot["ns"], snapshot["partition_count"], snapshot["group"]) == (ns, P, "streamcalc")
    assert [m["name"] for m in snapshot["members"]] == ["w1"]
    assert 0 < snapshot["members"][0]["expires_in_ms"] <= 2000
    partitions = snapshot["partitions"]
    assert [p["partition"] for p in partitions] == [0, 1, 2, 3]
    assert [p["label"] for p in partitions] == ["0", "1", "2", "3"]
    for p in partitions:
        number = p["partition"]
        assert p["streams"]["in"]["key"] == part(ns, number).input
        assert p["streams"]["in"]["length"] == number + 1
        assert p["streams"]["out"]["length"] == number + 1
        assert (p["lag"], p["pending"], p["group"]) == (0, 0, "streamcalc")
        assert [c["name"] for c in p["consumers"]] == ["w1"]
        assert p["owner"]["consumer"] == "w1" and p["owner"]["epoch"] >= 1
        assert 0 < p["owner"]["expires_in_ms"] <= 2000
    router = snapshot["router"]
    assert (router["partition"], router["label"]) == (None, "router")
    assert router["streams"]["in"]["key"] == root.input
    assert router["streams"]["dead"]["length"] == 1
    # the fields of a namespace of one partition, summed over all of them
    assert snapshot["streams"]["in"]["key"] == root.input
    assert snapshot["streams"]["in"]["length"] == 10 + 1  # 10 in partitions, 1 routed to dead
    assert snapshot["streams"]["out"]["length"] == 10
    assert snapshot["dead_letters"] == 1
    [group] = snapshot["streams"]["in"]["groups"]
    assert (group["name"], group["pending"], group["lag"]) == ("streamcalc", 0, 0)
    assert snapshot["rates"]["input_entries"] == 10  # the partitions' entries, not the routing's
    assert snapshot["rates"]["output_values"] == 10
    assert snapshot["totals"] == {"lag": 0, "lag_capped": False, "pending": 0, "owned": P + 1}
    rows = {line.split()[0]: line.split() for line in human.splitlines() if line.strip()}
    assert rows["3"][1] == "w1" and rows["3"][-4:] == ["4", "4", "0", "1"]
    assert rows["router"][1] == "w1"
    assert rows["total"][1:4] == ["5", "of", "5"]
    assert "4 partitions" in human and "workers of group 'streamcalc': w1" in human


def test_status_shows_lag_and_pending_of_each_partition(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns)
    for key in KEYS.values():
        send(r, ns, key, X="1")
    drain(redis_url, ns)
    two = part(ns, 2)
    for i in range(3):
        send(r, ns, KEYS[2], X=str(i))
    r.xreadgroup("streamcalc", "other", {two.input: ">"}, count=1)  # 1 pending, 2 lagging
    code, out, _ = cli(capsys, redis_url, ns, "status", "--json")
    assert code == 0
    snapshot = json.loads(out)
    lags = {p["partition"]: (p["lag"], p["pending"], p["owner"]) for p in snapshot["partitions"]}
    assert lags == {0: (0, 0, None), 1: (0, 0, None), 2: (2, 1, None), 3: (0, 0, None)}
    assert snapshot["totals"]["lag"] == 2 and snapshot["totals"]["pending"] == 1
    assert snapshot["members"] == []
    [group] = snapshot["streams"]["in"]["groups"]
    assert (group["lag"], group["pending"]) == (2, 1)
    assert {c["name"]: c["pending"] for c in group["consumers"]}["other"] == 1


# -- values, history, tail -----------------------------------------------------------------------


def test_values_read_the_partition_of_the_key(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns)
    for p, key in KEYS.items():
        send(r, ns, key, X=str(10 * p), **{"@ts": str(1000 + p)})
    send(r, ns, "", X="7", **{"@ts": "5"})
    drain(redis_url, ns)
    for p, key in KEYS.items():
        code, out, _ = cli(capsys, redis_url, ns, "values", "--key", key, "--json")
        assert code == 0
        got = {node: (v["value"], v["ts"]) for node, v in json.loads(out).items()}
        assert got == {"S": (10 * p + 1, 1000 + p), "X": (10 * p, 1000 + p)}
    code, out, _ = cli(capsys, redis_url, ns, "values", "--json")
    assert {node: v["value"] for node, v in json.loads(out).items()} == {"S": 8, "X": 7}
    code, out, _ = cli(capsys, redis_url, ns, "values", "S", "--key", KEYS[3])
    assert code == 0 and out.splitlines()[1].split()[:2] == ["S", "31"]
    code, out, _ = cli(capsys, redis_url, ns, "values", "--key", "nobody")
    assert (code, out) == (0, "no values of key 'nobody' yet\n")


@pytest.mark.parametrize(
    "args",
    [
        ["values", "--key", "bad key"],
        ["values", "--key", ""],
        ["history", "S", "--key", "a|b"],
        ["tail", "--key", "x" * 129],
        ["tail", "--node", "bad name"],
    ],
)
def test_a_bad_key_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], redis_url: str, ns: str, args: list[str]
) -> None:
    code, out, err = cli(capsys, redis_url, ns, *args)
    assert (code, out) == (2, "")
    assert err.startswith("streamcalc: error: bad ") and err.count("\n") == 1


def test_history_merges_every_partition_in_time_order_and_filters_by_key(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns)
    base = int(time.time() * 1000) - 60_000
    sent = []  # (entry id, key, X), in time order, round-robin over the partitions
    for i in range(12):
        key = KEYS[i % P]
        sent.append((send(r, ns, key, f"{base + i}-0", X=str(i)), key, i))
    neighbours = {"dev6": 2, "dev3": 1}  # other keys of the partitions of dev4 and dev1
    assert {k: partition_of(k, P) for k in neighbours} == neighbours
    for j, key in enumerate(neighbours):
        send(r, ns, key, f"{base + 100 + j}-0", X=str(100 + j))
    drain(redis_url, ns)

    rows = ops.history(r, ops.layout(r, ns), "X", limit=None)
    assert [(v.entry_id, v.key, v.value) for v in rows][2:] == sent[::-1]
    assert [(v.key, v.value) for v in rows][:2] == [("dev3", 101), ("dev6", 100)]
    assert {v.partition for v in rows} == {0, 1, 2, 3}
    assert [v.value for v in ops.history(r, ops.layout(r, ns), "X", limit=5)] == [
        101,
        100,
        11,
        10,
        9,
    ]
    fired = ops.history(r, ops.layout(r, ns), "S", key=KEYS[1])
    assert [(v.value, v.key, v.partition, v.source) for v in fired] == [
        (10, "dev1", 1, "out"),
        (6, "dev1", 1, "out"),
        (2, "dev1", 1, "out"),
    ]

    code, out, _ = cli(capsys, redis_url, ns, "history", "X", "--key", KEYS[2], "--json")
    assert code == 0
    assert [(v["value"], v["key"], v["partition"]) for v in json.loads(out)] == [
        (2, "dev4", 2),
        (6, "dev4", 2),
        (10, "dev4", 2),
    ]
    code, out, _ = cli(capsys, redis_url, ns, "history", "X", "--limit", "5")
    lines = out.splitlines()
    assert lines[0].split() == ["entry", "id", "source", "time", "value", "key"]
    assert [line.split()[0] for line in lines[1:4]] == [s[0] for s in sent[-3:]]
    assert [line.split()[-1] for line in lines[1:]] == [*(s[1] for s in sent[-3:]), "dev6", "dev3"]


def test_tail_follows_every_partition_at_once(redis_url: str, r: redis.Redis, ns: str) -> None:
    load(r, ns)
    send(r, ns, KEYS[0], X="0")
    drain(redis_url, ns)  # an old value, which tail must not show
    shape = ops.layout(r, ns)
    deadline = time.monotonic() + 10
    follow = ops.tail(r, shape, block_ms=50, stop=lambda: time.monotonic() > deadline)
    only_dev4 = ops.tail(r, shape, key=KEYS[2], block_ms=50, stop=lambda: False)
    with Background(redis_url, ns):
        seen = []
        for p, key in KEYS.items():
            send(r, ns, key, X=str(p))
            got = next(follow, None)
            assert got is not None
            seen.append((got.partition, got.output.key, got.output.value))
        dev4 = next(only_dev4)
    assert seen == [(p, key, p + 1) for p, key in KEYS.items()]
    assert (dev4.partition, dev4.output.key, dev4.output.value) == (2, "dev4", 3)
    assert dev4.id == ids_of(r, part(ns, 2).output)[-1]


def test_tail_cli_replays_every_partition_filtered_by_node_and_key(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n\n[nodes.T]\nexpr = "X * 2"\n')
    base = int(time.time() * 1000) - 60_000
    for i in range(8):
        send(r, ns, KEYS[i % P], f"{base + i}-0", X=str(i))
    drain(redis_url, ns)
    emitted = sorted(  # every partition's T values, in the order they were emitted
        (ops_id(entry_id.decode()), fields[b"T"].decode())
        for p in range(P)
        for entry_id, fields in r.xrange(part(ns, p).output)
        if b"T" in fields
    )
    assert len(emitted) == 8 and len({p for p in range(P) if r.xlen(part(ns, p).output)}) == P
    code, out, _ = cli(capsys, redis_url, ns, "tail", "--from", "0", "--count", "8", "--node", "T")
    assert code == 0
    assert [line.split()[1:3] for line in out.splitlines()] == [["T", v] for _, v in emitted]
    code, out, _ = cli(
        capsys, redis_url, ns, "tail", "--from", "0", "--count", "2", "--key", KEYS[3], "--json"
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(v["node"], v["value"], v["key"], v["partition"]) for v in lines] == [
        ("S", 4, "dev0", 3),
        ("T", 6, "dev0", 3),
    ]


def test_tail_cli_follows_a_live_worker_on_every_partition(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns)
    codes: list[int] = []
    args = ["tail", "--count", "2", "--key", KEYS[1], "--json", "--redis-url", redis_url]
    thread = threading.Thread(target=lambda: codes.append(main([*args, "--ns", ns])), daemon=True)
    with Background(redis_url, ns):
        thread.start()
        time.sleep(0.3)  # the tail resolves '$' on every partition before it blocks
        for i in range(3):
            for key in [*KEYS.values(), "dev3"]:  # dev3 shares dev1's partition
                send(r, ns, key, X=str(i))
        thread.join(timeout=10)
    assert codes == [0]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["key"], v["value"]) for v in lines] == [("dev1", 1), ("dev1", 2)]


# -- dead letters --------------------------------------------------------------------------------


def test_dead_letters_of_every_partition_list_retry_and_purge(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns, TEN_BY)
    failed = {p: send(r, ns, KEYS[p], X="0") for p in (1, 3)}  # division by zero
    bad = send(r, ns, KEYS[2], X="true")
    root = Namespace(ns).root
    unroutable = r.xadd(root.input, {"X": "1", "@key": "no spaces"}).decode()
    drain(redis_url, ns)

    code, out, _ = cli(capsys, redis_url, ns, "dead", "list", "--json")
    assert code == 0
    letters = json.loads(out)
    assert sorted((d["partition"] is None, d["partition"] or 0, d["src"]) for d in letters) == [
        (False, 1, failed[1]),
        (False, 2, bad),
        (False, 3, failed[3]),
        (True, 0, unroutable),
    ]
    assert [d["id"] for d in letters] == sorted((d["id"] for d in letters), key=ops_id)
    assert (
        len(json.loads(cli(capsys, redis_url, ns, "dead", "list", "--count", "2", "--json")[1]))
        == 2
    )
    code, out, _ = cli(capsys, redis_url, ns, "dead", "list")
    assert out.splitlines()[0].split()[:3] == ["id", "partition", "src"]
    assert any(line.split()[1] == "router" for line in out.splitlines()[1:])

    [three_letter] = [d for d in letters if d["partition"] == 3]
    if [d["id"] for d in letters].count(three_letter["id"]) > 1:
        pytest.skip("two partitions wrote a dead letter with the same ID")  # an ID names both
    code, out, _ = cli(capsys, redis_url, ns, "dead", "retry", three_letter["id"])
    assert (code, out) == (0, "retried 1 dead letter\n")
    three = part(ns, 3)
    assert r.xlen(three.dead) == 0
    requeued = r.xrange(three.input)[-1][1]
    assert requeued[b"@key"] == KEYS[3].encode() and requeued[b"X"] == b"0"
    assert requeued[b"@ts"] == failed[3].split("-")[0].encode()  # the original event time

    code, out, _ = cli(capsys, redis_url, ns, "dead", "retry", "--all")
    assert (code, out) == (0, "retried 3 dead letters\n")
    assert [r.xlen(part(ns, p).dead) for p in range(P)] == [0, 0, 0, 0]
    assert r.xlen(root.dead) == 0
    assert r.xrange(part(ns, 1).input)[-1][1][b"X"] == b"0"  # each to its own partition
    assert r.xrange(part(ns, 2).input)[-1][1][b"X"] == b"true"
    assert r.xrange(root.input)[-1][1][b"@key"] == b"no spaces"  # back to the routing stream
    assert [r.xlen(part(ns, p).input) for p in range(P)] == [0, 2, 2, 2]

    load(r, ns)  # X + 1: division by zero no longer fails
    drain(redis_url, ns)
    assert sorted(o[1] for p in range(P) for o in outputs(r, part(ns, p))) == [1, 1]
    code, out, _ = cli(capsys, redis_url, ns, "dead", "purge", "--all")
    assert (code, out) == (0, "purged 2 dead letters\n")  # `true` and the bad key, again
    assert sum(r.xlen(k.dead) for k in [root, *(part(ns, p) for p in range(P))]) == 0


def ops_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def test_dead_purge_by_id_and_age_looks_in_every_partition(
    r: redis.Redis, ns: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    load(r, ns)
    now = int(time.time() * 1000)
    old = [
        r.xadd(
            part(ns, p).dead, {"X": "1", "@error": "e", "@src": "1-1"}, id=f"{now - 7_200_000}-{p}"
        )
        for p in range(P)
    ]
    new = r.xadd(Namespace(ns).root.dead, {"X": "1", "@error": "e", "@src": "1-1"})
    assert ops.dead_purge(r, ops.layout(r, ns), [old[2].decode()]) == 1
    assert r.xlen(part(ns, 2).dead) == 0
    code, out, _ = cli(capsys, redis_url, ns, "dead", "purge", "--older-than", "1h")
    assert (code, out) == (0, "purged 3 dead letters\n")
    assert ids_of(r, Namespace(ns).root.dead) == [new.decode()]


# -- trim ----------------------------------------------------------------------------------------


def test_trim_bounds_every_partition_and_the_routing_stream(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns)
    for p, key in KEYS.items():
        for i in range(3 + p):
            send(r, ns, key, X=str(i))
    root = Namespace(ns).root
    for i in range(4):
        r.xadd(root.input, {"X": str(i), "@key": KEYS[0]})  # routed to partition 0
    drain(redis_url, ns)
    lengths = [r.xlen(part(ns, p).input) for p in range(P)]
    assert lengths == [7, 4, 5, 6] and r.xlen(root.input) == 4

    code, out, _ = cli(capsys, redis_url, ns, "trim", "--max-len", "2", "--dry-run", "--json")
    assert code == 0
    dry = json.loads(out)
    assert [r.xlen(part(ns, p).input) for p in range(P)] == lengths
    assert [p["partition"] for p in dry["partitions"]] == [0, 1, 2, 3, None]
    assert [p["streams"]["in"]["removed"] for p in dry["partitions"]] == [5, 2, 3, 4, 2]
    assert dry["streams"]["in"]["key"] == root.input
    assert (dry["streams"]["in"]["removed"], dry["streams"]["in"]["length"]) == (16, 10)
    assert (dry["streams"]["out"]["removed"], dry["streams"]["out"]["length"]) == (14, 8)

    code, out, _ = cli(capsys, redis_url, ns, "trim", "--max-len", "2", "--json")
    assert code == 0
    done = json.loads(out)
    assert done["streams"] == dry["streams"] and done["dry_run"] is False
    assert [r.xlen(part(ns, p).input) for p in range(P)] == [2, 2, 2, 2]
    assert [r.xlen(part(ns, p).output) for p in range(P)] == [2, 2, 2, 2]
    assert r.xlen(root.input) == 2
    floors = [p["streams"]["in"]["floor"] for p in done["partitions"]]
    assert done["streams"]["in"]["floor"] == min(floors, key=ops_id)  # all still hold entries


def test_trim_keeps_what_a_partitions_group_has_not_acknowledged(
    redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns)
    for key in KEYS.values():
        send(r, ns, key, X="1")
    drain(redis_url, ns)
    one = part(ns, 1)
    late = [send(r, ns, KEYS[1], X=str(i)) for i in range(3)]
    r.xreadgroup("streamcalc", "other", {one.input: ">"}, count=1)  # pending; 2 undelivered
    result = ops.trim(r, ops.layout(r, ns), max_len=0)
    assert [r.xlen(part(ns, p).input) for p in range(P)] == [0, 3, 0, 0]
    assert ids_of(r, one.input) == late
    assert result.partitions[1].streams["in"].floor == late[0]


def test_a_dead_letter_id_two_partitions_hold_is_refused_unless_one_is_named(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns, TEN_BY)
    root = Namespace(ns).root
    same = "1700000000000-7"  # two partitions wrote a dead letter in the same millisecond
    for p in (1, 2):
        letter = {"@error": "division by zero", "@src": "1700000000000-1", "X": "0"}
        r.xadd(part(ns, p).dead, {**letter, "@key": KEYS[p]}, id=same)
    r.xadd(root.dead, {"@error": "bad @key", "@src": "1-1", "@key": "a b"}, id="1700000000001-0")

    for command in ("retry", "purge"):
        code, out, err = cli(capsys, redis_url, ns, "dead", command, same)
        assert code == 1 and out == ""
        assert f"dead-letter ID {same} is in the dead letters of partition 1 and partition 2" in err
        assert "--partition" in err and "Traceback" not in err
        assert [r.xlen(part(ns, p).dead) for p in (1, 2)] == [1, 1]  # nothing done

    code, out, _ = cli(capsys, redis_url, ns, "dead", "retry", same, "--partition", "2")
    assert (code, out) == (0, "retried 1 dead letter\n")
    assert [r.xlen(part(ns, p).dead) for p in (1, 2)] == [1, 0]
    assert r.xrange(part(ns, 2).input)[-1][1] == {
        b"X": b"0",
        b"@key": b"dev4",
        b"@ts": b"1700000000000",
    }
    assert r.xlen(part(ns, 1).input) == 0

    code, out, _ = cli(capsys, redis_url, ns, "dead", "list", "--partition", "router", "--json")
    assert code == 0
    assert [(d["partition"], d["error"]) for d in json.loads(out)] == [(None, "bad @key")]
    code, out, _ = cli(capsys, redis_url, ns, "dead", "list", "--partition", "1", "--json")
    assert [(d["partition"], d["id"]) for d in json.loads(out)] == [(1, same)]
    code, out, _ = cli(capsys, redis_url, ns, "dead", "purge", "--all", "--partition", "router")
    assert (code, out) == (0, "purged 1 dead letter\n")
    assert r.xlen(part(ns, 1).dead) == 1

    code, _, err = cli(capsys, redis_url, ns, "dead", "list", "--partition", "4")
    assert code == 1 and "has partitions 0..3, not 4" in err
    code, _, err = cli(capsys, redis_url, ns, "dead", "list", "--partition", "one")
    assert code == 2 and "--partition must be a partition number or 'router'" in err
