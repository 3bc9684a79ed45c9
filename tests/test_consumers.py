"""Many consumers (S10): three worker processes are serializable, lose and double nothing."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from helpers import dead_letters, idle, load, outputs
from model import Model, ModelNode

from streamcalc.keys import Keys
from streamcalc.store import latest_values

TS = 1_700_000_000_000  # one event time: no entry is late, whatever order the workers pick


@contextmanager
def workers(env: dict[str, str], n: int, batch: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    options = ["--batch", str(batch), "--block-ms", "20", "--log-level", "error"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "streamcalc", "worker", "--consumer", f"w{i}", *options],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(n)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_idle(r: redis.Redis, keys: Keys, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not idle(r, keys):
        assert time.monotonic() < deadline, "the workers did not drain the stream"
        time.sleep(0.05)


def append(r: redis.Redis, keys: Keys, rows: list[dict[str, int]]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for readings in rows:
        pipe.xadd(keys.input, {**{k: str(v) for k, v in readings.items()}, "@ts": str(TS)})
    return [entry_id.decode() for entry_id in pipe.execute()]


@pytest.mark.slow
def test_single_level_graph_equals_the_model_as_a_multiset(
    r: redis.Redis, ns: str, env: dict[str, str]
) -> None:
    keys = Keys(ns)
    load(
        r,
        ns,
        '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\n'
        '[nodes.P]\nexpr = "X * Y"\nmode = "latest"\n'
        '[nodes.M]\nfn = "max"\nargs = ["X", "Y", "Z"]\n',
    )
    rng = random.Random(3)
    rows = [{k: rng.randint(-50, 50) for k in ("X", "Y", "Z")} for _ in range(4000)]
    with workers(env, 3, batch=25):
        ids = append(r, keys, rows)
        wait_idle(r, keys)
    expected = Counter()
    for src, row in zip(ids, rows, strict=True):
        expected[("S", row["X"] + row["Y"], TS, src)] += 1
        expected[("P", row["X"] * row["Y"], TS, src)] += 1
        expected[("M", max(row.values()), TS, src)] += 1
    assert Counter(outputs(r, keys)) == expected
    assert dead_letters(r, keys) == []
    assert r.xpending(keys.input, "streamcalc")["pending"] == 0


DEEP = """
[nodes.T]
fn = "add"
args = ["K"]
mode = "latest"
[nodes.L1]
fn = "add"
args = ["X", "Y"]
[nodes.L2]
expr = "L1 * Z + K"
mode = "latest"
[nodes.L3]
fn = "sub"
args = ["L2", "X"]
[nodes.L4]
expr = "L3 + L1"
mode = "latest"
"""


@pytest.mark.slow
def test_deep_graph_is_serializable(r: redis.Redis, ns: str, env: dict[str, str]) -> None:
    keys = Keys(ns)
    load(r, ns, DEEP)
    rng = random.Random(7)
    rows = []
    for k in range(3000):
        row = {name: rng.randint(-9, 9) for name in rng.sample(["X", "Y", "Z"], rng.randint(0, 3))}
        rows.append({"K": k, **row})  # K reveals the order in which the waves were committed
    with workers(env, 3, batch=10):
        ids = append(r, keys, rows)
        wait_idle(r, keys)
    got = outputs(r, keys)
    by_id = dict(zip(ids, rows, strict=True))
    order = [src for node, _, _, src in got if node == "T"]
    assert sorted(order) == sorted(ids)  # every wave committed exactly once
    model = Model(
        {
            "T": ModelNode(["K"], 60_000, "latest", lambda v: v[0]),
            "L1": ModelNode(["X", "Y"], 60_000, "consume", lambda v: v[0] + v[1]),
            "L2": ModelNode(["L1", "Z", "K"], 60_000, "latest", lambda v: v[0] * v[1] + v[2]),
            "L3": ModelNode(["L2", "X"], 60_000, "consume", lambda v: v[0] - v[1]),
            "L4": ModelNode(["L3", "L1"], 60_000, "latest", lambda v: v[0] + v[1]),
        }
    )
    for src in order:
        model.apply(src, TS, list(by_id[src].items()))
    assert waves(got) == waves(model.out)
    assert latest_values(r, keys) == model.latest
    assert dead_letters(r, keys) == []
    assert r.xpending(keys.input, "streamcalc")["pending"] == 0


def waves(rows: list[tuple[str, object, int, str]]) -> list[tuple[str, frozenset[object]]]:
    """Output grouped into waves, in stream order; within a wave any topological order is right."""
    grouped: list[tuple[str, set[object]]] = []
    for node, value, ts, src in rows:
        if not grouped or grouped[-1][0] != src:
            grouped.append((src, set()))
        grouped[-1][1].add((node, value, ts))
    return [(src, frozenset(values)) for src, values in grouped]
