"""Semantics S1-S8 against a real Redis, one worker: the seed, TTL, late values, modes, errors."""

from __future__ import annotations

import pytest
import redis
from helpers import SEED_UNSORTED, Background, dead_letters, drain, load, outputs, wait_for

from streamcalc.keys import Keys
from streamcalc.store import latest_values

SEED = """
[defaults]
ttl = "60s"
[nodes.A]
fn = "add"
args = ["C", "D", "E"]
[nodes.B]
expr = "A * F"
"""
T0 = 1_700_000_000_000


def send(r: redis.Redis, keys: Keys, ts: int | None = None, **readings: object) -> str:
    fields = {k: str(v).replace("'", '"') for k, v in readings.items()}
    if ts is not None:
        fields["@ts"] = str(ts)
    return r.xadd(keys.input, fields).decode()  # type: ignore[arg-type]


def derived(r: redis.Redis, keys: Keys) -> list[tuple[str, object]]:
    return [(node, value) for node, value, _, _ in outputs(r, keys)]


def test_seed_scenario(redis_url: str, r: redis.Redis, ns: str, keys: Keys) -> None:
    load(r, ns, SEED)
    send(r, keys, T0, C=4, D=5)
    e2 = send(r, keys, T0 + 1000, E=6)
    drain(redis_url, ns)
    assert derived(r, keys) == [("A", 15)]
    e3 = send(r, keys, T0 + 2000, C=1, D=1, E=1, F=3)
    drain(redis_url, ns)
    assert derived(r, keys)[1:] == [("A", 3), ("B", 9)]  # glitch-free: never 45
    e4 = send(r, keys, T0 + 3000, A=4, F=5)
    drain(redis_url, ns)
    rows = outputs(r, keys)
    assert [(n, v) for n, v, _, _ in rows] == [("A", 15), ("A", 3), ("B", 9), ("B", 20)]
    assert [src for *_, src in rows] == [e2, e3, e3, e4]
    assert [ts for _, _, ts, _ in rows] == [T0 + 1000, T0 + 2000, T0 + 2000, T0 + 3000]
    latest = latest_values(r, keys)
    assert latest["A"] == (T0 + 3000, 4)  # the manual override (S7)
    assert latest["B"] == (T0 + 3000, 20)
    assert latest["C"] == (T0 + 2000, 1)


@pytest.mark.parametrize("batch", [1, 2, 100])
def test_seed_scenario_with_names_out_of_topological_order(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys, batch: int
) -> None:
    load(r, ns, SEED_UNSORTED)
    e1 = send(r, keys, T0, C=4, D=5)
    e2 = send(r, keys, T0 + 1000, E=6)
    e3 = send(r, keys, T0 + 2000, C=1, D=1, E=1, F=3)
    e4 = send(r, keys, T0 + 3000, Z=4, F=5)
    drain(redis_url, ns, batch=batch)
    assert outputs(r, keys) == [
        ("Z", 15, T0 + 1000, e2),
        ("Z", 3, T0 + 2000, e3),
        ("A", 9, T0 + 2000, e3),  # glitch-free: never 45, whatever the names
        ("A", 20, T0 + 3000, e4),  # the manual override of Z (S7)
    ]
    assert e1 not in {src for *_, src in outputs(r, keys)}
    latest = latest_values(r, keys)
    assert latest["Z"] == (T0 + 3000, 4)
    assert latest["A"] == (T0 + 3000, 20)
    assert latest["F"] == (T0 + 3000, 5)
    assert dead_letters(r, keys) == []


def test_one_batch_equals_one_wave_at_a_time(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, SEED)
    for i, readings in enumerate(
        [{"C": 4, "D": 5}, {"E": 6}, {"C": 1, "D": 1, "E": 1, "F": 3}, {"A": 4, "F": 5}]
    ):
        send(r, keys, T0 + 1000 * i, **readings)
    drain(redis_url, ns, batch=100)
    assert derived(r, keys) == [("A", 15), ("A", 3), ("B", 9), ("B", 20)]


