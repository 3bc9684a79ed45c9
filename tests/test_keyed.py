"""Keyed state on four partitions (S10-S12, section 7): three workers equal the per-key model.

The hypothesis part runs the three workers in threads of this process
(:class:`helpers.Background`, the same ``Worker.run`` a process runs): a worker
is bound to one namespace, so fresh namespaces per example would need fresh
processes per example, about three seconds each on this box. Threads make an
example cost a few hundred milliseconds, so hypothesis gets dozens of random
graphs, keys and handovers (the workers start while entries are already
waiting and divide the partitions among themselves mid-stream). The real
processes (``python -m streamcalc worker``) run one fixed, larger scenario per
way of writing, with staggered starts so that partitions change hands under
load; the crash tests (test_rebalance_crash.py) use processes throughout.
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import pytest
import redis
from helpers import Background, WorkerProcesses, owned_counts, owners, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keyed import CRASH_NODES, KeyedRun, Spec, crash_model, partitioned, random_specs
from test_crash import GRAPH
from test_differential import INPUTS, entry_lists, graph_specs, model_of, toml_of

P = 4
#: Keys over all four partitions (crc32 mod 4: dev.1 -> 1, dev.2 -> 3, site:2/a -> 2, x_4 -> 0).
KEYS = ["dev.1", "dev.2", "site:2/a", "x_4", "plant1/boiler", "a"]


@st.composite
def keyed_specs(draw: st.DrawFn, derived: list[str], routed: bool) -> list[Spec]:
    """test_differential's entries for each of several keys (the empty key always), interleaved.

    One key may carry no ``@ts`` at all (its ts is its entry ID's time); the odd
    entry of the direct run goes to a partition its key does not belong to, the
    odd one of the routed run has an ``@key`` the router refuses.
    """
    keys = ["", *draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True))]
    drawn = {key: draw(entry_lists(derived)) for key in keys}
    timeless = draw(st.sampled_from([None, *keys]))
    order = draw(st.permutations([key for key, entries in drawn.items() for _ in entries]))
    per_key = {key: iter(entries) for key, entries in drawn.items()}
    specs = []
    for key in order:
        entry = next(per_key[key])
        odd = draw(st.integers(0, 24)) == 0
        specs.append(
            Spec(
                key,
                entry["readings"],
                None if key == timeless else entry["ts"],
                routed=routed,
                bad=entry["bad"],
                misplaced=odd and not routed,
                bad_key=odd and routed,
            )
        )
    return specs


def _forget(r: redis.Redis, ns: str) -> None:
    doomed = list(r.scan_iter(match=f"sc:{{{ns}*", count=1000))
    if doomed:
        r.delete(*doomed)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("routed", [False, True], ids=["direct", "routed"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_three_workers_on_four_partitions_equal_the_model_per_key(
    redis_url: str, r: redis.Redis, routed: bool, data: st.DataObject
) -> None:
    spec = data.draw(graph_specs(), label="graph")
    specs = data.draw(keyed_specs(list(spec), routed), label="entries")
    batch = data.draw(st.integers(1, 8), label="batch")
    early = data.draw(st.integers(0, len(specs)), label="entries written before the workers")
    # the rest comes in chunks a tick apart, while the workers divide the partitions
    cuts = sorted(data.draw(st.lists(st.integers(early, len(specs)), max_size=3), label="cuts"))
    ns = partitioned(r, toml_of(spec), P)
    run = KeyedRun(r, ns, P, lambda: model_of(spec))
    run.write(specs[:early])
    workers = [
        Background(redis_url, ns, consumer=f"w{i}", lease_ms=500, batch=batch) for i in range(3)
    ]
    with contextlib.ExitStack() as stack:
        for worker in workers:
            stack.enter_context(worker)
        for start, end in zip([early, *cuts], [*cuts, len(specs)], strict=True):
            run.write(specs[start:end])
            time.sleep(0.1)
        run.wait_idle(timeout=30)
    assert not any(w.thread.is_alive() for w in workers), "a worker did not stop"
    run.check([*INPUTS, *spec])
    _forget(r, ns)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("routed", [False, True], ids=["direct", "routed"])
def test_three_worker_processes_keep_each_keys_order(
    r: redis.Redis, env: dict[str, str], routed: bool, tmp_path: Any
) -> None:
    ns = partitioned(r, GRAPH, P)
    env = {**env, "STREAMCALC_NS": ns}
    rng = random.Random(f"processes-{routed}")
    keys = ["", "timeless", *(f"dev.{i}" for i in range(8))]
    clock = {key: 1_000_000 for key in keys if key != "timeless"}
    routed_keys = set(keys) if routed else set()
    run = KeyedRun(r, ns, P, crash_model)
    run.write(random_specs(rng, 300, keys, clock, routed_keys))
    args = ("--lease-ms", "500", "--batch", "20", "--block-ms", "20", "--log-level", "warning")
    with WorkerProcesses(env, *args, log_dir=tmp_path) as crew:
        crew.start("w0")
        wait_for(lambda: owned_counts(r, ns, P) == {"w0": P}, timeout=30)
        crew.start("w1")
        crew.start("w2")
        # keep entries coming while w0 hands partitions over to w1 and w2
        rounds = 0
        while set(owners(r, ns, P)) != {"w0", "w1", "w2"} or rounds < 10:
            run.write(random_specs(rng, 20, keys, clock, routed_keys))
            rounds += 1
            assert rounds < 600, "w1 and w2 never got partitions"
            time.sleep(0.05)
        run.write(random_specs(rng, 300, keys, clock, routed_keys))
        run.wait_idle(timeout=60)
        assert owned_counts(r, ns, P) in ({"w0": 2, "w1": 1, "w2": 1},)
        assert crew.stop_all() == {"w0": 0, "w1": 0, "w2": 0}
    run.check(CRASH_NODES)
    assert sum(len(m.out) for m in run.models.values()) > 500, "too few derived values"
