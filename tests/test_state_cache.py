"""The slot-state cache is bounded (S11): with room for 3 keys, 60 keys still come out exact."""

from __future__ import annotations

import random

import redis
from helpers import drain
from model import Model, ModelNode

from streamcalc.keys import Namespace
from streamcalc.messages import decode_output
from streamcalc.state import StateCache
from streamcalc.store import latest_values, read_range, store_graph

GRAPH = """
[nodes.A]
fn = "add"
args = ["C", "D"]
ttl = "50ms"
[nodes.B]
expr = "A * F"
mode = "latest"
"""


def model() -> Model:
    return Model(
        {
            "A": ModelNode(["C", "D"], 50, "consume", sum),
            "B": ModelNode(["A", "F"], 60_000, "latest", lambda v: v[0] * v[1]),
        }
    )


def test_a_tiny_cache_over_many_keys_gives_the_per_key_model(
    redis_url: str, r: redis.Redis, ns: str
) -> None:
    from streamcalc.graph import parse_graph_text

    store_graph(r, ns, parse_graph_text(GRAPH, "<test>"), partitions=2)
    layout = Namespace(ns)
    rng = random.Random(7)
    keys = [f"dev-{i}" for i in range(60)] + [""]
    models = {k: model() for k in keys}
    ts = 1_000_000
    pipe = r.pipeline(transaction=False)
    rows = []
    for _ in range(1500):
        key = rng.choice(keys)
        ts += rng.randint(-10, 20)
        readings = {n: rng.randint(-3, 5) for n in rng.sample(["C", "D", "F"], rng.randint(1, 3))}
        fields = {**{n: str(v) for n, v in readings.items()}, "@ts": str(ts)}
        if key:
            fields["@key"] = key
        pipe.xadd(layout.of_key(key, 2).input, fields)  # type: ignore[arg-type]
        rows.append((key, ts, readings))
    for entry_id, (key, ts, readings) in zip(pipe.execute(), rows, strict=True):
        models[key].apply(entry_id.decode(), ts, list(readings.items()))

    drain(redis_url, ns, cache_keys=3, batch=50)

    got: dict[str, list[tuple[str, object, int, str]]] = {k: [] for k in keys}
    for part in layout.partitions(2):
        for _, fields in read_range(r, part.output):
            out = decode_output(fields)
            got[out.key].append((out.node, out.value, out.ts, out.src))
    for key in keys:
        assert got[key] == models[key].out, key
        found = latest_values(r, layout.of_key(key, 2), ["A", "B", "C", "D", "F"], key=key)
        assert found == models[key].latest, key


def test_the_cache_evicts_least_recently_used_keys_first() -> None:
    cache = StateCache(2)
    for key in ("a", "b", "c"):
        cache.get(key).slots["N"] = [None]
        cache.evict()
    assert cache.base("a") == {}  # the oldest went first
    assert set(cache.base("b")) == set(cache.base("c")) == {"N"}
    cache.get("b")  # b used again: c is now the oldest
    cache.get("d")
    assert cache.evict(keep=1) == 1
    assert cache.base("c") == {} and cache.base("b") and len(cache) == 2