def test_ttl_expires_old_slots(redis_url: str, r: redis.Redis, ns: str, keys: Keys) -> None:
    load(r, ns, '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\nttl = "1s"\n')
    send(r, keys, T0, X=1)
    send(r, keys, T0 + 1001, Y=10)  # X is 1001 ms older than Y: expired and emptied
    send(r, keys, T0 + 1500, X=2)  # Y (500 ms older) still valid
    send(r, keys, T0 + 3000, Y=20)  # both slots were consumed: nothing fires
    send(r, keys, T0 + 3000, X=5)
    send(r, keys, T0 + 6000, Y=1)  # X (3000) expires; Y waits alone
    send(r, keys, T0 + 5500, X=1)  # older than Y but newer than its own slot: valid pair
    drain(redis_url, ns)
    assert [(v, ts) for _, v, ts, _ in outputs(r, keys)] == [
        (12, T0 + 1500),
        (25, T0 + 3000),
        (2, T0 + 6000),
    ]


def test_ttl_boundary_and_zero(redis_url: str, r: redis.Redis, ns: str, keys: Keys) -> None:
    load(
        r,
        ns,
        '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\nttl = "100ms"\n'
        '[nodes.Z]\nfn = "add"\nargs = ["X", "Y"]\nttl = 0\n',
    )
    send(r, keys, T0, X=1)
    send(r, keys, T0 + 100, Y=2)  # exactly ttl: fires
    send(r, keys, T0 + 200, X=3)
    send(r, keys, T0 + 10_000_000, Y=4)  # ttl 0 never expires
    drain(redis_url, ns)
    fired = sorted((n, v, ts) for n, v, ts, _ in outputs(r, keys))
    assert fired == [("S", 3, T0 + 100), ("Z", 3, T0 + 100), ("Z", 7, T0 + 10_000_000)]


def test_late_values_change_nothing(redis_url: str, r: redis.Redis, ns: str, keys: Keys) -> None:
    load(r, ns, '[nodes.S]\nfn = "sub"\nargs = ["X", "Y"]\nmode = "latest"\n')
    send(r, keys, T0 + 500, X=10)
    send(r, keys, T0 + 100, X=99)  # late for the slot and for X's latest value
    send(r, keys, T0 + 600, Y=1)
    send(r, keys, T0 + 550, Y=7)  # late: triggers nothing
    drain(redis_url, ns)
    assert [(v, ts) for _, v, ts, _ in outputs(r, keys)] == [(9, T0 + 600)]
    latest = latest_values(r, keys)
    assert latest["X"] == (T0 + 500, 10)
    assert latest["Y"] == (T0 + 600, 1)


def test_consumed_slot_keeps_its_ts(redis_url: str, r: redis.Redis, ns: str, keys: Keys) -> None:
    load(r, ns, '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\n')
    send(r, keys, T0 + 500, X=1, Y=1)  # fires and empties both slots, keeping ts 500
    send(r, keys, T0 + 400, X=5, Y=5)  # older than the consumed slots: late
    send(r, keys, T0 + 500, X=2, Y=2)  # equal ts is not late
    drain(redis_url, ns)
    assert [v for _, v, _, _ in outputs(r, keys)] == [2, 4]


