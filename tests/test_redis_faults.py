"""Redis faults: a worker rides out a restart of an AOF Redis, reports one that came back empty."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from helpers import Background, idle, load, outputs, wait_for
from model import Model, ModelNode

from streamcalc.embedded import EmbeddedRedis
from streamcalc.keys import Keys

NS = "faults"
GRAPH = '[nodes.A]\nfn = "add"\nargs = ["C", "D"]\n[nodes.B]\nexpr = "A * F"\nmode = "latest"\n'


@pytest.fixture
def aof_server() -> Iterator[EmbeddedRedis]:
    """A private Redis with AOF fsynced on every write: a SIGKILL loses nothing acknowledged."""
    server = EmbeddedRedis(appendonly=True, extra_args=["--appendfsync", "always"]).start()
    try:
        yield server
    finally:
        server.stop()


def start_worker(url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "STREAMCALC_REDIS_URL": url, "STREAMCALC_NS": NS}
    return subprocess.Popen(
        [sys.executable, "-m", "streamcalc", "worker", "--consumer", "w1", "--block-ms", "20",
         "--log-format", "json", "--claim-idle", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def produce(url: str, count: int, done: threading.Event) -> list[tuple[str, dict[str, int]]]:
    """Append ``count`` entries with explicit IDs, retrying through outages without duplicates."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
    sent: list[tuple[str, dict[str, int]]] = []
    base = int(time.time() * 1000)
    for i in range(count):
        entry_id = f"{base}-{i + 1}"
        readings = {"C": i % 7, "D": i % 5, "F": i % 3}
        fields = {k: str(v) for k, v in readings.items()}
        while True:
            try:
                client.xadd(Keys(NS).input, fields, id=entry_id)  # type: ignore[arg-type]
                break
            except redis.ResponseError as exc:
                if "equal or smaller" in str(exc):
                    break  # applied before the connection dropped
                raise
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.05)
        sent.append((entry_id, readings))
        time.sleep(0.002)
    done.set()
    return sent


def seed_model(sent: list[tuple[str, dict[str, int]]]) -> Model:
    model = Model(
        {
            "A": ModelNode(["C", "D"], 60_000, "consume", lambda v: v[0] + v[1]),
            "B": ModelNode(["A", "F"], 60_000, "latest", lambda v: v[0] * v[1]),
        }
    )
    for entry_id, readings in sent:
        model.apply(entry_id, int(entry_id.split("-")[0]), list(readings.items()))
    return model


@pytest.mark.slow
def test_worker_survives_a_restart_of_an_aof_redis(aof_server: EmbeddedRedis) -> None:
    r = redis.Redis.from_url(aof_server.url)
    load(r, NS, GRAPH)
    worker = start_worker(aof_server.url)
    done = threading.Event()
    result: list[list[tuple[str, dict[str, int]]]] = []
    producer = threading.Thread(target=lambda: result.append(produce(aof_server.url, 1500, done)))
    producer.start()
    try:
        # mid-run: once the worker is working (on a busy box it may still be starting at 1 s,
        # and would then wait for Redis at start instead of riding out an outage)
        wait_for(lambda: r.xlen(Keys(NS).output) > 0, timeout=30)
        time.sleep(0.3)
        aof_server.kill()  # SIGKILL mid-run
        time.sleep(1.5)
        aof_server.start()  # same port, same AOF
        r = redis.Redis.from_url(aof_server.url)
        producer.join(timeout=120)
        assert done.is_set()
        deadline = time.monotonic() + 60
        while not idle(r, Keys(NS)):
            assert time.monotonic() < deadline, "the worker did not finish after the restart"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0
    model = seed_model(result[0])
    got = outputs(r, Keys(NS))
    assert Counter((src, node) for node, _, _, src in got).most_common(1)[0][1] == 1
    assert got == model.out
    events = [json.loads(line)["event"] for line in stderr.splitlines()]
    assert "Traceback" not in stderr
    assert 1 <= events.count("redis unreachable; retrying") <= 3  # a log line, not a storm
    assert "redis is back" in events


@pytest.mark.slow
def test_redis_restarted_empty_is_reported(aof_server: EmbeddedRedis) -> None:
    r = redis.Redis.from_url(aof_server.url)
    load(r, NS, GRAPH)
    worker = start_worker(aof_server.url)
    try:
        r.xadd(Keys(NS).input, {"C": "1", "D": "2", "F": "3"})
        deadline = time.monotonic() + 20
        while r.xlen(Keys(NS).output) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r.flushall()  # our own private server: as if it came back without its data
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert "load the graph again" in last
    assert "Traceback" not in stderr


def test_worker_waits_out_a_redis_out_of_memory(ns: str) -> None:
    with EmbeddedRedis() as server:
        r = redis.Redis.from_url(server.url)
        load(r, ns, GRAPH)
        keys = Keys(ns)
        ids = [r.xadd(keys.input, {"C": str(i), "D": "1", "F": "2"}).decode() for i in range(50)]
        r.xgroup_create(keys.input, "streamcalc", id="0")
        r.config_set("maxmemory", 1)  # every write is refused from now on
        with Background(server.url, ns, batch=7):
            time.sleep(1.0)
            assert r.xlen(keys.output) == 0  # nothing half-written meanwhile
            r.config_set("maxmemory", 0)
            wait_for(lambda: idle(r, keys), timeout=30)
        got = outputs(r, keys)
        assert [src for node, _, _, src in got if node == "A"] == ids
        assert len(got) == 100 and r.xlen(keys.dead) == 0
