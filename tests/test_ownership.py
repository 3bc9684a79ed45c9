"""Ownership of partitions (S12): fencing, balance after join and leave, standby, --processes.

Real worker processes on four (or two) partitions; leases and memberships are
read from Redis (``status --json`` does not list partition owners yet). While
partitions change hands, keyed entries keep coming, and at the end every key's
output equals its model's (tests/keyed.py): ownership is only right if no
value is lost or emitted twice on the way.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from helpers import (
    WorkerProcesses,
    lease_holders,
    owned_counts,
    owners,
    process_state,
    wait_for,
)
from keyed import CRASH_NODES, KeyedRun, Spec, crash_model, partitioned, random_specs
from model import Model, ModelNode
from pause_plugins import PAUSE_AT
from test_crash import GRAPH

from streamcalc.keys import Keys, Namespace, partition_of
from streamcalc.ownership import deal
from streamcalc.scripts import Scripts

KEYS = ["", "dev.1", "dev.2", "site:2/a", "x_4", "r.1", "r.2"]
ROUTED_KEYS = ["r.1", "r.2"]


def dealt(partitions: int, *members: str) -> list[str]:
    """Each partition's owner when ``members`` are the live workers (the assignment's own)."""
    return list(deal(tuple(sorted(members)), partitions))


def options(lease_ms: int, *more: str) -> tuple[str, ...]:
    """Worker options: short blocks, the given lease, warnings logged."""
    return ("--lease-ms", str(lease_ms), "--block-ms", "20", "--log-level", "warning", *more)


def crew_of(
    env: dict[str, str], ns: str, lease_ms: int, log_dir: Path, *more: str
) -> WorkerProcesses:
    """Worker processes of namespace ``ns`` with :func:`options`, logging into ``log_dir``."""
    return WorkerProcesses({**env, "STREAMCALC_NS": ns}, *options(lease_ms, *more), log_dir=log_dir)


class Load:
    """Keyed entries (some routed) written in small doses while the test waits for something."""

    def __init__(self, r: redis.Redis, ns: str, partitions: int, seed: str) -> None:
        self.rng = random.Random(seed)
        self.run = KeyedRun(r, ns, partitions, crash_model)
        self.clock = {key: 1_000_000 for key in KEYS}

    def __call__(self, n: int = 5) -> None:
        self.run.write(random_specs(self.rng, n, KEYS, self.clock, ROUTED_KEYS))

    def until(self, predicate: Callable[[], bool], timeout: float) -> float:
        """Write entries every 20 ms until ``predicate`` holds; returns the seconds it took."""
        started = time.monotonic()
        while not predicate():
            elapsed = time.monotonic() - started
            assert elapsed < timeout, f"condition not met in {timeout}s"
            self()
            time.sleep(0.02)
        return time.monotonic() - started

    def during(self, seconds: float, invariant: Callable[[], object] = lambda: None) -> None:
        """Write entries every 20 ms for ``seconds``, calling ``invariant`` (it asserts)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self()
            invariant()
            time.sleep(0.02)

    def steady(self, seconds: float, r: redis.Redis, ns: str, partitions: int) -> None:
        """Write entries for ``seconds`` and assert that no lease changed hands meanwhile."""
        before = lease_holders(r, ns, partitions)

        def unchanged() -> None:
            assert lease_holders(r, ns, partitions) == before, "a lease moved without cause"

        self.during(seconds, unchanged)

    def finish(self, crew: WorkerProcesses) -> None:
        """Drain, stop every worker cleanly, check every key against its model."""
        self.run.wait_idle(timeout=60)
        codes = crew.stop_all()
        assert set(codes.values()) <= {0}, f"a worker did not stop cleanly: {codes}"
        self.run.check(CRASH_NODES)


@pytest.fixture
def four(r: redis.Redis) -> str:
    """A fresh namespace of four partitions with test_crash's graph."""
    return partitioned(r, GRAPH, 4)