def test_latest_mode_fires_on_every_update(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + Y"\nmode = "latest"\n[nodes.K]\nexpr = "X + Y"\n')
    send(r, keys, T0, X=1)
    send(r, keys, T0 + 1, Y=2)
    send(r, keys, T0 + 2, X=10)
    send(r, keys, T0 + 3, Y=20)
    drain(redis_url, ns)
    rows = outputs(r, keys)
    assert [v for n, v, _, _ in rows if n == "S"] == [3, 12, 30]
    assert [v for n, v, _, _ in rows if n == "K"] == [3, 30]


def test_vectors(redis_url: str, r: redis.Redis, ns: str, keys: Keys) -> None:
    load(r, ns, '[nodes.V]\nexpr = "X * k + Y"\n[nodes.M]\nfn = "mean"\nargs = ["X", "Y"]\n')
    send(r, keys, T0, X=[1, 2, 3], k=2, Y=[10, 20, 30])
    send(r, keys, T0 + 1, X=[1, 2], k=1, Y=[1, 2, 3])  # lengths differ: function errors
    drain(redis_url, ns)
    rows = {n: v for n, v, _, _ in outputs(r, keys)}
    assert rows == {"V": (12, 24, 36), "M": (5.5, 11, 16.5)}
    errors = {d["@node"] for d in dead_letters(r, keys)}
    assert errors == {"V", "M"}


def test_bad_entries_go_whole_to_dead_letters(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\nmode = "latest"\n')
    bad = [
        {"X": "true", "Y": "1"},
        {"X": '"7"', "Y": "1"},
        {"X": "1e400", "Y": "1"},
        {"X": "NaN", "Y": "1"},
        {"X": "[]", "Y": "1"},
        {"X": "[[1]]", "Y": "1"},
        {"X": "{}", "Y": "1"},
        {"X": "1", "1bad": "1"},
        {"X": "1", "@ts": "-5"},
        {"X": "1", "@ts": "1.5"},
        {"X": "1", "@kee": "dev1"},
        {"X": "1", "@key": "dev 1"},
        {"X": "1", "@key": ""},
        {"@ts": "5"},
    ]
    ids = [r.xadd(keys.input, fields).decode() for fields in bad]  # type: ignore[arg-type]
    ok = send(r, keys, T0, X=1, Y=2)
    drain(redis_url, ns)
    dead = dead_letters(r, keys)
    assert [d["@src"] for d in dead] == ids
    for letter, original in zip(dead, bad, strict=True):
        assert letter["@error"] and "\n" not in letter["@error"]
        assert "@node" not in letter
        for field, value in original.items():
            assert letter[field] == value  # the original fields travel with it
    assert [(v, s) for _, v, _, s in outputs(r, keys)] == [(3, ok)]  # nothing of them applied
    assert latest_values(r, keys)["X"] == (T0, 1)
    assert r.xpending(keys.input, "streamcalc")["pending"] == 0


def test_division_by_zero_is_a_function_dead_letter(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.Q]\nfn = "div"\nargs = ["X", "Y"]\n[nodes.P]\nexpr = "Q + 1"\n')
    src = send(r, keys, T0, X=1, Y=0)
    send(r, keys, T0 + 1, Y=4)  # consume mode: X was kept after the failure
    drain(redis_url, ns)
    (letter,) = dead_letters(r, keys)
    assert letter["@node"] == "Q"
    assert letter["@src"] == src
    assert "division by zero" in letter["@error"]
    assert letter["X"] == "1" and letter["Y"] == "0"
    assert [(n, v) for n, v, _, _ in outputs(r, keys)] == [("Q", 0.25), ("P", 1.25)]


def test_worker_picks_up_a_new_graph(redis_url: str, r: redis.Redis, ns: str, keys: Keys) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\nmode = "latest"\n')
    with Background(redis_url, ns):
        send(r, keys, T0, X=1)
        wait_for(lambda: len(outputs(r, keys)) == 1)
        load(r, ns, '[nodes.S]\nexpr = "X * 100"\nmode = "latest"\n')
        send(r, keys, T0 + 1, X=2)
        wait_for(lambda: len(outputs(r, keys)) == 2)
    assert [v for _, v, _, _ in outputs(r, keys)] == [2, 200]


def test_readings_of_unknown_names_are_counted_not_stored(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    from streamcalc import metrics

    load(r, ns, SEED)
    before = metrics.UNKNOWN_READINGS._value.get()
    send(r, keys, T0, humidity=40.5, C=1)
    drain(redis_url, ns)
    assert outputs(r, keys) == []
    assert latest_values(r, keys) == {"C": (T0, 1)}  # S1: not stored, triggers nothing
    assert metrics.UNKNOWN_READINGS._value.get() - before == 1


def test_entry_id_time_is_the_default_ts(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + Y"\n')
    entry_id = r.xadd(keys.input, {"X": "1", "Y": "2"}, id="1700000000123-0").decode()
    drain(redis_url, ns)
    assert outputs(r, keys) == [("S", 3, 1700000000123, entry_id)]


def test_entries_written_before_the_first_worker_are_processed(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    send(r, keys, T0, X=1, Y=2)  # no group yet: the worker creates it at 0 (S9)
    load(r, ns, '[nodes.S]\nexpr = "X + Y"\n')
    drain(redis_url, ns)
    assert [v for _, v, _, _ in outputs(r, keys)] == [3]


def test_repeated_field_is_a_bad_entry(redis_url: str, r: redis.Redis, ns: str, keys: Keys) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    entry_id = r.execute_command("XADD", keys.input, "*", "X", "1", "X", "2").decode()
    drain(redis_url, ns)
    (letter,) = dead_letters(r, keys)
    assert letter["@src"] == entry_id and "twice" in letter["@error"]
    assert outputs(r, keys) == []


def test_poison_entry_goes_to_dead_letters_with_its_delivery_count(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    r.xgroup_create(keys.input, "streamcalc", id="0", mkstream=True)
    poison = send(r, keys, T0, X=1)
    for _ in range(3):  # a consumer that keeps dying on it
        r.xreadgroup("streamcalc", "doomed", {keys.input: "0" if _ else ">"})
    fine = send(r, keys, T0 + 1, X=2)
    drain(redis_url, ns, claim_idle_ms=0, max_deliveries=3)
    (letter,) = dead_letters(r, keys)
    assert letter["@src"] == poison
    assert letter["@deliveries"] == "4"  # three readings by "doomed", one by the claimer
    assert "delivered 4 times (limit 3)" in letter["@error"]
    assert [(v, s) for _, v, _, s in outputs(r, keys)] == [(3, fine)]
    assert r.xpending(keys.input, "streamcalc")["pending"] == 0


def test_worker_survives_script_flush(redis_url: str, r: redis.Redis, ns: str, keys: Keys) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\nmode = "latest"\n')
    with Background(redis_url, ns, batch=3):
        for i in range(20):
            send(r, keys, T0 + i, X=i)
        wait_for(lambda: len(outputs(r, keys)) == 20)
        r.script_flush()
        for i in range(20, 60):
            send(r, keys, T0 + i, X=i)
        wait_for(lambda: len(outputs(r, keys)) == 60)
    assert [v for _, v, _, _ in outputs(r, keys)] == list(range(1, 61))
    assert dead_letters(r, keys) == []


def test_an_at_ts_far_in_the_future_is_a_dead_letter(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\nmode = "latest"\n')
    now_ms = int(r.time()[0]) * 1000
    micros = r.xadd(keys.input, {"X": "1", "@ts": str(now_ms * 1000)}).decode()
    soon = r.xadd(keys.input, {"X": "2", "@ts": str(now_ms + 60_000)}).decode()
    fine = r.xadd(keys.input, {"X": "3", "@ts": str(now_ms + 1_000)}).decode()
    drain(redis_url, ns, max_future_ms=30_000)
    dead = {d["@src"]: d["@error"] for d in dead_letters(r, keys)}
    assert set(dead) == {micros, soon}
    assert all("ahead of the entry's time" in error for error in dead.values())
    assert [(v, src) for _, v, _, src in outputs(r, keys)] == [(4, fine)]  # S is not frozen


def test_a_dead_letter_keeps_a_bounded_prefix_of_an_oversized_entry(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    huge = b"[" + b"1," * 60_000 + b"1]"  # 120 KB: over the 64 KiB limit of one value
    src = r.xadd(keys.input, {"X": huge, "Y": "2"}).decode()
    small = r.xadd(keys.input, {"X": "true"}).decode()
    drain(redis_url, ns)
    (_, letter), (_, plain) = r.xrange(keys.dead)
    assert letter[b"@src"].decode() == src
    assert letter[b"X"] == huge[:256] and letter[b"Y"] == b"2"
    assert letter[b"@truncated"] == b"1"
    assert "keeps the first 256 bytes of 'X' (120003 bytes)" in letter[b"@error"].decode()
    assert plain[b"@src"].decode() == small and b"@truncated" not in plain
    assert plain[b"X"] == b"true"


def test_tampered_slot_state_is_reported_not_fatal(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    from streamcalc.graph import parse_graph_text
    from streamcalc.state import generation

    load(r, ns, '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\nmode = "latest"\n')
    gen = generation(
        parse_graph_text(
            '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\nmode = "latest"\n', "t"
        ).definitions()["S"]
    )
    r.hset(keys.slots, "S", gen + b" {not json")
    r.hset(keys.fresh, "S", "garbage")
    send(r, keys, T0, X=1, Y=2)
    drain(redis_url, ns)
    assert [(n, v) for n, v, _, _ in outputs(r, keys)] == [("S", 3)]  # as if the slots were empty


def test_fresh_holds_the_newest_ts_of_derived_nodes_over_the_non_empty_keys(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, SEED)
    send(r, keys, T0, C=1, D=2, E=3, F=4)  # the empty key: its ts are in its latest values
    r.xadd(keys.input, {"C": "1", "D": "2", "E": "3", "F": "4", "@ts": str(T0 + 5), "@key": "k"})
    r.xadd(keys.input, {"C": "1", "D": "2", "E": "3", "@ts": str(T0 + 3), "@key": "j"})
    drain(redis_url, ns)
    assert r.hgetall(keys.fresh) == {b"A": str(T0 + 5).encode(), b"B": str(T0 + 5).encode()}
    assert latest_values(r, keys)["B"][0] == T0


def test_a_newer_latest_value_the_worker_did_not_write_is_never_replaced_by_an_older_one(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    # One entry a batch; an entry of an unknown name between two of X, so that the
    # second is prepared while a batch without X is in flight.
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\nmode = "latest"\n')
    send(r, keys, T0 + 10, X=1)
    drain(redis_url, ns)
    r.hset(keys.latest, "X", f"{T0 + 100} 50")  # not this worker's: another tenure's, say
    for ts in (T0 + 20, T0 + 30, T0 + 40):
        send(r, keys, ts, X=ts - T0)  # X stayed: its ts is still not known to the worker
        send(r, keys, ts + 1, Unknown=0)
    drain(redis_url, ns, batch=1)
    assert latest_values(r, keys)["X"] == (T0 + 100, 50)
    for ts in (T0 + 200, T0 + 150):  # newer, then older than what the worker wrote
        send(r, keys, ts, X=ts - T0)
        send(r, keys, ts + 1, Unknown=0)
    drain(redis_url, ns, batch=1)
    assert latest_values(r, keys)["X"] == (T0 + 200, 200)
    assert latest_values(r, keys)["S"] == (T0 + 200, 201)
    send(r, keys, T0 + 300, X=300)
    drain(redis_url, ns, batch=1)
    assert latest_values(r, keys)["X"] == (T0 + 300, 300)
    for ts in (T0 + 400, T0 + 500, T0 + 450):  # back to back: each prepared during the
        send(r, keys, ts, X=ts - T0)  # commit before it, which compares X with the stored
    drain(redis_url, ns, batch=1)
    assert latest_values(r, keys)["X"] == (T0 + 500, 500)
    assert [v for n, v, _, _ in outputs(r, keys)] == [2, 21, 31, 41, 201, 301, 401, 501]
