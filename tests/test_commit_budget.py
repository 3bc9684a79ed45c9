"""One commit carries a bounded number of derived values, whatever the graph's fan-out."""

from __future__ import annotations

import redis
from helpers import Background, load, outputs, wait_for

from streamcalc import metrics
from streamcalc.budget import COMMIT_VALUES_BUDGET
from streamcalc.keys import Keys

FAN_OUT = 100
GRAPH = "".join(f'[nodes.N{i}]\nexpr = "X + {i}"\nmode = "latest"\n' for i in range(FAN_OUT))


def _commits() -> float:
    return sum(bucket.get() for bucket in metrics.BATCH_SECONDS._buckets)


def test_batches_shrink_so_a_commit_stays_within_the_values_budget(
    redis_url: str, r: redis.Redis, ns: str
) -> None:
    keys = Keys(ns)
    load(r, ns, GRAPH)
    with Background(redis_url, ns, batch=500) as worker:
        for i in range(5):  # the worker learns how many values an entry fires
            r.xadd(keys.input, {"X": str(i)})
        wait_for(lambda: r.xlen(keys.output) == 5 * FAN_OUT)
        wait_for(lambda: worker.owned[0].engine.batch_size() <= COMMIT_VALUES_BUDGET // FAN_OUT)
        before = _commits()
        pipe = r.pipeline(transaction=False)
        for i in range(400):
            pipe.xadd(keys.input, {"X": str(i)})
        pipe.execute()
        wait_for(lambda: r.xlen(keys.output) == 405 * FAN_OUT, timeout=60)
        commits = _commits() - before
    # 40,000 values at most COMMIT_VALUES_BUDGET (2,000) a commit: 20 commits (one may
    # have been counted before the burst, when the last learning batch settled late)
    assert commits >= 400 * FAN_OUT / COMMIT_VALUES_BUDGET - 1
    assert len(outputs(r, keys)) == 405 * FAN_OUT
