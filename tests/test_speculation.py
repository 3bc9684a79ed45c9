"""One worker pipelines its batches: it commits batch N while it evaluates batch N+1 on top of
N's expected result. A correct speculation never conflicts with its own commit."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from helpers import dead_letters, drain, load, outputs
from prometheus_client import REGISTRY

from streamcalc.engine import Batch, Engine
from streamcalc.keys import Keys

T0 = 1_700_000_000_000
# Every entry touches both nodes, so every batch reads the slot state the one before wrote.
# Z (rank 0) keeps its slots, so each value depends on the batch before; A (rank 1) consumes.
GRAPH = '[nodes.Z]\nfn = "add"\nargs = ["X", "Y"]\nmode = "latest"\n[nodes.A]\nexpr = "Z * 2"\n'
ENTRIES = 3000
BATCH = 7


def conflicts() -> float:
    """The process's commit conflicts so far (``streamcalc_commit_conflicts_total``)."""
    value = REGISTRY.get_sample_value("streamcalc_commit_conflicts_total")
    assert value is not None
    return value


def test_one_worker_pipelining_many_batches_never_conflicts(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(r, ns, GRAPH)
    pipe = r.pipeline(transaction=False)
    for i in range(ENTRIES):
        pipe.xadd(keys.input, {"X" if i % 2 == 0 else "Y": str(i), "@ts": str(T0 + i)})
    ids = [entry_id.decode() for entry_id in pipe.execute()]

    speculated = 0
    prepare = Engine.prepare

    def counting_prepare(self: Engine, batch: Batch, after: Batch | None = None) -> Any:
        nonlocal speculated
        speculated += after is not None
        return prepare(self, batch, after)

    monkeypatch.setattr(Engine, "prepare", counting_prepare)
    before = conflicts()
    drain(redis_url, ns, batch=BATCH)

    assert conflicts() - before == 0
    assert speculated >= ENTRIES // BATCH // 2  # the test did exercise speculation
    # Z = X + Y fires from the second entry on, with the newest X and Y; A doubles it.
    expected = []
    for i in range(1, ENTRIES):
        expected += [("Z", 2 * i - 1, T0 + i, ids[i]), ("A", 4 * i - 2, T0 + i, ids[i])]
    assert outputs(r, keys) == expected
    assert dead_letters(r, keys) == []
    assert r.xpending(keys.input, "streamcalc")["pending"] == 0
