"""The worker's automatic retention (--retain) bounds the streams and keeps what a group needs."""

from __future__ import annotations

import redis
from helpers import idle, load

from streamcalc.keys import Keys
from streamcalc.settings import Settings
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
