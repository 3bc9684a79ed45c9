"""One commit carries a bounded number of derived values, whatever the graph's fan-out."""

from __future__ import annotations

import redis
from helpers import Background, load, outputs, wait_for

from streamcalc import metrics
from streamcalc.budget import COMMIT_VALUES_BUDGET
from streamcalc.keys import Keys
from streamcalc.scripts import CommitRequest, Scripts

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
    # 40,000 values at most COMMIT_VALUES_BUDGET (1,500) a commit: 27 commits (one may
    # have been counted before the burst, when the last learning batch settled late)
    assert commits >= 400 * FAN_OUT / COMMIT_VALUES_BUDGET - 1
    assert len(outputs(r, keys)) == 405 * FAN_OUT


WIDE = 1_000
WIDE_GRAPH = "".join(f'[nodes.W{i}]\nexpr = "X + {i}"\nmode = "latest"\n' for i in range(WIDE))
#: What one commit may hold Redis for, measured by Redis itself: the CPU time Redis used
#: per commit (INFO cpu; not the time it waited for a core: 5.2-5.6 ms seen for 1,000
#: values, 7.6 ms for 2,000) and each commit's wall-clock time (SLOWLOG: ~4-6 ms on a
#: quiet 2-core machine, 10-35 ms, some up to 85, on a loaded one). Without the values
#: budget a commit of this fan-out carries up to 64,000 values and takes 0.1-0.5 s.
MEDIAN_COMMIT_US = 50_000
SLOWEST_COMMIT_US = 250_000
CPU_PER_COMMIT_US = 10_000


def test_one_commit_holds_redis_for_a_few_milliseconds_on_a_large_fan_out(
    redis_url: str, r: redis.Redis, ns: str
) -> None:
    keys = Keys(ns)
    load(r, ns, WIDE_GRAPH)
    commit_sha = Scripts(r, keys).commit_command(CommitRequest("g", "c", "0", "t"))[1].encode()
    previous = r.config_get("slowlog-*")
    r.config_set("slowlog-max-len", 100_000)
    r.config_set("slowlog-log-slower-than", 1_000)  # the commands a script runs are logged too
    r.slowlog_reset()
    cpu_before = _redis_cpu_s(r)
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(200):  # 200,000 derived values
            pipe.xadd(keys.input, {"X": str(i)})
        pipe.execute()
        with Background(redis_url, ns, batch=500):
            wait_for(lambda: r.xlen(keys.output) == 200 * WIDE, timeout=180)
        log = r.slowlog_get(100_000)
        cpu_s = _redis_cpu_s(r) - cpu_before
    finally:
        r.config_set("slowlog-log-slower-than", previous["slowlog-log-slower-than"])
        r.config_set("slowlog-max-len", previous["slowlog-max-len"])
    durations = sorted(
        int(e["duration"]) for e in log if e["command"].split(b" ")[:2] == [b"EVALSHA", commit_sha]
    )
    # one entry (1,000 values) a commit: ~200 commits, nearly all of them over 1 ms
    assert len(durations) >= 200 * WIDE // COMMIT_VALUES_BUDGET // 2, durations
    # what Redis spent on CPU (all it did meanwhile, commits mostly) per commit
    assert cpu_s / len(durations) * 1e6 < CPU_PER_COMMIT_US, (cpu_s, durations)
    assert durations[len(durations) // 2] < MEDIAN_COMMIT_US, durations
    assert durations[-1] < SLOWEST_COMMIT_US, durations


def _redis_cpu_s(r: redis.Redis) -> float:
    """CPU seconds the Redis server has used (not the time it waited for a core)."""
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
