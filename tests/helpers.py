"""Helpers for tests: load graphs, run a worker in-process until the stream is drained."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys
from streamcalc.messages import decode_output
from streamcalc.settings import Settings
from streamcalc.store import read_range, store_graph
from streamcalc.worker import Worker


def load(r: redis.Redis, ns: str, toml: str) -> None:
    """Validate and store a graph given as TOML text."""
    store_graph(r, Keys(ns), parse_graph_text(toml, "<test>"))


def drain(redis_url: str, ns: str, **settings: Any) -> Worker:
    """Run one worker until every entry of every partition is acknowledged, then stop it."""
    worker = Worker(Settings(redis_url=redis_url, ns=ns, block_ms=10, wait_s=5, **settings))
    worker.start()
    worker.drain()
    worker.leave()
    worker.client.close()
    return worker


def idle(r: redis.Redis, keys: Keys, group: str = "streamcalc") -> bool:
    """True when the group has delivered the stream's last entry and nothing is pending."""
    last = r.xrevrange(keys.input, count=1)
    for info in r.xinfo_groups(keys.input):
        if info["name"].decode() == group:
            delivered = info["last-delivered-id"]
            return info["pending"] == 0 and (not last or last[0][0] == delivered)
    return not last


def outputs(r: redis.Redis, keys: Keys) -> list[tuple[str, Any, int, str]]:
    """Every output entry as (node, value, ts, src), in stream order."""
    rows = [decode_output(fields) for _, fields in read_range(r, keys.output)]
    return [(o.node, o.value, o.ts, o.src) for o in rows]


def dead_letters(r: redis.Redis, keys: Keys) -> list[dict[str, str]]:
    """Every dead letter as a dict of text fields."""
    return [
        {k.decode("latin-1"): v.decode("latin-1") for k, v in fields.items()}
        for _, fields in r.xrange(keys.dead)
    ]


class Background:
    """A worker running in a thread, for tests that need it live."""

    def __init__(self, redis_url: str, ns: str, **settings: Any) -> None:
        self.worker = Worker(
            Settings(redis_url=redis_url, ns=ns, block_ms=10, wait_s=5, **settings)
        )
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(timeout=10)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it is true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
