"""SIGKILL while partitions change hands (S9, S10, S12, section 7): nothing lost, nothing twice.

Four partitions, three worker processes, keyed entries: half of the keys are
written straight to their partition, the other half (one of them without any
``@ts``) through the routing stream ``sc:{NS}:in``. Workers are killed at every
fault point of :mod:`streamcalc.faults` and at random, then restarted under
their own name (which takes its leases back at once) or a new one (which waits
the leases out). At the end every key's output equals its model's, no
``(@src, @key, node)`` is emitted twice, and every routed entry arrived in its
partition exactly once, in order, with its event time.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
import redis
from helpers import WorkerProcesses, owners, wait_for
from keyed import CRASH_NODES, KeyedRun, crash_model, partitioned, random_specs
from test_crash import GRAPH

from streamcalc.faults import HANDOVER_POINTS, POINTS
from streamcalc.ownership import deal

P = 4
#: A worker name that owns partition 0 (so routes) beside w1 and w2, and beside w1 alone.
ROUTER = next(
    name
    for name in (f"a{i}" for i in range(100))
    if deal(tuple(sorted((name, "w1", "w2"))), P)[0]
    == name
    == deal(tuple(sorted((name, "w1"))), P)[0]
)
DIRECT_KEYS = ["", "dev.1", "dev.2", "site:2/a", "x_4"]
ROUTED_KEYS = ["r.1", "r.2", "r.3", "r.4", "r.timeless"]
KEYS = DIRECT_KEYS + ROUTED_KEYS


LEASE_MS = 500


def worker_args(lease_ms: int = LEASE_MS) -> tuple[str, ...]:
    """Options of every worker here (poison detection off: a crash loop is no poison entry)."""
    return (
        "--lease-ms", str(lease_ms), "--batch", "15", "--block-ms", "20", "--claim-idle", "0",
        "--max-deliveries", "1000000", "--log-level", "warning",
    )  # fmt: skip


#: Points worth their time in the quick suite too: a handover with entries in hand.
QUICK = ("after_claim", "mid_route", "mid_wave")
HANDOVERS = HANDOVER_POINTS


class Feed:
    """Writes random keyed entries (direct and routed) and keeps the per-key models."""

    def __init__(self, r: redis.Redis, ns: str, seed: str) -> None:
        self.rng = random.Random(seed)
        self.run = KeyedRun(r, ns, P, crash_model)
        self.clock = {key: 1_000_000 for key in KEYS if key != "r.timeless"}

    def __call__(self, n: int) -> None:
        self.run.write(random_specs(self.rng, n, KEYS, self.clock, ROUTED_KEYS))


def _died(crew: WorkerProcesses, consumer: str) -> int | None:
    """The exit code of ``consumer`` if it has exited (then forgotten), else None."""
    code = crew.procs[consumer].poll()
    if code is not None:
        del crew.procs[consumer]
    return code


def _finish(crew: WorkerProcesses, feed: Feed) -> None:
    """Let the live workers drain everything, stop them cleanly and check every key."""
    feed(100)
    feed.run.wait_idle(timeout=60)
    for name in crew.procs:
        crew.wait_running(feed.run.r, feed.run.ns, name, LEASE_MS)
    codes = crew.stop_all()
    assert set(codes.values()) == {0}, f"a worker did not stop cleanly: {codes}"
    feed.run.check(CRASH_NODES)
    assert sum(len(m.out) for m in feed.run.models.values()) > 200, "too few derived values"


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "point",
    [p if p in QUICK else pytest.param(p, marks=pytest.mark.slow) for p in (*POINTS, *HANDOVERS)],
)
def test_sigkill_at_a_fault_point_while_partitions_change_hands(
    r: redis.Redis, env: dict[str, str], point: str, tmp_path: Path
) -> None:
    ns = partitioned(r, GRAPH, P)
    feed = Feed(r, ns, point)
    feed(200)
    after = str(feed.rng.randint(0, 2) if point in HANDOVERS[:3] else feed.rng.randint(0, 30))
    fault = {"STREAMCALC_FAULT": point, "STREAMCALC_FAULT_AFTER": after}
    with WorkerProcesses({**env, "STREAMCALC_NS": ns}, *worker_args(), log_dir=tmp_path) as crew:
        # w1 and w2 divide the partitions; w2 dies with entries in hand and comes back
        crew.start("w1")
        crew.start("w2")
        wait_for(lambda: set(owners(r, ns, P)) == {"w1", "w2"}, timeout=30)
        crew.kill("w2")
        feed(50)
        crew.start("w2")
        # the router joins last and takes partitions from the others; it keeps partition 0
        # and so the routing stream while w2 keeps leaving and coming back
        crew.start(ROUTER, **fault)
        code = _churn_until_exit(crew, feed, ROUTER)
        assert code == -signal.SIGKILL, f"{ROUTER} exited with {code}, not killed at {point}"
        crew.start(feed.rng.choice([ROUTER, "a1"]))  # the same name, or a new one
        feed(100)
        _finish(crew, feed)


def _churn_until_exit(crew: WorkerProcesses, feed: Feed, consumer: str) -> int | None:
    """Keep entries coming and partitions moving (w2 leaves and comes back) until ``consumer``
    exits; returns its exit code (None if it never did)."""
    deadline = time.monotonic() + 40
    next_churn = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        code = _died(crew, consumer)
        if code is not None:
            return code
        feed(20)
        time.sleep(0.05)
        if time.monotonic() > next_churn:
            crew.wait_running(feed.run.r, feed.run.ns, "w2", LEASE_MS)
            assert crew.stop("w2") == 0
            time.sleep(0.3)
            crew.start("w2")
            next_churn = time.monotonic() + 1.5
    crew.kill(consumer)
    return None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_at_random_while_workers_come_and_go(
    r: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    ns = partitioned(r, GRAPH, P)
    feed = Feed(r, ns, "random kills")
    rng = feed.rng
    feed(300)
    kills = 0
    with WorkerProcesses({**env, "STREAMCALC_NS": ns}, *worker_args(), log_dir=tmp_path) as crew:
        for name in ("w0", "w1", "w2"):
            crew.start(name)
        for i in range(24):
            feed(rng.randint(20, 150))
            time.sleep(rng.uniform(0.2, 1.0))
            victim = rng.choice(sorted(crew.procs))
            if rng.random() < 0.75:
                crew.kill(victim)
                kills += 1
            else:
                crew.wait_running(r, ns, victim, LEASE_MS)
                assert crew.stop(victim) == 0
            crew.start(rng.choice([victim, f"n{i}"]))  # the same name, or a new one
        _finish(crew, feed)
    assert kills >= 12


def test_a_worker_restarted_under_its_name_takes_its_leases_back_at_once(
    r: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    """A SIGKILLed worker restarted under its own name need not wait out its leases."""
    ns = partitioned(r, GRAPH, P)
    feed = Feed(r, ns, "restart")
    feed(100)
    slow_leases = worker_args(lease_ms=30_000)  # a lease would take 30 s to expire
    with WorkerProcesses({**env, "STREAMCALC_NS": ns}, *slow_leases, log_dir=tmp_path) as crew:
        crew.start("w0")
        wait_for(lambda: owners(r, ns, P) == ["w0"] * P, timeout=30)
        before = r.mget([k.lease("streamcalc") for k in feed.run.namespace.partitions(P)])
        crew.kill("w0")
        feed(100)
        crew.start("w0")
        feed.run.wait_idle(timeout=20)  # well before the old leases expire
        after = r.mget([k.lease("streamcalc") for k in feed.run.namespace.partitions(P)])
        assert all(new != old for new, old in zip(after, before, strict=True)), "new epochs"
        _finish(crew, feed)
