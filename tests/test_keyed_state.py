"""How keyed state is stored: one field per key in ``slots`` and in ``latest``, read by every
reader (``values``, ``explain``, the live page), written whole by the worker."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest
import redis
from helpers import drain, load, outputs

from streamcalc.engine import Batch, Engine
from streamcalc.errors import RedisStateError
from streamcalc.keys import Keys, Namespace
from streamcalc.ops.explain import explain
from streamcalc.ops.streams import layout
from streamcalc.store import latest_values
from streamcalc.ui.reader import Reader

T0 = 1_700_000_000_000
SEED = '[nodes.A]\nfn = "add"\nargs = ["C", "D", "E"]\n[nodes.B]\nexpr = "A * F"\n'


def send(r: redis.Redis, keys: Keys, ts: int, key: str = "", **readings: int) -> None:
    fields = {**{n: str(v) for n, v in readings.items()}, "@ts": str(ts)}
    if key:
        fields["@key"] = key
    r.xadd(keys.input, fields)  # type: ignore[arg-type]


def test_a_key_is_one_field_in_slots_and_in_latest_and_every_reader_reads_it(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, SEED)
    send(r, keys, T0, "dev-1", C=1, D=2, E=3, F=2)  # A = 6, B = 12
    send(r, keys, T0 + 1, "dev-2", C=5)  # A waits for D and E
    send(r, keys, T0 + 2, C=7, D=1)  # the empty key: a field per node, as without keys
    send(r, keys, T0 + 3, "dev-1", C=9)
    send(r, keys, T0 - 5, "dev-1", C=4)  # late: dev-1's C stays 9
    drain(redis_url, ns)

    assert set(r.hkeys(keys.latest)) == {b"dev-1|", b"dev-2|", b"C", b"D"}
    assert set(r.hkeys(keys.slots)) == {b"dev-1|", b"dev-2|", b"A"}
    stored = json.loads(r.hget(keys.latest, "dev-1|"))  # type: ignore[arg-type]
    assert stored == {
        "C": [T0 + 3, 9],
        "D": [T0, 2],
        "E": [T0, 3],
        "F": [T0, 2],
        "A": [T0, 6],
        "B": [T0, 12],
    }
    assert [(n, v) for n, v, _, _ in outputs(r, keys)] == [("A", 6), ("B", 12)]

    assert latest_values(r, keys, ["B", "C", "X"], key="dev-1") == {
        "B": (T0, 12),
        "C": (T0 + 3, 9),
    }
    assert latest_values(r, keys, None, key="dev-2") == {"C": (T0 + 1, 5)}
    assert latest_values(r, keys) == {"C": (T0 + 2, 7), "D": (T0 + 2, 1)}

    waiting = explain(r, layout(r, ns), "A", "dev-2")
    assert [(s.arg, s.status, s.value) for s in waiting.slots] == [
        ("C", "filled", 5),
        ("D", "empty", None),
        ("E", "empty", None),
    ]
    used = explain(r, layout(r, ns), "A", "dev-1")
    assert [(s.arg, s.status, s.ts) for s in used.slots] == [
        ("C", "filled", T0 + 3),
        ("D", "used", T0),
        ("E", "used", T0),
    ]

    page = Reader(r, ns).values("dev-2")
    assert page.nodes["C"].value == 5
    assert page.nodes["A"].value is None


def test_tampered_keyed_state_reads_as_empty_and_kills_no_worker(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, SEED)
    r.hset(keys.slots, "dev-1|", "{not json")
    unreadable = explain(r, layout(r, ns), "A", "dev-1")
    assert any("unreadable" in word for word in unreadable.explanation)
    r.hset(keys.latest, "dev-1|", "[" * 10_000)
    with pytest.raises(RedisStateError, match="dev-1"):
        latest_values(r, keys, ["C"], key="dev-1")
    assert Reader(r, ns).values("dev-1").nodes["C"].value is None  # the page shows no value

    send(r, keys, T0, "dev-1", C=1, D=2, E=3)
    drain(redis_url, ns)
    assert [(n, v) for n, v, _, _ in outputs(r, keys)] == [("A", 6)]  # as if it were empty
    assert latest_values(r, keys, ["A", "C"], key="dev-1") == {"A": (T0, 6), "C": (T0, 1)}


def test_a_speculated_batch_does_not_keep_the_one_before_alive(
    redis_url: str, r: redis.Redis, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch's view is built on the one before (its commit still in flight); once built
    it must let go of it, else a turn keeps every key view of every batch it prepared."""
    from streamcalc.graph import parse_graph_text
    from streamcalc.store import store_graph

    store_graph(r, ns, parse_graph_text(SEED, "<test>"), partitions=2)
    space = Namespace(ns)
    for i in range(400):
        key = f"dev-{i % 37}"
        send(r, space.of_key(key, 2), T0 + i, key, C=i, D=1, E=1, F=2)
    chained: list[bool] = []
    prepare = Engine.prepare

    def checking_prepare(self: Engine, batch: Batch, after: Batch | None = None) -> Any:
        done = prepare(self, batch, after)
        if after is not None:
            chained.append(any(ref is after.view for ref in gc.get_referents(done.view)))
        return done

    monkeypatch.setattr(Engine, "prepare", checking_prepare)
    drain(redis_url, ns, batch=7)
    assert chained and not any(chained)
