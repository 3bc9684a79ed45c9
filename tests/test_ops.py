"""Operator commands against a real Redis and live workers: status, history, tail, dead, trim."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, cast

import pytest
import redis
from helpers import Background, dead_letters, drain, load, outputs, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamcalc import ops, store
from streamcalc.cli import main
from streamcalc.embedded import free_port
from streamcalc.keys import Keys
from streamcalc.ops import timeline

PLUS_ONE = '[nodes.S]\nexpr = "X + 1"\n'
TEN_BY = '[nodes.S]\nexpr = "10 / X"\n'
MINUTE = 60_000
HOUR = 3_600_000


def cli(
    capsys: pytest.CaptureFixture[str], redis_url: str, ns: str, *args: str
) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = main([*args, "--redis-url", redis_url, "--ns", ns])
    out, err = capsys.readouterr()
    return code, out, err


def xadd(r: redis.Redis, key: str, entry_id: str = "*", **fields: str) -> str:
    return cast(bytes, r.xadd(key, fields, id=entry_id)).decode()  # type: ignore[arg-type]


def entries(r: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast(list[tuple[bytes, dict[bytes, bytes]]], r.xrange(key))


def ids_of(r: redis.Redis, key: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in entries(r, key)]


def tail_is_blocked(r: redis.Redis) -> bool:
    """True once some client other than a worker waits in XREAD (a tail that will see it)."""
    clients = cast(bytes, r.execute_command("CLIENT", "LIST")).splitlines()  # type: ignore[no-untyped-call]
    return any(b"cmd=xread " in c and b"name=streamcalc-worker:" not in c for c in clients)


# -- status --------------------------------------------------------------------------------------


def test_status_json_reports_streams_groups_consumers_lag_and_rates(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, PLUS_ONE)
    first = xadd(r, keys.input, X="1")
    xadd(r, keys.input, X="2")
    xadd(r, keys.input, X='"bad"')
    drain(redis_url, ns, consumer="w1")  # leaves the group when done: no pending left
    pending = xadd(r, keys.input, X="4")
    last = xadd(r, keys.input, X="5")
    r.xreadgroup("streamcalc", "other", {keys.input: ">"}, count=1)  # X=4 pending, X=5 not read

    code, out, err = cli(capsys, redis_url, ns, "status", "--json")
    assert (code, err) == (0, "")
    status = json.loads(out)
    assert status["ns"] == ns
    assert status["graph_version"] == "1"
    stream_in = status["streams"]["in"]
    assert stream_in["key"] == keys.input
    assert (stream_in["length"], stream_in["first_id"], stream_in["last_id"]) == (5, first, last)
    [group] = stream_in["groups"]
    assert group["name"] == "streamcalc"
    assert group["pending"] == 1
    assert group["last_delivered_id"] == pending
    assert (group["lag"], group["lag_capped"]) == (1, False)
    [consumer] = group["consumers"]
    assert (consumer["name"], consumer["pending"]) == ("other", 1)
    assert 0 <= consumer["idle_ms"] < 10_000
    assert status["streams"]["out"]["length"] == 2
    assert status["streams"]["out"]["groups"] == []
    assert status["streams"]["dead"]["length"] == 1
    assert status["dead_letters"] == 1
    rates = status["rates"]
    assert rates["window_s"] == 60
    assert (rates["input_entries"], rates["output_values"], rates["estimated"]) == (5, 2, False)
    assert rates["input_per_s"] == pytest.approx(5 / 60)
    assert rates["output_per_s"] == pytest.approx(2 / 60)

    code, out, _ = cli(capsys, redis_url, ns, "status")
    assert code == 0
    assert "group 'streamcalc' on in: pending 1, lag 1" in out
    assert "dead letters: 1" in out
    assert any(line.split()[:2] == ["other", "1"] for line in out.splitlines())


def test_status_of_an_empty_namespace(
    capsys: pytest.CaptureFixture[str], redis_url: str, ns: str
) -> None:
    code, out, _ = cli(capsys, redis_url, ns, "status", "--json")
    status = json.loads(out)
    assert code == 0
    assert status["graph_version"] == "0"
    assert {name: s["length"] for name, s in status["streams"].items()} == {
        "in": 0,
        "out": 0,
        "dead": 0,
    }
    assert status["streams"]["in"]["first_id"] is None


def test_lag_is_counted_when_redis_gives_none(
    r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    r.xgroup_create(keys.input, "streamcalc", id="0", mkstream=True)
    ids = [xadd(r, keys.input, X=str(i)) for i in range(7)]
    r.xreadgroup("streamcalc", "c", {keys.input: ">"}, count=2)
    assert store.count_after(r, keys.input, ids[1]) == (5, False)
    assert store.count_after(r, keys.input, ids[1], cap=3) == (3, True)

    r.xdel(keys.input, ids[4])  # an undelivered entry deleted: Redis 7 no longer knows the lag
    assert r.xinfo_groups(keys.input)[0]["lag"] is None
    [group] = ops.status(r, keys).streams["in"].groups
    assert (group.lag, group.lag_capped) == (4, False)
    monkeypatch.setattr(store, "LAG_COUNT_CAP", 3)
    [group] = ops.status(r, keys).streams["in"].groups
    assert (group.lag, group.lag_capped) == (3, True)


# -- history -------------------------------------------------------------------------------------


def test_history_since_and_limit(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, PLUS_ONE)
    now = store.server_time_ms(r)
    x1 = xadd(r, keys.input, f"{now - 3 * HOUR}-0", X="1")
    x2 = xadd(r, keys.input, f"{now - 2 * HOUR}-0", X="2", **{"@ts": str(now - 2 * HOUR + 5)})
    x3 = xadd(r, keys.input, f"{now - 30 * MINUTE}-0", X="3")
    xadd(r, keys.input, f"{now - MINUTE}-0", X='"bad"')  # dead letter: never a value
    s7 = xadd(r, keys.input, f"{now - MINUTE}-1", S="7")  # a manual override (S7)
    drain(redis_url, ns)

    rows = ops.history(r, keys, "X")
    assert [(v.value, v.entry_id, v.source) for v in rows] == [
        (3, x3, "in"),
        (2, x2, "in"),
        (1, x1, "in"),
    ]
    assert rows[1].ts == now - 2 * HOUR + 5  # @ts wins over the ID time
    assert [v.value for v in ops.history(r, keys, "X", since_ms=now - HOUR)] == [3]
    assert [v.value for v in ops.history(r, keys, "X", limit=2)] == [3, 2]

    fired = ops.history(r, keys, "S")
    assert [(v.value, v.source) for v in fired] == [(4, "out"), (3, "out"), (2, "out"), (7, "in")]
    assert fired[-1].entry_id == s7
    assert [v.source for v in ops.history(r, keys, "S", since_ms=now + 10 * MINUTE)] == []
    assert ops.history(r, keys, "nothing") == []

    code, out, _ = cli(capsys, redis_url, ns, "history", "X", "--since", "1h", "--json")
    assert code == 0
    assert json.loads(out) == [
        {
            "ts": now - 30 * MINUTE,
            "value": 3,
            "entry_id": x3,
            "source": "in",
            "key": "",
            "partition": 0,
        }
    ]
    code, out, _ = cli(capsys, redis_url, ns, "history", "X", "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["entry", "id", "source", "time", "value"]
    assert [line.split()[0] for line in lines[1:]] == [x2, x3]  # oldest first


def test_history_pages_through_long_streams(r: redis.Redis, keys: Keys) -> None:
    for i in range(25):
        xadd(r, keys.input, f"{1000 + i}-0", X=str(i), Y="0")
    rows = ops.history(r, keys, "X", limit=None)
    assert [v.value for v in rows] == list(range(24, -1, -1))
    gen = timeline._backwards(r, keys.input, 1010, page=4)
    assert [id_key(entry_id.decode())[0] for entry_id, _ in gen] == list(range(1024, 1009, -1))


# -- tail ----------------------------------------------------------------------------------------


def test_tail_yields_values_a_live_worker_emits_after_it_started(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, PLUS_ONE)
    xadd(r, keys.input, X="1")
    drain(redis_url, ns)
    assert len(outputs(r, keys)) == 1  # an old value, which tail must not show
    deadline = time.monotonic() + 10
    follow = ops.tail(r, keys, block_ms=50, stop=lambda: time.monotonic() > deadline)
    with Background(redis_url, ns):
        entry = xadd(r, keys.input, X="10")
        first = next(follow, None)
        xadd(r, keys.input, X="20")
        second = next(follow, None)
    assert first is not None and second is not None
    assert (first.output.node, first.output.value, first.output.src) == ("S", 11, entry)
    assert second.output.value == 21
    assert [e.id for e in (first, second)] == ids_of(r, keys.output)[1:]
    assert (first.partition, first.output.key) == (0, "")


def test_tail_cli_follows_a_live_worker_and_replays_from_zero(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, PLUS_ONE)
    codes: list[int] = []
    args = ["tail", "--count", "1", "--json", "--redis-url", redis_url, "--ns", ns]
    thread = threading.Thread(target=lambda: codes.append(main(args)), daemon=True)
    with Background(redis_url, ns):
        thread.start()
        wait_for(lambda: tail_is_blocked(r))
        entry = xadd(r, keys.input, X="41")
        thread.join(timeout=10)
    assert codes == [0]
    line = json.loads(capsys.readouterr().out)
    assert {k: line[k] for k in ("node", "value", "src")} == {
        "node": "S",
        "value": 42,
        "src": entry,
    }
    assert line["id"] == ids_of(r, keys.output)[0]

    xadd(r, keys.input, X="1")
    drain(redis_url, ns)
    code, out, _ = cli(capsys, redis_url, ns, "tail", "--from", "0", "--count", "2")
    assert code == 0
    assert [line.split()[1:3] for line in out.splitlines()] == [["S", "42"], ["S", "2"]]


def test_tail_stops_when_asked(r: redis.Redis, keys: Keys) -> None:
    assert list(ops.tail(r, keys, block_ms=10, stop=iter([False, True]).__next__)) == []


# -- dead letters --------------------------------------------------------------------------------


def test_dead_list_and_retry_with_a_live_worker(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, TEN_BY)
    failed = xadd(r, keys.input, X="0", **{"@src": "upstream-1"})  # division by zero
    bad = xadd(r, keys.input, X="true")
    drain(redis_url, ns)

    code, out, _ = cli(capsys, redis_url, ns, "dead", "list", "--json")
    assert code == 0
    letters = {letter["src"]: letter for letter in json.loads(out)}
    assert set(letters) == {failed, bad}
    assert letters[failed]["node"] == "S"
    assert letters[failed]["fields"] == {"X": "0", "@src": "upstream-1"}
    assert letters[failed]["error"]
    assert letters[bad]["node"] is None
    assert letters[bad]["fields"] == {"X": "true"}
    code, out, _ = cli(capsys, redis_url, ns, "dead", "list")
    assert code == 0 and failed in out and "upstream-1" in out

    load(r, ns, PLUS_ONE)  # the fix; the letter is now processable
    with Background(redis_url, ns):
        code, out, _ = cli(capsys, redis_url, ns, "dead", "retry", letters[failed]["id"])
        assert (code, out) == (0, "retried 1 dead letter\n")
        wait_for(lambda: [(n, v) for n, v, _, _ in outputs(r, keys)] == [("S", 1)])
    requeued = entries(r, keys.input)[-1]
    # the original fields, and the original entry's time as its event time (it had no @ts)
    assert requeued[1] == {
        b"X": b"0",
        b"@src": b"upstream-1",
        b"@ts": failed.split("-")[0].encode(),
    }
    assert outputs(r, keys)[0][3] == requeued[0].decode()
    assert [d["@src"] for d in dead_letters(r, keys)] == [bad]

    # Retrying it again finds nothing: exit 1, so a script does not take it for done.
    code, out, err = cli(capsys, redis_url, ns, "dead", "retry", letters[failed]["id"])
    assert (code, out) == (1, "retried 0 dead letters\n")
    assert err.count("\n") == 1 and "1 of the 1 given IDs not found" in err


def test_dead_retry_all_retries_each_current_letter_once(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, PLUS_ONE)
    for _ in range(3):
        xadd(r, keys.input, X="true")  # fails again whenever retried
    drain(redis_url, ns)
    before = ids_of(r, keys.dead)
    with Background(redis_url, ns):
        assert ops.dead_retry(r, keys, None) == 3
        wait_for(lambda: r.xlen(keys.dead) == 3)
    assert set(ids_of(r, keys.dead)).isdisjoint(before)  # new letters, not retried in a loop


def test_dead_retry_leaves_a_letter_without_fields(r: redis.Redis, keys: Keys) -> None:
    letter = xadd(r, keys.dead, **{"@error": "entry was deleted", "@src": "1-1"})
    assert ops.dead_retry(r, keys, [letter]) == 0
    assert ids_of(r, keys.dead) == [letter]
    assert r.xlen(keys.input) == 0


def test_dead_purge_by_id_age_and_all(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    now = store.server_time_ms(r)
    letters = [
        xadd(r, keys.dead, f"{now - age}-0", X="1", **{"@error": "e", "@src": "1-1"})
        for age in (3 * HOUR, 2 * HOUR, 30 * MINUTE, MINUTE)
    ]
    assert ops.dead_purge(r, keys, [letters[0], "1-1"]) == 1
    code, out, _ = cli(capsys, redis_url, ns, "dead", "purge", "--older-than", "1h")
    assert (code, out) == (0, "purged 1 dead letter\n")
    assert ids_of(r, keys.dead) == letters[2:]
    code, out, _ = cli(capsys, redis_url, ns, "dead", "purge", "--all")
    assert (code, out) == (0, "purged 2 dead letters\n")
    assert r.xlen(keys.dead) == 0


# -- trim ----------------------------------------------------------------------------------------


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def next_id(entry_id: str) -> tuple[int, int]:
    ms, seq = id_key(entry_id)
    return ms, seq + 1


class TrimModel:
    """What must survive a trim: a sequential model of one stream and its groups."""

    def __init__(self, r: redis.Redis, key: str, base_ms: int) -> None:
        self.r, self.key, self.base_ms = r, key, base_ms
        self.entries: list[str] = []
        self.added = 0
        self.groups: dict[str, tuple[str, set[str]]] = {}  # name -> (last delivered, pending)

    def add(self, n: int) -> None:
        for _ in range(n):
            self.added += 1
            ms = self.base_ms + 1000 * (self.added // 2)  # two entries a second: seq 0 and 1
            self.entries.append(xadd(self.r, self.key, f"{ms}-{self.added % 2}", X="1"))

    def create_group(self, name: str, at: str) -> None:
        if name in self.groups:
            return
        self.r.xgroup_create(self.key, name, id=at, mkstream=True)
        last = "0-0"
        if at == "$" and self.added:
            last = f"{self.base_ms + 1000 * (self.added // 2)}-{self.added % 2}"
        self.groups[name] = (last, set())

    def read(self, name: str, consumer: str, count: int) -> None:
        if name not in self.groups:
            return
        last, pending = self.groups[name]
        reply: Any = self.r.xreadgroup(name, consumer, {self.key: ">"}, count=count)
        got = [entry_id.decode() for entry_id, _ in reply[0][1]] if reply else []
        after = [e for e in self.entries if id_key(e) > id_key(last)]
        assert got == after[:count], "an undelivered entry was lost"
        if got:
            self.groups[name] = (got[-1], pending | set(got))

    def ack(self, name: str, mask: int) -> None:
        if name not in self.groups:
            return
        last, pending = self.groups[name]
        chosen = [e for i, e in enumerate(sorted(pending, key=id_key)) if mask >> (i % 8) & 1]
        if chosen:
            self.r.xack(self.key, name, *chosen)
        self.groups[name] = (last, pending - set(chosen))

    def expected_after_trim(
        self, need_group: bool, max_len: int | None, max_age: int | None, now_ms: int
    ) -> list[str]:
        if not self.groups and need_group:
            return self.entries
        floors = [
            min([next_id(last), *(id_key(p) for p in pending)])
            for last, pending in self.groups.values()
        ]
        below = [e for e in self.entries if not floors or id_key(e) < min(floors)]
        old = 0 if max_age is None else sum(id_key(e)[0] < now_ms - max_age for e in below)
        excess = 0 if max_len is None else min(max(len(self.entries) - max_len, 0), len(below))
        return self.entries[max(old, excess) :]

    def check_needed_entries_exist(self) -> None:
        present = set(ids_of(self.r, self.key))
        for name, (last, pending) in self.groups.items():
            assert pending <= present, f"a pending entry of {name} was trimmed"
            undelivered = {e for e in self.entries if id_key(e) > id_key(last)}
            assert undelivered <= present, f"an undelivered entry of {name} was trimmed"
            real = self.r.xpending_range(self.key, name, min="-", max="+", count=1000)
            assert {cast(bytes, p["message_id"]).decode() for p in real} == pending


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 6)),
        st.tuples(st.just("group"), st.sampled_from(["g1", "g2"]), st.sampled_from(["0", "$"])),
        st.tuples(
            st.just("read"),
            st.sampled_from(["g1", "g2"]),
            st.sampled_from(["c1", "c2"]),
            st.integers(1, 5),
        ),
        st.tuples(st.just("ack"), st.sampled_from(["g1", "g2"]), st.integers(0, 255)),
        st.tuples(
            st.just("trim"),
            st.one_of(st.none(), st.integers(0, 12)),
            st.one_of(st.none(), st.integers(0, 60_000)),
            st.integers(1, 4),
        ),
    ),
    max_size=40,
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=OPS, stream=st.sampled_from(["in", "out"]))
def test_trim_never_drops_a_pending_or_undelivered_entry(
    r: redis.Redis, ns: str, steps: list[tuple[Any, ...]], stream: str
) -> None:
    keys = Keys(f"{ns}.{uuid.uuid4().hex[:8]}")
    now_ms = store.server_time_ms(r)
    key = keys.input if stream == "in" else keys.output
    model = TrimModel(r, key, now_ms - 100_000)
    for step in steps:
        kind = step[0]
        if kind == "add":
            model.add(step[1])
        elif kind == "group":
            model.create_group(step[1], step[2])
        elif kind == "read":
            model.read(step[1], step[2], step[3])
        elif kind == "ack":
            model.ack(step[1], step[2])
        else:
            _, max_len, max_age, chunk = step
            if max_len is None and max_age is None:
                max_len = 0
            expected = model.expected_after_trim(stream == "in", max_len, max_age, now_ms)
            result = ops.trim(
                r, keys, max_len=max_len, max_age_ms=max_age, now_ms=now_ms, chunk=chunk
            )
            model.check_needed_entries_exist()
            assert ids_of(r, key) == expected
            assert result.streams[stream].removed == len(model.entries) - len(expected)
            model.entries = expected
    model.check_needed_entries_exist()


def test_trim_bounds_every_stream_once_everything_is_acknowledged(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, PLUS_ONE)
    for i in range(10):
        xadd(r, keys.input, X=str(i))
    for _ in range(4):
        xadd(r, keys.input, X="true")
    drain(redis_url, ns)
    assert (r.xlen(keys.input), r.xlen(keys.output), r.xlen(keys.dead)) == (14, 10, 4)

    code, out, _ = cli(capsys, redis_url, ns, "trim", "--max-len", "3", "--dry-run", "--json")
    assert code == 0
    dry = json.loads(out)
    assert dry["dry_run"] is True
    assert {n: (s["removed"], s["length"]) for n, s in dry["streams"].items()} == {
        "in": (11, 3),
        "out": (7, 3),
        "dead": (1, 3),
    }
    assert (r.xlen(keys.input), r.xlen(keys.output), r.xlen(keys.dead)) == (14, 10, 4)

    code, out, _ = cli(capsys, redis_url, ns, "trim", "--max-len", "3", "--json")
    assert code == 0
    done = json.loads(out)
    assert done["streams"] == dry["streams"]
    assert (r.xlen(keys.input), r.xlen(keys.output), r.xlen(keys.dead)) == (3, 3, 3)
    assert done["streams"]["in"]["floor"] == "-".join(map(str, next_id(ids_of(r, keys.input)[-1])))
    assert done["streams"]["out"]["floor"] is None

    code, out, _ = cli(capsys, redis_url, ns, "trim", "--max-age", "0")
    assert code == 0
    assert out.splitlines()[0].split() == ["stream", "removed", "length", "floor"]
    assert (r.xlen(keys.input), r.xlen(keys.output), r.xlen(keys.dead)) == (0, 0, 0)


def test_trim_by_age_and_length_combined_in_small_chunks(r: redis.Redis, keys: Keys) -> None:
    now = 10_000_000
    for i in range(20):
        xadd(r, keys.output, f"{now - 20_000 + 1000 * i}-0", X="1")
    dry = ops.trim(r, keys, max_age_ms=5_500, max_len=12, now_ms=now, chunk=3, dry_run=True)
    assert dry.streams["out"].removed == 15  # older than 5.5s: the 15 oldest; beyond 12: 8
    assert r.xlen(keys.output) == 20
    done = ops.trim(r, keys, max_age_ms=5_500, max_len=12, now_ms=now, chunk=3)
    assert done == ops.TrimResult(False, dry.streams)
    assert r.xlen(keys.output) == 5
    assert ops.trim(r, keys, max_len=2, chunk=1).streams["out"].removed == 3
    assert r.xlen(keys.output) == 2


def test_trim_keeps_input_without_a_group_and_respects_a_group_on_out(
    r: redis.Redis, keys: Keys
) -> None:
    for i in range(5):
        xadd(r, keys.input, X=str(i))
        xadd(r, keys.output, S=str(i), **{"@ts": "1", "@src": "1-1"})
    r.xgroup_create(keys.output, "downstream", id="0")
    r.xreadgroup("downstream", "d", {keys.output: ">"}, count=3)
    r.xack(keys.output, "downstream", *ids_of(r, keys.output)[:2])
    result = ops.trim(r, keys, max_len=0)
    assert result.streams["in"] == ops.StreamTrim(keys.input, 0, 5, "0-0")
    assert result.streams["out"].removed == 2  # the third is pending downstream
    assert r.xlen(keys.input) == 5


def test_trim_while_a_worker_runs_loses_nothing(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, PLUS_ONE)
    r.xgroup_create(keys.output, "watch", id="0", mkstream=True)  # keeps every output for us
    n = 300
    sent = threading.Event()

    def produce() -> None:
        for i in range(0, n, 10):
            pipe = r.pipeline(transaction=False)
            for j in range(i, i + 10):
                pipe.xadd(keys.input, {"X": str(j)})
            pipe.execute()
            time.sleep(0.002)
        sent.set()

    with Background(redis_url, ns, batch=7):
        producer = threading.Thread(target=produce)
        producer.start()
        trimmed = 0
        while not sent.is_set() or r.xlen(keys.output) < n:
            trimmed += ops.trim(r, keys, max_len=0).streams["in"].removed
            time.sleep(0.001)
            assert r.xlen(keys.dead) == 0
        producer.join()
    assert sorted(v for _, v, _, _ in outputs(r, keys)) == list(range(1, n + 1))
    trimmed += ops.trim(r, keys, max_len=0).streams["in"].removed
    assert trimmed == n
    assert r.xlen(keys.input) == 0
    assert dead_letters(r, keys) == []


def test_scripts_work_after_script_flush(r: redis.Redis, keys: Keys) -> None:
    r.xgroup_create(keys.input, "streamcalc", id="0", mkstream=True)
    xadd(r, keys.input, X="1")
    r.script_flush()
    assert ops.trim(r, keys, max_len=0).streams["in"].removed == 0  # undelivered
    letter = xadd(r, keys.dead, X="2", **{"@error": "e", "@src": "1-1", "@in_src": "up"})
    r.script_flush()
    assert ops.dead_retry(r, keys, [letter]) == 1
    assert entries(r, keys.input)[-1][1] == {b"X": b"2", b"@src": b"up", b"@ts": b"1"}


# -- command line errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["history", "X", "--since", "10x"],
        ["history", "X", "--since", "-5m"],
        ["history", "bad name"],
        ["trim", "--max-age", "abc"],
        ["trim"],
        ["trim", "--max-len", "-1"],
        ["dead", "purge", "--older-than", "1y"],
        ["dead", "purge"],
        ["dead", "purge", "--all", "--older-than", "1h"],
        ["dead", "retry"],
        ["dead", "retry", "not-an-id"],
        ["tail", "--from", "xyz"],
    ],
)
def test_bad_usage_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], redis_url: str, ns: str, args: list[str]
) -> None:
    code, _, err = cli(capsys, redis_url, ns, *args)
    assert code == 2
    assert "Traceback" not in err
    if "streamcalc: error:" in err:  # ours; typer's own usage errors come with the usage text
        assert err.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["tail"],
        ["history", "X"],
        ["dead", "list"],
        ["dead", "retry", "--all"],
        ["dead", "purge", "--all"],
        ["trim", "--max-len", "1"],
    ],
)
def test_unreachable_redis_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], ns: str, args: list[str]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    code, out, err = cli(capsys, url, ns, *args)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith("streamcalc: error: cannot reach Redis at " + url[: -len("/0")])


def test_unreachable_redis_as_a_process(ns: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = subprocess.run(
        [sys.executable, "-m", "streamcalc", "status", "--redis-url", url, "--ns", ns],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_tail_ends_on_ctrl_c_with_exit_0(r: redis.Redis, env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamcalc", "tail"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: tail_is_blocked(r), timeout=30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (0, "", "")
