"""Redis Cluster (section 8): error classification, and real local clusters under real workers.

The unit tests feed :func:`streamcalc.cluster.classify` every redis-py exception
class and the error texts of Redis 6.2, 7.x and Valkey as redis-py's own parser
turns them into exceptions. The cluster tests run ``streamcalc`` commands and
worker processes through a node that owns none of the namespace's keys, and
move a busy partition's slot, fail its master over, and stop and restart a
master (the cluster down meanwhile) while workers run; each compares the
output per key with the reference model: nothing lost, nothing emitted twice,
no worker exits.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cluster import MISSING, LocalCluster, cluster_client
from helpers import WorkerProcesses, healthz, owned_counts, wait_for
from keyed import CRASH_NODES, KeyedRun, crash_model, random_specs
from redis._parsers.base import BaseParser
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)
from test_crash import GRAPH

from streamcalc.cluster import SlotRouter, command_keys, is_cluster, slot_of
from streamcalc.embedded import free_port
from streamcalc.graph import parse_graph_text
from streamcalc.keys import Namespace, partition_of
from streamcalc.redis_errors import classify, describe
from streamcalc.store import connect, latest_values, store_graph

# -- classification (no server) -----------------------------------------------------------------

CLASSES = [
    (MovedError("5718 127.0.0.1:30002"), "moved"),
    (AskError("5718 127.0.0.1:30002"), "moved"),
    (TryAgainError("Multiple keys request during rehashing of slot"), "migrating"),
    (ClusterDownError("The cluster is down"), "down"),
    (MasterDownError("Link with MASTER is down and replica-serve-stale-data is 'no'."), "down"),
    (ReadOnlyError("You can't write against a read only replica."), "moved"),
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "busy"),
    (BusyLoadingError("Redis is loading the dataset in memory"), "connection"),
    (redis.ConnectionError("Error 111 connecting to 127.0.0.1:30001."), "connection"),
    (redis.TimeoutError("Timeout reading from socket"), "connection"),
    (NoScriptError("No matching script. Please use EVAL."), None),
    (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), None),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "trouble"), CLASSES, ids=lambda x: type(x).__name__)
def test_each_redis_py_exception_class_is_classified(exc: Exception, trouble: str | None) -> None:
    assert classify(exc) == trouble


#: Error replies as Redis 6.2, Redis 7.x and Valkey send them (the text after the ``-``).
BUSY = "busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT."
REPLIES = [
    ("MOVED 5718 127.0.0.1:30002", "moved"),
    ("ASK 5718 127.0.0.1:30002", "moved"),
    ("TRYAGAIN Multiple keys request during rehashing of slot", "migrating"),
    ("CLUSTERDOWN The cluster is down", "down"),
    ("CLUSTERDOWN Hash slot not served", "down"),
    ("CLUSTERDOWN The cluster is down and only accepts read commands", "down"),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "down"),
    ("LOADING Redis is loading the dataset in memory", "connection"),
    ("LOADING Valkey is loading the dataset in memory", "connection"),
    ("READONLY You can't write against a read only replica.", "moved"),
    ("OOM command not allowed when used memory > 'maxmemory'.", "busy"),
    (f"BUSY Redis is {BUSY}", "busy"),
    (f"BUSY Valkey is {BUSY}", "busy"),
    ("UNBLOCKED force unblock from blocking operation, "
     "instance state changed (master -> replica?)", "moved"),
    # Redis 6.2 wraps the error of a redis.call inside a script:
    ("ERR Error running script (call to f_8b5c): @user_script:12: @user_script: 12: "
     "-OOM command not allowed when used memory > 'maxmemory'.", "busy"),
    ("ERR Error running script (call to f_8b5c): @user_script:3: @user_script: 3: "
     "-TRYAGAIN Multiple keys request during rehashing of slot", "migrating"),
    ("ERR Error running script (call to f_8b5c): @user_script:3: @user_script: 3: "
     "-CLUSTERDOWN The cluster is down", "down"),
    ("UNBLOCKED the stream key no longer exists", None),
    ("NOGROUP No such key 'sc:{a}:in' or consumer group 'streamcalc' in XREADGROUP", None),
    ("ERR unknown command 'CLUSTER', with args beginning with: 'SHARDS'", None),
    ("CROSSSLOT Keys in request don't hash to the same slot", None),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "trouble"), REPLIES, ids=[r[:24] for r, _ in REPLIES])
def test_each_error_reply_is_classified_as_redis_py_raises_it(
    reply: str, trouble: str | None
) -> None:
    exc = BaseParser.parse_error(reply)  # the exception a client raises for this reply
    assert classify(exc) == trouble


def test_a_described_error_keeps_its_code_and_names_node_and_slot() -> None:
    moved = BaseParser.parse_error("MOVED 5718 127.0.0.1:30002")
    assert str(moved) == "5718 127.0.0.1:30002"  # what redis-py leaves of it
    assert describe(moved) == "MOVED 5718 127.0.0.1:30002 (node 127.0.0.1:30002 slot 5718)"
    tryagain = BaseParser.parse_error("TRYAGAIN Multiple keys request during rehashing of slot")
    tryagain.streamcalc_node, tryagain.streamcalc_slot = "127.0.0.1:30001", 12  # type: ignore[attr-defined]
    assert describe(tryagain) == (
        "TRYAGAIN Multiple keys request during rehashing of slot (node 127.0.0.1:30001 slot 12)"
    )


def test_the_keys_of_a_command() -> None:
    assert command_keys(("EVALSHA", "abc", 2, "k1", "k2", "arg")) == ["k1", "k2"]
    assert command_keys(("XREAD", "COUNT", 1, "BLOCK", 5, "STREAMS", "a", "b", "0", "0")) == [
        "a",
        "b",
    ]
    assert command_keys(("XINFO GROUPS", "s")) == ["s"]
    assert command_keys(("XINFO", "GROUPS", "s")) == ["s"]
    assert command_keys(("XGROUP CREATE", "s", "g", "0", "MKSTREAM")) == ["s"]
    assert command_keys(("CLIENT", "LIST", "TYPE", "normal")) == []
    assert command_keys(("SCRIPT LOAD", "return 1")) == []
    assert command_keys(("DEL", "a", "b")) == ["a", "b"]
    assert command_keys(("HGET", "h", "f")) == ["h"]
    assert slot_of("sc:{ns:3}:in") == slot_of("sc:{ns:3}:latest") != slot_of("sc:{ns:4}:in")


def test_a_single_redis_is_not_a_cluster(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        assert isinstance(client, SlotRouter) and not is_cluster(client)
        assert type(client.pipeline(transaction=False)) is redis.client.Pipeline
    finally:
        client.close()


# -- real clusters ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """Three masters, no replicas (a stopped master takes the cluster down), one spare master."""
    if MISSING:
        pytest.skip(MISSING)
    cluster = LocalCluster(masters=3, spare=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def replicated_cluster() -> Iterator[LocalCluster]:
    """Three masters with a replica each, for failovers."""
    if MISSING:
        pytest.skip(MISSING)
    cluster = LocalCluster(masters=3, replicas=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


P = 6
KEYS = ["", "timeless", *(f"dev.{i}" for i in range(10))]


def fresh_namespace() -> str:
    """A namespace nobody else uses."""
    return "c" + uuid.uuid4().hex[:10]


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``streamcalc ARGS``; exit 0 unless ``check`` is false."""
    done = subprocess.run(
        [sys.executable, "-m", "streamcalc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def cluster_env(env: dict[str, str], url: str, ns: str) -> dict[str, str]:
    """The environment of a ``streamcalc`` process on the cluster node ``url``."""
    return {**env, "STREAMCALC_REDIS_URL": url, "STREAMCALC_NS": ns}


class Feeder:
    """Writes random keyed entries in the background while something happens to the cluster."""

    def __init__(
        self, run: KeyedRun, rng: random.Random, clock: dict[str, int], active: bool = True
    ) -> None:
        self.run, self.rng, self.clock, self.active = run, rng, clock, active
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run.write(random_specs(self.rng, 10, KEYS, self.clock))
            except redis.RedisError as exc:
                self.errors.append(exc)
                return
            self._stop.wait(0.02)

    def __enter__(self) -> Feeder:
        if self.active:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.active:
            self.thread.join(timeout=60)


def _start_two(crew: WorkerProcesses, r: redis.Redis, ns: str, *args: str) -> None:
    crew.start("w0", *args)
    crew.start("w1")
    wait_for(lambda: owned_counts(r, ns, P) == {"w0": 3, "w1": 3}, timeout=60)


def _assert_alive(crew: WorkerProcesses, log_dir: Path) -> None:
    dead = {name: p.returncode for name, p in crew.procs.items() if p.poll() is not None}
    logs = "\n".join(f.read_text()[-2000:] for f in log_dir.glob("*.log"))
    assert not dead, f"workers exited: {dead}\n{logs}"


def _logs(log_dir: Path) -> str:
    return "\n".join(f.read_text() for f in sorted(log_dir.glob("*.log")))


WORKER_ARGS = ("--lease-ms", "2000", "--batch", "20", "--block-ms", "50", "--log-level", "warning")


@pytest.mark.timeout(180)
def test_every_command_through_a_node_that_owns_none_of_the_namespace(
    redis_cluster: LocalCluster, env: dict[str, str], tmp_path: Path
) -> None:
    far = redis_cluster.spares[0]  # a master without slots: it owns no key at all
    ns = fresh_namespace()
    env = cluster_env(env, redis_cluster.node(far).url, ns)
    graph = tmp_path / "plant.toml"
    graph.write_text('[nodes.A]\nfn = "add"\nargs = ["C", "D"]\n[nodes.B]\nexpr = "A * 2"\n')
    assert "6 partitions" in cli(env, "graph", "load", str(graph), "--partitions", "6").stdout
    keys = [f"dev.{i}" for i in range(12)]
    for i, key in enumerate(keys):
        cli(env, "send", "--key", key, f"C={i}", "D=1")
    cli(env, "send", "C=5", "D=5")  # the empty key, partition 0
    r = connect(redis_cluster.node(far).url)
    try:
        r.xadd(Namespace(ns).root.input, {"@key": "routed.1", "C": "2", "D": "3"})  # routed
        r.xadd(
            Namespace(ns).partition(partition_of("dev.3", P), P).input,
            {"C": "true", "@key": "dev.3"},
        )
        assert cli(env, "partition", "dev.3").stdout.split()[0] == str(partition_of("dev.3", P))
        with WorkerProcesses(env, *WORKER_ARGS, log_dir=tmp_path) as crew:
            crew.start("solo", "--metrics-port", str(port := free_port()))
            wait_for(lambda: "B" in cli(env, "values", "--key", "routed.1", "--json").stdout, 60)
            wait_for(lambda: healthz(port)[0] == 200, timeout=30)
            space = Namespace(ns)
            for key in keys:  # through the library: a command per key costs a second here
                wait_for(lambda k=key: "B" in latest_values(r, space.of_key(k, P), ["B"], k), 30)
            values = json.loads(cli(env, "values", "--key", "dev.7", "--json").stdout)
            assert values["B"]["value"] == 16  # (7 + 1) * 2
            status = json.loads(cli(env, "status", "--json").stdout)
            assert len(status["partitions"]) == P
            assert all(p["owner"]["consumer"] == "solo" for p in status["partitions"]), status
            assert cli(env, "history", "B", "--key", "dev.7").stdout.split()[-2:] == ["16", "dev.7"]
            assert "dev.3" in cli(env, "dead", "list").stdout
            lines = tmp_path / "entries.jsonl"
            lines.write_text('{"C": 1, "D": 2, "@key": "dev.8"}\n{"C": 3, "D": 4}\n')
            assert len(cli(env, "send", "--file", str(lines)).stdout.split()) >= 1
            assert "retried 1" in cli(env, "dead", "retry", "--all").stdout
            wait_for(lambda: "dev.3" in cli(env, "dead", "list").stdout, 30)  # dead again
            assert cli(env, "trim", "--max-len", "1").returncode == 0
            assert cli(env, "dead", "purge", "--all").returncode == 0
            assert "dev.3" not in cli(env, "dead", "list").stdout
            _assert_alive(crew, tmp_path)
            assert crew.stop_all() == {"solo": 0}
    finally:
        r.close()
    assert "Traceback" not in _logs(tmp_path)


@pytest.mark.timeout(240)
def test_keyed_differential_on_six_partitions_two_workers_through_a_far_node(
    redis_cluster: LocalCluster, env: dict[str, str], tmp_path: Path
) -> None:
    far = redis_cluster.spares[0]
    ns = fresh_namespace()
    url = redis_cluster.node(far).url
    r = connect(url)
    try:
        store_graph(r, ns, parse_graph_text(GRAPH, "<test>"), partitions=P)
        run = KeyedRun(r, ns, P, crash_model)
        rng = random.Random("cluster-differential")
        clock = {key: 1_000_000 for key in KEYS if key != "timeless"}
        routed = {"dev.1", "dev.2"}
        run.write(random_specs(rng, 200, KEYS, clock, routed))
        with WorkerProcesses(cluster_env(env, url, ns), *WORKER_ARGS, log_dir=tmp_path) as crew:
            _start_two(crew, r, ns)
            for _ in range(20):
                run.write(random_specs(rng, 20, KEYS, clock, routed))
                time.sleep(0.05)
            run.wait_idle(timeout=90)
            _assert_alive(crew, tmp_path)
            assert crew.stop_all() == {"w0": 0, "w1": 0}
        run.check(CRASH_NODES)
        assert sum(len(m.out) for m in run.models.values()) > 300
    finally:
        r.close()


def _busy_partition(cluster: LocalCluster, ns: str) -> tuple[int, int]:
    """The partition of ``dev.1`` (fed all along) and the port of its master."""
    p = partition_of("dev.1", P)
    return p, cluster.owner(Namespace(ns).partition(p, P).input)


def _scenario(
    cluster: LocalCluster,
    env: dict[str, str],
    tmp_path: Path,
    fault: Any,
    *,
    feed: bool = True,
    worker_args: tuple[str, ...] = (),
) -> KeyedRun:
    """Two workers on P partitions; ``fault(ns, port_of_busy_master)`` while they work.

    With ``feed``, entries keep coming during the fault; else the workers are
    busy with a backlog written just before (a producer cannot write to a
    cluster that is down).
    """
    ns = fresh_namespace()
    url = cluster.url
    r = connect(url)
    try:
        store_graph(r, ns, parse_graph_text(GRAPH, "<test>"), partitions=P)
        run = KeyedRun(r, ns, P, crash_model)
        rng = random.Random(f"cluster-{fault.__name__}")
        clock = {key: 1_000_000 for key in KEYS if key != "timeless"}
        run.write(random_specs(rng, 100, KEYS, clock))
        with WorkerProcesses(cluster_env(env, url, ns), *WORKER_ARGS, log_dir=tmp_path) as crew:
            _start_two(crew, r, ns, *worker_args)
            if not feed:
                run.write(random_specs(rng, 3000, KEYS, clock))
            with Feeder(run, rng, clock, active=feed) as feeder:
                time.sleep(0.5)
                fault(ns, _busy_partition(cluster, ns)[1])
                time.sleep(1.5)
            assert feeder.errors == [], feeder.errors[:3]
            run.write(random_specs(rng, 100, KEYS, clock))
            run.wait_idle(timeout=120)
            _assert_alive(crew, tmp_path)
            assert crew.stop_all() == {"w0": 0, "w1": 0}
        run.check(CRASH_NODES)
        assert "Traceback" not in _logs(tmp_path)
        return run
    finally:
        r.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_busy_partitions_slot_migrates_while_workers_run(
    redis_cluster: LocalCluster, env: dict[str, str], tmp_path: Path
) -> None:
    moved: list[tuple[int, int]] = []

    def migrate(ns: str, source: int) -> None:
        p, _ = _busy_partition(redis_cluster, ns)
        slot = slot_of(Namespace(ns).partition(p, P).input)
        target = next(port for port in redis_cluster.master_ports() if port != source)
        redis_cluster.migrate_slot(slot, target, pause_s=0.4)  # half-moved for seconds
        moved.append((slot, target))

    _scenario(redis_cluster, env, tmp_path, migrate)
    slot, target = moved[0]
    assert redis_cluster.slot_owners()[slot] == target


def _promote(cluster: LocalCluster, replica: int, ns: str) -> None:
    """CLUSTER FAILOVER on ``replica`` until it serves the busy partition (a manual failover
    gives up when its master does not pause in time: a loaded machine)."""
    for _ in range(5):
        client = cluster.node(replica).client()
        try:
            client.execute_command("CLUSTER FAILOVER")
        finally:
            client.close()
        with contextlib.suppress(AssertionError):
            wait_for(lambda: _busy_partition(cluster, ns)[1] == replica, timeout=15)
            return
    raise AssertionError(f"{replica} was never promoted")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failover_of_a_busy_master_while_workers_run(
    replicated_cluster: LocalCluster, env: dict[str, str], tmp_path: Path
) -> None:
    promoted: list[int] = []

    def failover(ns: str, master: int) -> None:
        replica = replicated_cluster.replica_of(master)
        _promote(replicated_cluster, replica, ns)
        promoted.append(replica)
        replicated_cluster.wait_ok(timeout=60)
        time.sleep(0.5)
        _promote(replicated_cluster, master, ns)  # and back, while entries keep coming
        promoted.append(master)

    _scenario(replicated_cluster, env, tmp_path, failover)
    assert len(promoted) == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_master_stopped_and_restarted_takes_the_cluster_down_and_back(
    redis_cluster: LocalCluster, env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    seen: list[int] = []

    def stop_and_restart(ns: str, master: int) -> None:
        wait_for(lambda: healthz(port)[0] == 200, timeout=30)
        others = [p for p in redis_cluster.master_ports() if p != master]
        redis_cluster.stop_node(master)
        wait_for(lambda: redis_cluster.state(others[0]) == "fail", timeout=60)
        wait_for(lambda: healthz(port)[0] == 503, timeout=60)  # unhealthy while down
        assert healthz(port)[1].startswith(("redis cluster down", "redis unreachable"))
        seen.append(503)
        time.sleep(1.0)
        redis_cluster.restart_node(master)
        redis_cluster.wait_ok(timeout=60)
        wait_for(lambda: healthz(port)[0] == 200, timeout=60)
        seen.append(200)

    _scenario(
        redis_cluster,
        env,
        tmp_path,
        stop_and_restart,
        feed=False,
        worker_args=("--metrics-port", str(port)),
    )
    assert seen == [503, 200]
    assert "redis cluster down" in _logs(tmp_path) or "redis unreachable" in _logs(tmp_path)


def _metric(port: int, family: str) -> float:
    """The sum of every sample of ``family`` on a worker's ``/metrics`` (-1: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(family) and not line.startswith("#")
    )


@pytest.mark.timeout(180)
def test_producers_processes_metrics_and_the_demo_on_a_cluster(
    redis_cluster: LocalCluster, env: dict[str, str], tmp_path: Path
) -> None:
    from streamcalc.consumer import Consumer
    from streamcalc.producer import Producer

    url = redis_cluster.node(redis_cluster.spares[0]).url
    ns = fresh_namespace()
    r = connect(url)
    try:
        store_graph(r, ns, parse_graph_text(GRAPH, "<test>"), partitions=P)
        run = KeyedRun(r, ns, P, crash_model)
        rng = random.Random("cluster-producers")
        clock = {key: 1_000_000 for key in KEYS if key != "timeless"}
        run.write(random_specs(rng, 100, KEYS, clock))
        ours = Producer(r, ns, key="dev.4")
        with cluster_client(redis_cluster.url) as theirs_client:  # redis-py's own works too
            theirs = Producer(theirs_client, ns, key="dev.5")
            sent = ours.send_many([{"X": i, "Y": 1} for i in range(50)])
            sent += theirs.send_many([{"X": i, "Y": 2} for i in range(50)])
            assert len(sent) == 100
            port = free_port()
            args = ("--processes", "2", "--metrics-port", str(port), *WORKER_ARGS)
            with WorkerProcesses(cluster_env(env, url, ns), *args, log_dir=tmp_path) as crew:
                crew.start("sup")
                wait_for(lambda: healthz(port)[0] == 200, timeout=60)
                wait_for(lambda: _metric(port, "streamcalc_partitions_owned") == P, timeout=60)
                run.wait_idle(timeout=90)
                wait_for(lambda: _metric(port, "streamcalc_entries_total") >= 200, timeout=30)
                assert ours.lag() == 0 and theirs.lag() == 0
                _assert_alive(crew, tmp_path)
                assert crew.stop_all() == {"sup": 0}
            x4 = latest_values(r, Namespace(ns).of_key("dev.4", P), ["X"], "dev.4")
            x5 = latest_values(r, Namespace(ns).of_key("dev.5", P), ["X"], "dev.5")
            assert x4["X"][1] == 49 and x5["X"][1] == 49
        consumer = Consumer(r, ns)  # reads every partition on its own master
        assert consumer.latest(["X"], key="dev.5")["X"].value == 49
        fired = consumer.subscribe(keys=["dev.4", "dev.5"], after="0", block_ms=100)
        seen = [next(fired) for _ in range(20)]  # X and Y of each entry: L1 = X + Y fires
        assert {v.key for v in seen} <= {"dev.4", "dev.5"} and "L1" in {v.node for v in seen}
    finally:
        r.close()
    demo = cli({**env, "STREAMCALC_DEMO_REDIS_URL": url}, "demo")
    assert "B = 9" in demo.stdout and "B = 20" in demo.stdout


def test_cluster_forced_on_a_single_redis_is_a_one_line_error(
    redis_url: str, env: dict[str, str]
) -> None:
    done = cli({**env, "STREAMCALC_REDIS_URL": redis_url}, "--cluster", "status", check=False)
    assert done.returncode == 1
    assert done.stderr.strip().endswith("is not a cluster node (--cluster)"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    forced = cli({**env, "STREAMCALC_REDIS_URL": redis_url, "STREAMCALC_CLUSTER": "1"}, "status",
                 check=False)  # fmt: skip
    assert forced.returncode == 1 and "not a cluster node" in forced.stderr


@pytest.mark.timeout(60)
def test_a_blocking_read_of_streams_in_several_slots_wakes_for_any_of_them(
    redis_cluster: LocalCluster,
) -> None:
    ns = fresh_namespace()
    streams = [keys.input for keys in Namespace(ns).partitions(P)]
    assert len({redis_cluster.owner(s) for s in streams}) > 1  # on several masters
    r = connect(redis_cluster.url)
    try:
        assert r.xread(dict.fromkeys(streams, "0"), block=100) is None  # type: ignore[arg-type]
        later = threading.Timer(0.5, lambda: r.xadd(streams[-1], {"C": "1"}))
        later.start()
        t0 = time.monotonic()
        reply = r.xread(dict.fromkeys(streams, "$"), block=10_000)  # type: ignore[arg-type]
        waited = time.monotonic() - t0
        later.join()
        assert [name.decode() for name, _ in reply] == [streams[-1]]
        assert 0.4 < waited < 3.0, waited  # woken by the entry, not by the timeout
        r.xadd(streams[0], {"C": "2"})
        found = r.xread(dict.fromkeys(streams, "0"), count=10)  # type: ignore[arg-type]
        assert sorted(name.decode() for name, _ in found) == sorted([streams[0], streams[-1]])
        r.delete(*streams)
    finally:
        r.close()


def test_a_user_who_may_not_run_info_is_on_a_single_redis(
    redis_url: str, r: redis.Redis, env: dict[str, str]
) -> None:
    user = "u" + uuid.uuid4().hex[:8]
    r.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-info")
    try:
        url = redis_url.replace("redis://", f"redis://{user}:pw@")
        client = connect(url)
        try:
            assert not is_cluster(client)  # INFO refused (NOPERM): asked, not assumed
            assert client.ping()
        finally:
            client.close()
        assert cli({**env, "STREAMCALC_REDIS_URL": url}, "status", "--json").returncode == 0
    finally:
        r.execute_command("ACL", "DELUSER", user)