@pytest.mark.timeout(120)
def test_balance_after_join_clean_stop_and_kill(
    r: redis.Redis, env: dict[str, str], four: str, tmp_path: Path
) -> None:
    ns, lease_ms = four, 3000
    tick = lease_ms / 5000
    load = Load(r, ns, 4, "balance")
    with crew_of(env, ns, lease_ms, tmp_path) as crew:
        crew.start("w0")
        load.until(lambda: owned_counts(r, ns, 4) == {"w0": 4}, timeout=30)
        crew.start("w1")
        load.until(lambda: owned_counts(r, ns, 4) == {"w0": 2, "w1": 2}, timeout=30)
        crew.start("w2")
        load.until(lambda: owners(r, ns, 4) == dealt(4, "w0", "w1", "w2"), timeout=30)
        load.steady(1.5, r, ns, 4)

        # a clean stop hands over at once: the others take its partition within about a tick
        stopping = time.monotonic()
        assert crew.stop("w1") == 0
        took = load.until(lambda: owners(r, ns, 4) == dealt(4, "w0", "w2"), timeout=30)
        handover = time.monotonic() - stopping
        assert handover < 0.6 * lease_ms / 1000, f"clean handover took {handover:.2f}s"
        load.steady(1.0, r, ns, 4)

        # a SIGKILLed owner's partitions are taken once its lease ran out, not before
        crew.kill("w2")
        took = load.until(lambda: owners(r, ns, 4) == ["w0"] * 4, timeout=30)
        low, high = lease_ms / 1000 - tick - 0.2, lease_ms / 1000 + 2.5
        assert low <= took <= high, f"took over after {took:.2f}s, lease {lease_ms} ms"
        load()
        load.finish(crew)


