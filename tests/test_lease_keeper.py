"""A batch slower than the lease keeps its partition: the lease keeper renews it meanwhile."""

from __future__ import annotations

import redis
from helpers import Background, load, outputs, wait_for

from streamcalc.keys import Keys
from streamcalc.ownership import deal

SLOW = '[nodes.S]\nfn = "graph_plugins:nap"\nargs = ["X"]\nmode = "latest"\n'


def test_a_slow_batch_is_not_taken_over(redis_url: str, r: redis.Redis, ns: str) -> None:
    keys = Keys(ns)
    load(r, ns, SLOW)
    ids = [r.xadd(keys.input, {"X": str(i)}).decode() for i in range(3)]
    slow = {"lease_ms": 300, "function_timeout_s": 5, "batch": 3, "plugins": ("graph_plugins",)}
    # the first keeps the partition when the second joins (the assignment says so)
    (first,) = deal(("one", "two"), 1)
    (second,) = {"one", "two"} - {first}
    with Background(redis_url, ns, consumer=first, **slow):
        wait_for(lambda: r.get(keys.lease("streamcalc")) is not None)
        holder = r.get(keys.lease("streamcalc"))
        with Background(redis_url, ns, consumer=second, **slow):
            # each batch naps 3 s, ten times the lease: without renewal, the second worker
            # would take the partition over and the two would fence each other for ever
            wait_for(lambda: len(outputs(r, keys)) == 3, timeout=30)
            assert r.get(keys.lease("streamcalc")) == holder
    assert [src for _, _, _, src in outputs(r, keys)] == ids
    assert r.xlen(keys.dead) == 0
