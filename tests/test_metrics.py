"""Metrics and health of real worker processes: counters move by what was processed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from helpers import healthz, load, wait_for
from prometheus_client import REGISTRY, generate_latest

from streamcalc.embedded import EmbeddedRedis, free_port
from streamcalc.keys import Keys, Namespace
from streamcalc.metrics import METRIC_NAMES

GRAPH = '[nodes.A]\nfn = "add"\nargs = ["C", "D"]\n[nodes.B]\nfn = "div"\nargs = ["A", "F"]\n'


def scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    pattern = re.compile(re.escape(name) + r"(\{.*\})?$")
    total = 0.0
    for key, value in samples.items():
        if pattern.match(key) and all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


@contextmanager
def worker(env: dict[str, str], port: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamcalc", "worker", "--metrics-port", str(port),
         "--block-ms", "20", "--log-level", "error", *extra],
        env=env,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _answers(port), timeout=20)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(port: int) -> bool:
    try:
        return healthz(port)[0] in (200, 503)
    except OSError:
        return False


def send_batch(r: redis.Redis, keys: Keys, good: int, bad: int, div0: int) -> None:
    for i in range(good):
        r.xadd(keys.input, {"C": str(i), "D": "1", "F": "2"})
    for _ in range(bad):
        r.xadd(keys.input, {"C": "oops"})
    for _ in range(div0):
        r.xadd(keys.input, {"C": "1", "D": "1", "F": "0"})


def test_counters_and_histograms_move(r: redis.Redis, ns: str, env: dict[str, str]) -> None:
    keys = Keys(ns)
    load(r, ns, GRAPH)
    port = free_port()
    with worker(env, port, "--export-values"):
        before = scrape(port)
        send_batch(r, keys, good=30, bad=4, div0=3)
        wait_for(lambda: sample(scrape(port), "streamcalc_entries_total") == 37, timeout=20)
        time.sleep(5.5)  # the gauges read from Redis refresh every 5 s
        after = scrape(port)
        assert healthz(port)[0] == 200
    assert sample(before, "streamcalc_entries_total") == 0
    assert sample(after, "streamcalc_entries_total", outcome="ok") == 33
    assert sample(after, "streamcalc_entries_total", outcome="dead") == 4
    assert sample(after, "streamcalc_readings_total") == 33 * 3
    assert sample(after, "streamcalc_derived_total") == 30 * 2 + 3  # B fails on F=0, A fires
    assert sample(after, "streamcalc_function_errors_total") == 3
    assert sample(after, "streamcalc_event_latency_seconds_count") == 33
    assert sample(after, "streamcalc_batch_seconds_count") >= 1
    assert sample(after, "streamcalc_batch_seconds_sum") > 0
    assert sample(after, "streamcalc_pending") == 0
    assert sample(after, "streamcalc_stream_lag") == 0
    staleness = sample(after, "streamcalc_node_staleness_seconds", node="A")
    assert 0 < staleness < 60
    assert sample(after, "streamcalc_node_value", node="A") == 2  # the div-by-zero entries: 1 + 1
    assert sample(after, "streamcalc_node_value", node="B") == 15  # last good entry: (29 + 1) / 2


def test_healthz_fails_without_redis(ns: str, env: dict[str, str]) -> None:
    with EmbeddedRedis() as server:
        load(redis.Redis.from_url(server.url), ns, GRAPH)
        port = free_port()
        with worker({**env, "STREAMCALC_REDIS_URL": server.url}, port):
            wait_for(lambda: healthz(port)[0] == 200, timeout=20)
            server.kill()
            wait_for(lambda: healthz(port)[0] == 503, timeout=20)


@pytest.mark.slow
def test_processes_share_one_metrics_port(r: redis.Redis, ns: str, env: dict[str, str]) -> None:
    keys = Keys(ns)
    load(r, ns, GRAPH)
    port = free_port()
    args = ("--processes", "2", "--consumer", "pool", "--batch", "5", "--lease-ms", "1000")
    with worker(env, port, *args) as sup:
        wait_for(lambda: healthz(port)[0] == 200, timeout=30)
        wait_for(lambda: _members(r, ns) == {"pool-0", "pool-1"}, timeout=30)
        send_batch(r, keys, good=200, bad=0, div0=0)
        wait_for(lambda: sample(scrape(port), "streamcalc_entries_total") == 200, timeout=30)
        # kill one child: the supervisor restarts it, and the sum keeps counting across it
        children = _children(sup.pid)
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)
        wait_for(lambda: len(_children(sup.pid)) == 2 and children[0] not in _children(sup.pid))
        send_batch(r, keys, good=100, bad=0, div0=0)
        wait_for(lambda: r.xpending(keys.input, "streamcalc")["pending"] == 0, timeout=30)
        wait_for(lambda: sample(scrape(port), "streamcalc_entries_total") == 300, timeout=30)
        # one owner at a time (S10): every entry fires A and B, none late
        assert sample(scrape(port), "streamcalc_derived_total") == 600 == r.xlen(keys.output)
        assert sample(scrape(port), "streamcalc_partitions_owned") == 1
        wait_for(lambda: healthz(port)[0] == 200, timeout=30)
    assert sup.returncode == 0
    assert r.xinfo_consumers(keys.input, "streamcalc") == []  # both left cleanly
    assert _members(r, ns) == set()


def _members(r: redis.Redis, ns: str) -> set[str]:
    return {m.decode() for m in r.zrange(Namespace(ns).members("streamcalc"), 0, -1)}


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        text = file.read()
    return [int(p) for p in text.split()]


def test_observe_many_matches_observe_one_by_one() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from streamcalc.metrics import observe_many

    registry = CollectorRegistry()
    buckets = (0.001, 0.01, 0.1, 1.0)
    one = Histogram("one", "one by one", buckets=buckets, registry=registry)
    many = Histogram("many", "all at once", buckets=buckets, registry=registry)
    amounts = [0.0, 0.001, 0.0011, 0.05, 0.1, 0.5, 1.0, 2.0, 0.0005]
    for amount in amounts:
        one.observe(amount)
    observe_many(many, amounts)
    for suffix in ("_bucket", "_count", "_sum"):
        for le in ("0.001", "0.01", "0.1", "1.0", "+Inf"):
            labels = {"le": le} if suffix == "_bucket" else {}
            assert registry.get_sample_value("many" + suffix, labels) == registry.get_sample_value(
                "one" + suffix, labels
            )


def test_healthz_fails_when_the_worker_is_stuck(
    r: redis.Redis, ns: str, env: dict[str, str]
) -> None:
    load(r, ns, '[nodes.H]\nfn = "graph_plugins:hang"\nargs = ["X"]\n')
    port = free_port()
    env = {
        **env,
        "STREAMCALC_FUNCTION_TIMEOUT": "0",  # no cut-off: the plugin hangs the worker
        "STREAMCALC_STUCK_AFTER": "1",
        "STREAMCALC_PLUGINS": "graph_plugins",
        "PYTHONPATH": os.path.dirname(__file__),
    }
    with worker(env, port, "--block-ms", "100") as proc:
        wait_for(lambda: healthz(port)[0] == 200, timeout=20)
        r.xadd(Keys(ns).input, {"X": "1"})
        wait_for(lambda: healthz(port)[0] == 503, timeout=20)
        proc.kill()  # SIGTERM cannot finish a batch that never ends


def test_metric_names_are_every_family_a_scrape_shows() -> None:
    """METRIC_NAMES is read off the collectors: the same names as a scrape (_created aside)."""
    text = generate_latest(REGISTRY).decode()
    scraped = set(re.findall(r"^# HELP (streamcalc_\w+)", text, re.MULTILINE))
    assert {name for name in scraped if not name.endswith("_created")} == METRIC_NAMES
    assert {"streamcalc_entries_total", "streamcalc_batch_seconds"} <= METRIC_NAMES


def test_metrics_bind_the_chosen_interface_and_drop_silent_clients() -> None:
    import socket

    from streamcalc.metrics import serve

    port = free_port()
    server = serve(port, lambda: (True, "ok"), host="127.0.0.1")
    try:
        assert server.server_address == ("127.0.0.1", port)
        assert healthz(port)[0] == 200
        silent = socket.create_connection(("127.0.0.1", port))
        silent.settimeout(15)
        started = time.monotonic()
        assert silent.recv(1) == b""  # the server gave up on the half-open request
        assert time.monotonic() - started < 10
        silent.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_multiprocess_scrape_shows_every_family_before_any_child_wrote(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from streamcalc.metrics import multiprocess_registry

    text = generate_latest(multiprocess_registry(str(tmp_path))).decode()  # an empty directory
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert families >= METRIC_NAMES


def test_node_gauges_follow_the_nodes_removed_and_added_again() -> None:
    from streamcalc.metrics import observe_nodes

    def staleness() -> dict[str, float]:
        return {
            s.labels["node"]: s.value
            for family in REGISTRY.collect()
            if family.name == "streamcalc_node_staleness_seconds"
            for s in family.samples
            if s.labels["node"].startswith("probe_")
        }

    observe_nodes({"probe_a": 1_000, "probe_b": 2_000}, {}, 3_000)
    assert staleness() == {"probe_a": 2.0, "probe_b": 1.0}
    observe_nodes({"probe_a": 1_000}, {}, 4_000)  # probe_b left the graph
    assert staleness() == {"probe_a": 3.0}
    observe_nodes({"probe_a": 1_000, "probe_b": 4_000}, {}, 5_000)  # and came back
    assert staleness() == {"probe_a": 4.0, "probe_b": 1.0}
    observe_nodes({}, {}, 5_000)
    assert staleness() == {}