@pytest.mark.timeout(120)
def test_workers_beyond_the_partitions_stand_by_and_take_over(
    r: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    ns, lease_ms = partitioned(r, GRAPH, 2), 1000
    load = Load(r, ns, 2, "standby")
    with crew_of(env, ns, lease_ms, tmp_path) as crew:
        for name in ("w0", "w1", "w2"):
            crew.start(name)
        for name in ("w0", "w1", "w2"):
            crew.wait_running(r, ns, name, lease_ms)
        (standby,) = {"w0", "w1", "w2"} - set(dealt(2, "w0", "w1", "w2"))
        victim, survivor = sorted({"w0", "w1", "w2"} - {standby})
        load.until(lambda: owners(r, ns, 2) == dealt(2, "w0", "w1", "w2"), timeout=30)
        load.steady(1.5, r, ns, 2)  # the standby owns nothing and takes nothing
        crew.kill(victim)
        assert standby in dealt(2, survivor, standby)
        took = load.until(lambda: owners(r, ns, 2) == dealt(2, survivor, standby), timeout=30)
        assert took <= lease_ms / 1000 + 2.5, f"the standby took over after {took:.2f}s"
        load(50)
        load.finish(crew)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [int(p) for p in file.read().split()]


@pytest.mark.timeout(120)
def test_processes_children_take_part_like_separate_workers(
    r: redis.Redis, env: dict[str, str], four: str, tmp_path: Path
) -> None:
    ns, lease_ms = four, 1000
    load = Load(r, ns, 4, "processes")
    with crew_of(env, ns, lease_ms, tmp_path) as crew:
        crew.start("pool", "--processes", "2")
        load.until(lambda: owners(r, ns, 4) == dealt(4, "pool-0", "pool-1"), timeout=30)
        crew.start("solo")
        load.until(lambda: owners(r, ns, 4) == dealt(4, "pool-0", "pool-1", "solo"), timeout=30)
        load.steady(1.0, r, ns, 4)
        # the supervisor stopped: both children hand over, solo owns everything at once
        assert crew.stop("pool") == 0
        load.until(lambda: owners(r, ns, 4) == ["solo"] * 4, timeout=0.6 * lease_ms / 1000)
        load(50)
        load.finish(crew)


@pytest.mark.timeout(120)
def test_a_killed_child_is_restarted_and_takes_its_lease_back(
    r: redis.Redis, env: dict[str, str], four: str, tmp_path: Path
) -> None:
    ns, lease_ms = four, 30_000  # the restarted child must not wait for its old lease
    load = Load(r, ns, 4, "restarted child")
    with crew_of(env, ns, lease_ms, tmp_path) as crew:
        pool = crew.start("pool", "--processes", "2")
        load.until(lambda: owners(r, ns, 4) == dealt(4, "pool-0", "pool-1"), timeout=30)
        children = _children(pool.pid)
        try:
            tokens = lease_holders(r, ns, 4)
            victim = next(pid for pid in children if _consumer_of(pid) == "pool-1")
            os.kill(victim, signal.SIGKILL)
            load.during(1.5)
            assert pool.poll() is None, "the supervisor died with its child"
            load.until(lambda: victim not in _children(pool.pid), timeout=30)
            held = dealt(4, "pool-0", "pool-1").index("pool-1")  # a partition of the victim's
            load.until(lambda: lease_holders(r, ns, 4)[held] != tokens[held], timeout=15)
            assert owners(r, ns, 4) == dealt(4, "pool-0", "pool-1")
            load(50)
            load.finish(crew)
        finally:
            for pid in children:  # orphans, should the supervisor have died
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _consumer_of(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        args = file.read().split(b"\0")
    return args[args.index(b"--consumer") + 1].decode()


# -- fencing -----------------------------------------------------------------------------------

PAUSE_GRAPH = """
[defaults]
ttl = 0
[nodes.S]
fn = "pause_plugins:pause_once"
args = ["X"]
[nodes.T]
expr = "S + Y"
mode = "latest"
"""


def pause_model() -> Model:
    """PAUSE_GRAPH for the model: S passes X on, T adds Y."""
    return Model(
        {
            "S": ModelNode(["X"], 0, "consume", lambda v: v[0]),
            "T": ModelNode(["S", "Y"], 0, "latest", lambda v: v[0] + v[1]),
        }
    )


def _outputs_snapshot(r: redis.Redis, ns: str, partitions: int) -> list[object]:
    return [r.xrange(keys.output) for keys in Namespace(ns).partitions(partitions)]


@pytest.mark.timeout(120)
def test_a_paused_owner_is_fenced_when_it_wakes(
    r: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGSTOP an owner inside a wave (batch read, nothing committed) past its lease: another
    worker takes over and finishes the batch; after SIGCONT the paused one commits nothing."""
    ns, lease_ms = partitioned(r, PAUSE_GRAPH, 4), 500
    mark = tmp_path / "paused"
    env = {
        **env,
        "STREAMCALC_NS": ns,
        "STREAMCALC_TEST_PAUSE": str(mark),
        "STREAMCALC_FUNCTION_TIMEOUT": "0",  # no alarm ticking while the process is stopped
        "STREAMCALC_PLUGINS": "pause_plugins",
        "PYTHONPATH": str(Path(__file__).parent),
    }
    rng = random.Random("pause")
    run = KeyedRun(r, ns, 4, pause_model)
    keys = ["", "dev.1", "dev.2", "site:2/a", "x_4"]
    victim_key = "site:2/a"

    def entries(n: int, *, pause: bool = False) -> list[Spec]:
        specs = [
            Spec(rng.choice(keys), {"X": rng.randint(0, 9), "Y": rng.randint(0, 9)}, None)
            for _ in range(n)
        ]
        if pause:
            specs.insert(n // 2, Spec(victim_key, {"X": PAUSE_AT, "Y": 1}, None))
        return specs

    with WorkerProcesses(env, *options(lease_ms, "--batch", "20"), log_dir=tmp_path) as crew:
        paused = crew.start("a")
        wait_for(lambda: owners(r, ns, 4) == ["a"] * 4, timeout=30)
        run.write(entries(100))
        run.wait_idle(timeout=30)
        run.write(entries(60, pause=True))
        wait_for(lambda: mark.exists() and process_state(paused.pid) == "T", timeout=30)
        home = partition_of(victim_key, 4)
        in_hand = r.xpending(Keys(ns, home).input, "streamcalc")["pending"]
        assert in_hand > 0, "the paused worker should hold read, uncommitted entries"

        crew.start("b")  # takes every partition once a's leases ran out
        wait_for(lambda: owners(r, ns, 4) == ["b"] * 4, timeout=30)
        run.write(entries(60))
        run.wait_idle(timeout=30)
        before = _outputs_snapshot(r, ns, 4)

        os.kill(paused.pid, signal.SIGCONT)  # a finishes its wave and tries to commit
        wait_for(lambda: set(owners(r, ns, 4)) == {"a", "b"}, timeout=30)  # a is back, fenced
        time.sleep(0.5)
        assert _outputs_snapshot(r, ns, 4) == before, "the fenced worker wrote to a partition"
        assert paused.poll() is None, "the fenced worker died"
        run.write(entries(60))
        run.wait_idle(timeout=30)
        codes = crew.stop_all()
    assert codes == {"a": 0, "b": 0}
    run.check(["X", "Y", "S", "T"])
    log = next(tmp_path.glob("*-a.log")).read_text()
    assert "partition lease lost" in log, "a never noticed it had lost its lease"


@pytest.mark.timeout(120)
def test_a_lease_taken_away_stops_the_owner_at_once(
    r: redis.Redis, env: dict[str, str], four: str, tmp_path: Path
) -> None:
    """Someone else holds partition 2's lease for a while: its owner reads and commits nothing
    there meanwhile (other partitions go on), then takes it back and catches up."""
    ns, lease_ms = four, 500
    load = Load(r, ns, 4, "stolen")
    keys = Keys(ns, 2)
    with crew_of(env, ns, lease_ms, tmp_path) as crew:
        crew.start("w0")
        load.until(lambda: owners(r, ns, 4) == ["w0"] * 4, timeout=30)
        load(100)
        load.run.wait_idle(timeout=30)
        r.set(keys.lease("streamcalc"), "intruder 999999 x", px=2500)
        output = r.xlen(keys.output)
        delivered = _last_delivered(r, keys)
        others = [r.xlen(Keys(ns, p).output) for p in (0, 1, 3)]
        load.during(1.5)
        assert r.xlen(keys.output) == output, "w0 committed to a partition it does not own"
        assert _last_delivered(r, keys) == delivered, "w0 read from a partition it does not own"
        assert owners(r, ns, 4)[2] == "intruder"
        assert [r.xlen(Keys(ns, p).output) for p in (0, 1, 3)] != others, "the rest stopped"
        load.until(lambda: owners(r, ns, 4) == ["w0"] * 4, timeout=10)  # after the intruder
        load(50)
        load.finish(crew)


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)


def _last_delivered(r: redis.Redis, keys: Keys) -> bytes:
    (group,) = r.xinfo_groups(keys.input)
    return bytes(group["last-delivered-id"])


# -- a busy router -----------------------------------------------------------------------------


@pytest.fixture
def flood(redis_url: str) -> Iterator[Callable[[str], None]]:
    """Start XADDing to a namespace's routing stream as fast as one client can, until teardown."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(ns: str) -> None:
        def produce() -> None:
            client = redis.Redis.from_url(redis_url, protocol=2)
            i = 0
            while not stop.is_set():
                pipe = client.pipeline(transaction=False)
                for _ in range(200):
                    i += 1
                    pipe.xadd(Keys(ns).input, {"X": "1", "@key": f"k{i % 50}", "@ts": "1000"})
                pipe.execute()
            client.close()

        threads.append(threading.Thread(target=produce, daemon=True))
        threads[-1].start()

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


@pytest.mark.timeout(60)
def test_a_busy_router_keeps_its_leases_and_its_partitions_moving(
    r: redis.Redis, env: dict[str, str], four: str, tmp_path: Path, flood: Callable[[str], None]
) -> None:
    """Producers outrun the router: the worker that routes still renews its leases and
    still processes the partitions it owns (routing is one of its tenures, not all of them)."""
    ns, lease_ms = four, 500
    with crew_of(env, ns, lease_ms, tmp_path, "--batch", "10") as crew:
        crew.start("w0")
        wait_for(lambda: owners(r, ns, 4) == ["w0"] * 4, timeout=30)
        tokens = lease_holders(r, ns, 4)
        flood(ns)  # more than one worker moving 10 entries a batch can route
        time.sleep(0.5)
        direct = r.xadd(Keys(ns, 1).input, {"X": "1", "Y": "2", "@key": "dev.1"})
        deadline = time.monotonic() + 3 * lease_ms / 1000
        while time.monotonic() < deadline:
            assert lease_holders(r, ns, 4) == tokens, "w0 lost its leases without any cause"
            time.sleep(0.02)
        delivered = _last_delivered(r, Keys(ns, 1))  # direct, or an entry routed in after it
        assert _id(delivered) >= _id(direct), "partition 1 starved while routing"
        waiting = r.xpending_range(Keys(ns, 1).input, "streamcalc", min=direct, max=direct, count=1)
        assert waiting == [], "the direct entry was read but not finished"
        crew.kill("w0")


@pytest.mark.timeout(120)
def test_a_paused_owner_restarted_under_its_name_loses_nothing_when_it_wakes(
    r: redis.Redis, env: dict[str, str], four: str, tmp_path: Path
) -> None:
    """SIGSTOP an owner under load; an orchestrator starts a replacement under the same name;
    then the paused one wakes. Both live: neither may lose values or die of it."""
    ns, lease_ms = four, 500
    load = Load(r, ns, 4, "same name")
    with crew_of(env, ns, lease_ms, tmp_path, "--batch", "10") as crew:
        old = crew.start("a")
        load.until(lambda: owners(r, ns, 4) == ["a"] * 4, timeout=30)
        load(200)
        os.kill(old.pid, signal.SIGSTOP)
        crew.procs["a (paused)"] = crew.procs.pop("a")
        crew.start("a")
        crew.wait_running(r, ns, "a", lease_ms)
        load.during(0.5)
        os.kill(old.pid, signal.SIGCONT)
        load.during(3.0)
        assert old.poll() is None, f"the woken worker exited with {old.poll()}"
        load.steady(1.5, r, ns, 4)  # no lease changes hands between the two
        load.finish(crew)


def test_a_consumer_cannot_take_the_lease_of_one_whose_name_it_prefixes(r: redis.Redis) -> None:
    scripts = Scripts(r, Keys("t" + uuid.uuid4().hex[:12], 1))
    held = scripts.take_lease("streamcalc", "w b", 60_000).token
    assert held is not None
    taken = scripts.take_lease("streamcalc", "w", 60_000).token
    assert taken is None, "'w' took the lease of 'w b'"
    assert scripts.renew_lease("streamcalc", held, 60_000)
