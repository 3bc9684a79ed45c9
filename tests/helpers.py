"""Helpers for tests: load graphs, run a worker in-process until the stream is drained."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import redis

from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys, Namespace
from streamcalc.messages import decode_output
from streamcalc.scripts import LeaseToken
from streamcalc.settings import Settings
from streamcalc.store import read_range, store_graph
from streamcalc.worker import Worker

#: The seed graph with names against the topological order: Z is computed first (rank 0),
#: A from it (rank 1), so evaluating by name instead of rank would glitch.
SEED_UNSORTED = """
[defaults]
ttl = "60s"
[nodes.Z]
fn = "add"
args = ["C", "D", "E"]
[nodes.A]
expr = "Z * F"
"""


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
        self.worker.client.close()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it is true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def lease_holders(r: redis.Redis, ns: str, partitions: int, group: str = "streamcalc") -> list[str]:
    """Each partition's lease token ("" when free), read from Redis."""
    leases = [k.lease(group) for k in Namespace(ns).partitions(partitions)]
    return [(raw or b"").decode() for raw in r.mget(leases)]


def owners(r: redis.Redis, ns: str, partitions: int, group: str = "streamcalc") -> list[str]:
    """The consumer holding each partition's lease ("" when free)."""
    tokens = [LeaseToken.parse(t) for t in lease_holders(r, ns, partitions, group)]
    return [token.consumer if token else "" for token in tokens]


def owned_counts(r: redis.Redis, ns: str, partitions: int) -> dict[str, int]:
    """consumer -> how many partitions it holds ("" counts the free ones)."""
    counts: dict[str, int] = {}
    for owner in owners(r, ns, partitions):
        counts[owner] = counts.get(owner, 0) + 1
    return counts


def process_state(pid: int) -> str:
    """The one-letter state of a process from /proc (``T`` stopped, ``Z`` zombie, ...)."""
    with open(f"/proc/{pid}/stat") as file:
        return file.read().rpartition(")")[2].split()[0]


class WorkerProcesses:
    """Real ``streamcalc worker`` processes by consumer name (killed, if still running, on exit)."""

    def __init__(self, env: dict[str, str], *args: str, log_dir: Any = None) -> None:
        self.env = env
        self.args = args
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.started_ms: dict[str, float] = {}

    def start(self, consumer: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start a worker named ``consumer`` (extra options ``args``, extra environment ``env``)."""
        command = [sys.executable, "-m", "streamcalc", "worker", "--consumer", consumer]
        command += [*self.args, *args]
        self.started += 1
        log: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            log = open(f"{self.log_dir}/{self.started:02d}-{consumer}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            command, env={**self.env, **env}, stdout=subprocess.DEVNULL, stderr=log
        )
        if log is not subprocess.DEVNULL:
            log.close()
        self.procs[consumer] = proc
        self.started_ms[consumer] = time.time() * 1000
        return proc

    def wait_running(
        self, r: redis.Redis, ns: str, consumer: str, lease_ms: int, timeout: float = 30
    ) -> None:
        """Wait until this process of ``consumer`` has renewed its membership of the group.

        From then on its signal handlers are set (a worker SIGTERMed before just
        dies), and it takes part in the division of partitions. A membership left
        by an earlier process of the same name expires sooner than this one's.
        """
        key, since = Namespace(ns).members("streamcalc"), self.started_ms[consumer]
        wait_for(lambda: (r.zscore(key, consumer) or 0) >= since + lease_ms, timeout)

    def kill(self, consumer: str) -> None:
        """SIGKILL the worker and reap it."""
        proc = self.procs.pop(consumer)
        proc.kill()
        proc.wait(timeout=30)

    def stop(self, consumer: str, timeout: float = 30) -> int:
        """SIGTERM the worker (a clean stop) and return its exit code."""
        proc = self.procs.pop(consumer)
        proc.send_signal(signal.SIGTERM)
        return int(proc.wait(timeout=timeout))

    def stop_all(self, timeout: float = 30) -> dict[str, int]:
        """Stop every worker cleanly; consumer -> exit code."""
        return {name: self.stop(name, timeout) for name in list(self.procs)}

    def __enter__(self) -> WorkerProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        self.procs.clear()


def members(r: redis.Redis, ns: str, group: str = "streamcalc") -> set[str]:
    """The live members of the group's workers, read from Redis."""
    return {m.decode() for m in r.zrange(Namespace(ns).members(group), 0, -1)}


def healthz(port: int) -> tuple[int, str]:
    """(status, body) of a worker's ``/healthz`` on this host; (0, "") while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError:
        return 0, ""
