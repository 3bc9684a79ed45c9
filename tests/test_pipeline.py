"""One worker on several partitions: a partition's turn that runs out of time leaves its last
commit in flight, settled during the next partition's turn, and what it read ahead is the
first batch of its next turn. The output must still equal the model, per key and in order."""

from __future__ import annotations

import random

import pytest
import redis
from helpers import Background
from keyed import CRASH_NODES, KeyedRun, crash_model, partitioned, random_specs
from test_crash import GRAPH

from streamcalc.partition import Tenure

P = 4


@pytest.mark.timeout(180)
def test_turns_that_run_out_of_time_leave_commits_in_flight_and_lose_nothing(
    redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled: list[int] = []
    settle = Tenure.settle

    def counting_settle(self: Tenure) -> None:
        if self.in_flight is not None:
            settled.append(len(self.in_flight[0].raw))
        settle(self)

    monkeypatch.setattr(Tenure, "settle", counting_settle)
    rng = random.Random(8)
    keys = [f"dev-{i}" for i in range(40)]
    clock = {key: 1_000_000 for key in keys[::2]}  # half the keys carry an @ts, out of order
    ns = partitioned(r, GRAPH, P)
    run = KeyedRun(r, ns, P, crash_model)
    run.write(random_specs(rng, 6000, keys, clock))
    # a tick of 0.1 s: each of the 4 partitions gets about 25 ms a turn, a few small batches
    with Background(redis_url, ns, consumer="w0", lease_ms=500, batch=20):
        run.wait_idle(timeout=150)
    assert settled, "no turn left a commit in flight"
    run.check(CRASH_NODES)
