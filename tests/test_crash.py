"""Crash anywhere, lose nothing, duplicate nothing (S9): worker processes killed with SIGKILL."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
import redis
from helpers import dead_letters, idle, load, outputs
from model import Model, ModelNode

from streamcalc.faults import POINTS
from streamcalc.keys import Keys
from streamcalc.producer import Producer
from streamcalc.store import latest_values

# Depth 4, both modes, an event-time TTL that out-of-order entries run into.
GRAPH = """
[defaults]
ttl = "40ms"
[nodes.L1]
fn = "add"
args = ["X", "Y"]
mode = "latest"
[nodes.L2]
expr = "L1 * Z - X"
[nodes.L3]
fn = "max"
args = ["L2", "Y"]
mode = "latest"
[nodes.L4]
expr = "L3 + L1"
ttl = 0
"""
MODEL_NODES = {
    "L1": ModelNode(["X", "Y"], 40, "latest", lambda v: v[0] + v[1]),
    "L2": ModelNode(["L1", "Z", "X"], 40, "consume", lambda v: v[0] * v[1] - v[2]),
    "L3": ModelNode(["L2", "Y"], 40, "latest", max),
    "L4": ModelNode(["L3", "L1"], 0, "consume", lambda v: v[0] + v[1]),
}


def fill(
    r: redis.Redis, keys: Keys, n: int, rng: random.Random, model: Model | None = None
) -> Model:
    """Append ``n`` random entries (some out of order) and feed them to the model in order."""
    model = model or Model(dict(MODEL_NODES))
    ts = max((t for t, _ in model.latest.values()), default=1_000_000)
    pipe = r.pipeline(transaction=False)
    rows = []
    for _ in range(n):
        ts += rng.randint(-15, 20)
        readings = {k: rng.randint(-5, 9) for k in rng.sample(["X", "Y", "Z"], rng.randint(1, 3))}
        rows.append((ts, readings))
        pipe.xadd(keys.input, {**{k: str(v) for k, v in readings.items()}, "@ts": str(ts)})
    ids = [entry_id.decode() for entry_id in pipe.execute()]
    for entry_id, (ts, readings) in zip(ids, rows, strict=True):
        model.apply(entry_id, ts, list(readings.items()))
    return model


def start_worker(
    env: dict[str, str], consumer: str, batch: int, **fault: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "streamcalc", "worker", "--consumer", consumer,
            "--claim-idle", "0", "--batch", str(batch), "--block-ms", "20",
            "--max-deliveries", "1000000", "--log-level", "error",
        ],
        env={**env, **fault},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_idle(r: redis.Redis, keys: Keys, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if idle(r, keys):
            return True
        time.sleep(0.02)
    return False


def _unfinished(r: redis.Redis, keys: Keys) -> int:
    """Entries not yet acknowledged: pending plus not yet delivered (any Redis version)."""
    return Producer(r, keys.ns).lag()


def assert_matches_model(r: redis.Redis, keys: Keys, model: Model) -> None:
    got = outputs(r, keys)
    pairs = Counter((src, node) for node, _, _, src in got)
    duplicates = [pair for pair, count in pairs.items() if count > 1]
    assert duplicates == [], f"{len(duplicates)} (@src, node) pairs emitted twice"
    missing = sorted(set(model.out) - set(got))[:5]
    extra = sorted(set(got) - set(model.out))[:5]
    assert len(got) == len(model.out), f"derived values lost or invented: {missing} {extra}"
    assert got == model.out  # same values, same ts, same waves, same order
    assert dead_letters(r, keys) == []
    assert latest_values(r, keys) == model.latest
    assert r.xpending(keys.input, "streamcalc")["pending"] == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_at_every_injection_point_and_at_random(
    r: redis.Redis, ns: str, env: dict[str, str]
) -> None:
    rng = random.Random(20261121)
    keys = Keys(ns)
    load(r, ns, GRAPH)
    model = fill(r, keys, 1000, rng)
    entries = 1000
    plan: list[dict[str, Any]] = []
    for _ in range(3):
        plan += [{"point": point} for point in POINTS]
        plan += [{"point": "random"} for _ in range(3)]
    rng.shuffle(plan)
    kills = 0
    for step in plan:
        if _unfinished(r, keys) < 500:  # keep every worker busy until its fault point
            model = fill(r, keys, 500, rng, model)
            entries += 500
        consumer = rng.choice(["c0", "c1", f"new-{kills}"])
        batch = rng.choice([1, 7, 40])
        if step["point"] == "random":
            proc = start_worker(env, consumer, batch)
            time.sleep(rng.uniform(0.4, 1.2))
            proc.kill()
        else:
            after = str(rng.randint(0, 5))
            fault = {"STREAMCALC_FAULT": step["point"], "STREAMCALC_FAULT_AFTER": after}
            proc = start_worker(env, consumer, batch, **fault)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()  # reached the end of the stream before the fault point
        if proc.wait() == -signal.SIGKILL:
            kills += 1
    assert kills >= 20, "the plan should have killed workers many times"
    proc = start_worker(env, "finisher", 50)
    try:
        assert wait_idle(r, keys, timeout=120), "the stream was not drained"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert_matches_model(r, keys, model)
    print(f"kills survived: {kills}, entries: {entries}, outputs: {len(model.out)}")


@pytest.mark.parametrize("point", POINTS)
def test_crash_at_point_then_same_consumer_finishes(
    r: redis.Redis, ns: str, env: dict[str, str], point: str
) -> None:
    keys = Keys(ns)
    load(r, ns, GRAPH)
    model = fill(r, keys, 200, random.Random(point))
    proc = start_worker(env, "c0", 30, STREAMCALC_FAULT=point, STREAMCALC_FAULT_AFTER="2")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert r.xpending(keys.input, "streamcalc")["pending"] > 0 or point == "after_commit"
    proc = start_worker(env, "c0", 30)
    try:
        assert wait_idle(r, keys, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert_matches_model(r, keys, model)
