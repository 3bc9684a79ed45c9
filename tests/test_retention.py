"""The worker's automatic retention (--retain) bounds the streams and keeps what a group needs."""

from __future__ import annotations

import redis
from helpers import idle, load

from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys, Namespace
from streamcalc.settings import Settings
from streamcalc.store import store_graph
from streamcalc.worker import Worker


def test_retain_bounds_streams_but_keeps_unacknowledged(
    redis_url: str, r: redis.Redis, ns: str
) -> None:
    keys = Keys(ns)
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\nmode = "latest"\n')
    for i in range(300):
        r.xadd(keys.input, {"X": str(i)})
    r.xgroup_create(keys.input, "audit", id="0")
    r.xreadgroup("audit", "auditor", {keys.input: ">"}, count=120)  # 120 pending in "audit"
    worker = Worker(Settings(redis_url=redis_url, ns=ns, block_ms=10, retain_len=50))
    worker.start()
    while worker.step() or not idle(r, keys):
        pass
    worker.retain()
    assert r.xlen(keys.output) == 50
    assert r.xlen(keys.input) == 300  # audit still has its first entry pending
    oldest_pending = r.xpending_range(keys.input, "audit", "-", "+", 1)[0]["message_id"]
    r.xack(keys.input, "audit", oldest_pending)
    worker.retain()
    assert r.xlen(keys.input) == 299  # exactly down to audit's next pending entry
    first = r.xrange(keys.input, count=1)[0][0]
    assert first == r.xpending_range(keys.input, "audit", "-", "+", 1)[0]["message_id"]
    r.xgroup_destroy(keys.input, "audit")
    worker.retain()
    assert r.xlen(keys.input) == 50
    worker.leave()
    worker.client.close()


def test_retain_trims_every_partition_the_worker_owns_and_the_routing_stream(
    redis_url: str, r: redis.Redis, ns: str
) -> None:
    store_graph(r, ns, parse_graph_text('[nodes.S]\nexpr = "X + 1"\n', "<test>"), partitions=4)
    layout = Namespace(ns)
    for i in range(40):
        key = f"dev{i % 8}"
        r.xadd(layout.of_key(key, 4).input, {"X": str(i), "@key": key})
        r.xadd(layout.root.input, {"X": str(i), "@key": key})  # routed by the worker
    worker = Worker(Settings(redis_url=redis_url, ns=ns, block_ms=10, retain_len=3))
    worker.start()
    worker.drain()
    assert sorted(worker.owned) == [0, 1, 2, 3] and worker.router is not None
    worker.retain()
    streams = [(k.input, k.output, k.dead) for k in [*layout.partitions(4), layout.root]]
    lengths = [r.xlen(stream) for group in streams for stream in group]
    assert all(n <= 3 for n in lengths) and sum(lengths) > 0
    assert [r.xlen(k.input) for k in layout.partitions(4)] == [3, 3, 3, 3]
    assert r.xlen(layout.root.input) == 3
    worker.leave()
    worker.client.close()
