"""Measure the seed's Celery design (``benchmarks.baseline.tasks``) on the *seed* workload.

A real Celery worker (prefork pool) is started as a subprocess against the given Redis, which
is both the broker and the seed's store. Phases:

1. *idle*: single events one at a time (after a warm-up), enqueue -> B logged.
2. *closed loop*: ``events`` tasks are pre-filled into a staging list which is then renamed
   onto the worker's queue in one step; events/s = events / (first enqueue -> last derived
   value logged). Lost = 2 * events - derived values produced; "wrong" counts derived values
   logged for an event that differ from that event's expected A or B.
3. *open loop*: events enqueued at a fixed rate (default: half the closed-loop maximum) for a
   few seconds; latency p50/p99 from enqueue to B's log entry, over events that produced B.

Run alone: ``python -m benchmarks.baseline.run --events 2000``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from benchmarks.baseline import tasks
from benchmarks.common import (
    SEED_DERIVED,
    Result,
    SeedEntry,
    descendant_pids,
    exit_on_sigterm,
    latency_summary,
    redis_memory_mb,
    rss_mb,
    seed_workload,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.02


class BaselineError(RuntimeError):
    """The worker did not start or did not drain in time."""


@contextlib.contextmanager
def celery_worker(redis_url: str, queue: str, prefix: str, concurrency: int) -> Iterator[int]:
    """Run ``celery worker`` in its own process group; yields its PID, always kills the group."""
    env = dict(os.environ)
    env[tasks.BROKER_ENV] = redis_url
    env[tasks.QUEUE_ENV] = queue
    env[tasks.PREFIX_ENV] = prefix
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable, "-m", "celery", "-A", "benchmarks.baseline.tasks", "worker",
        "--pool", "prefork", "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-Q", queue, "-n", f"{queue}@%h", "--loglevel", "WARNING",
    ]  # fmt: skip
    fd, log_path = tempfile.mkstemp(prefix="baseline-worker-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc.pid
    except BaseException:
        tail = Path(log_path).read_text(errors="replace")[-3000:]
        print(f"--- celery worker log ({log_path}) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        _kill_group(proc)
        with contextlib.suppress(OSError):
            os.unlink(log_path)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group, then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _enqueue(entry: SeedEntry, event: str, client: redis.Redis) -> int:
    """Count one more task in flight, then ``.delay`` the event as the seed's view did.

    Returns ``time.time_ns()`` taken just before the enqueue.
    """
    client.incr(tasks.inflight_key())
    stamp = time.time_ns()
    tasks.compute_nodes.delay(entry.readings(), tasks.ARG_TTL_S, event)
    return stamp


def _wait_drained(client: redis.Redis, deadline: float, worker_pid: int) -> bool:
    """Poll until no task is queued or running; False when ``deadline`` passed first."""
    while time.monotonic() < deadline:
        inflight = int(client.get(tasks.inflight_key()) or 0)
        if inflight <= 0:
            return True
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            raise BaselineError("the celery worker exited") from None
        time.sleep(POLL_S)
    return False


def _reset(client: redis.Redis) -> None:
    """Forget logs, argument keys, locks and the in-flight counter of this run's prefix."""
    keys = list(client.scan_iter(match=f"{tasks.Settings.prefix}*", count=1000))
    keys += list(client.scan_iter(match=f"lock:{tasks.Settings.prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def _read_log(client: redis.Redis, node: str) -> list[tuple[str, float, int]]:
    """(event, value, at_ns) of every logged value of ``node``."""
    rows: Any = client.xrange(tasks.log_key(node))
    return [(f[b"event"].decode(), float(f[b"value"]), int(f[b"at"])) for _id, f in rows]


class _Tally:
    """Derived values produced/lost/wrong for a set of events."""

    def __init__(self, client: redis.Redis, expected: dict[str, SeedEntry]) -> None:
        self.logs = {node: _read_log(client, node) for node in SEED_DERIVED}
        self.produced = sum(len(rows) for rows in self.logs.values())
        self.expected_count = len(SEED_DERIVED) * len(expected)
        self.lost = max(0, self.expected_count - self.produced)
        self.wrong = 0
        for node, rows in self.logs.items():
            for event, value, _at in rows:
                entry = expected.get(event)
                if entry is not None and value != entry.expected()[node]:
                    self.wrong += 1
        self.last_at = max((at for rows in self.logs.values() for *_, at in rows), default=0)

    def b_at(self) -> dict[str, int]:
        """Event -> when its (first) B was logged."""
        out: dict[str, int] = {}
        for event, _value, at in self.logs["B"]:
            out.setdefault(event, at)
        return out


def _idle_latency(
    client: redis.Redis, samples: int, worker_pid: int, first_timeout_s: float
) -> tuple[_Tally, list[float]]:
    """Warm up, then ``samples`` single events on an idle worker: ms from enqueue to B."""
    latencies: list[float] = []
    workload = seed_workload(samples + 1, seed=1)
    expected = {f"idle{i}": entry for i, entry in enumerate(workload)}
    for i, (event, entry) in enumerate(expected.items()):
        stamp = _enqueue(entry, event, client)
        budget = first_timeout_s if i == 0 else 10.0
        if not _wait_drained(client, time.monotonic() + budget, worker_pid):
            raise BaselineError(f"idle event {event} not processed within {budget:.0f} s")
        b_rows = [r for r in _read_log(client, "B") if r[0] == event]
        if i > 0 and b_rows:  # event 0 is the warm-up
            latencies.append((b_rows[0][2] - stamp) / 1e6)
    return _Tally(client, expected), latencies


def _closed_loop(
    client: redis.Redis, events: int, deadline: float, worker_pid: int
) -> tuple[_Tally, float, bool, float | None]:
    """Pre-fill ``events`` tasks, release them at once.

    Returns (tally, seconds to drain, drained, seconds to the last derived value).
    """
    workload = seed_workload(events, seed=2)
    expected = {f"e{i}": entry for i, entry in enumerate(workload)}
    staging = f"{tasks.Settings.queue}.staging"
    for event, entry in expected.items():
        tasks.compute_nodes.apply_async(
            args=(entry.readings(), tasks.ARG_TTL_S, event), queue=staging
        )
    client.incrby(tasks.inflight_key(), events)
    start = time.time_ns()
    client.rename(staging, tasks.Settings.queue)  # the worker's BRPOP wakes up on this
    drained = _wait_drained(client, deadline, worker_pid)
    tally = _Tally(client, expected)
    # The end is when the last task of the run finished (the in-flight count reached 0), not
    # the last derived value: the seed loses values, so the last one logged can come early.
    stamp = client.get(tasks.drained_key())
    end = int(stamp) if drained and stamp is not None else time.time_ns()
    last_derived_s = (tally.last_at - start) / 1e9 if tally.last_at else None
    return tally, max(1e-9, (end - start) / 1e9), drained, last_derived_s


def _open_loop(
    client: redis.Redis, rate: float, seconds: float, deadline: float, worker_pid: int
) -> tuple[_Tally, list[float], bool, float]:
    """Enqueue at ``rate``/s for ``seconds``; (tally, B latencies ms, drained, achieved rate)."""
    count = max(1, int(rate * seconds))
    workload = seed_workload(count, seed=3)
    expected: dict[str, SeedEntry] = {}
    stamps: dict[str, int] = {}
    start = time.perf_counter()
    for i, entry in enumerate(workload):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        event = f"o{i}"
        expected[event] = entry
        stamps[event] = _enqueue(entry, event, client)
    achieved = count / max(1e-9, time.perf_counter() - start)
    drained = _wait_drained(client, deadline, worker_pid)
    tally = _Tally(client, expected)
    latencies = [(at - stamps[ev]) / 1e6 for ev, at in tally.b_at().items() if ev in stamps]
    return tally, latencies, drained, achieved


def run_baseline(
    redis_url: str,
    *,
    events: int,
    open_loop_rate: float | None,
    concurrency: int = 2,
    timeout_s: float = 120.0,
    open_loop_seconds: float = 5.0,
    idle_samples: int = 20,
) -> Result:
    """Benchmark the seed's design against the Redis at ``redis_url`` (never the shared one).

    ``open_loop_rate`` None = half the closed-loop events/s; ``open_loop_seconds`` 0 skips the
    open-loop phase. ``timeout_s`` bounds each phase's wait for the worker to drain.
    """
    if events < 1:
        raise ValueError("events must be >= 1")
    queue = f"baseline-{uuid.uuid4().hex[:8]}"
    prefix = f"bl:{queue}:"
    tasks.configure(redis_url, queue=queue, prefix=prefix)
    client = redis.Redis.from_url(redis_url)
    extra: dict[str, object] = {"queue": queue}
    try:
        with celery_worker(redis_url, queue, prefix, concurrency) as worker_pid:
            _reset(client)
            idle_tally, idle = _idle_latency(client, idle_samples, worker_pid, first_timeout_s=60.0)
            extra["idle_latency_p50_ms"], extra["idle_latency_p99_ms"] = latency_summary(idle)
            extra["idle_lost"], extra["idle_wrong"] = idle_tally.lost, idle_tally.wrong

            _reset(client)
            closed, seconds, drained, last_derived_s = _closed_loop(
                client, events, time.monotonic() + timeout_s, worker_pid
            )
            worker_rss = rss_mb(descendant_pids(worker_pid))
            redis_mb = redis_memory_mb(client)
            extra.update(
                closed_drained=drained,
                closed_derived_produced=closed.produced,
                closed_derived_wrong=closed.wrong,
                closed_b_produced=len(closed.logs["B"]),
                closed_last_derived_s=None if last_derived_s is None else round(last_derived_s, 4),
            )
            # Not drained in time: count only the events whose input task has run.
            done = events if drained else int(client.xlen(tasks.log_key("C")))
            extra["closed_events_done"] = done
            events_per_s = done / seconds

            p50 = p99 = None
            if open_loop_seconds > 0:
                rate = open_loop_rate or events_per_s / 2
                _reset(client)
                opened, latencies, drained, achieved = _open_loop(
                    client, rate, open_loop_seconds, time.monotonic() + timeout_s, worker_pid
                )
                p50, p99 = latency_summary(latencies)
                extra.update(
                    open_loop_rate=round(rate, 1),
                    open_loop_rate_achieved=round(achieved, 1),
                    open_loop_events=opened.expected_count // len(SEED_DERIVED),
                    open_loop_drained=drained,
                    open_loop_lost=opened.lost,
                    open_loop_wrong=opened.wrong,
                    open_loop_b_produced=len(opened.logs["B"]),
                )
            _reset(client)
    finally:
        client.close()

    return Result(
        workload="seed",
        system="baseline-celery",
        workers=concurrency,
        entries=events,
        seconds=round(seconds, 4),
        entries_per_s=round(events_per_s, 1),
        readings_per_s=round(events_per_s * 4, 1),
        derived_per_s=round(closed.produced / seconds, 1),
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        worker_rss_mb=worker_rss,
        redis_memory_mb=redis_mb,
        lost=closed.lost,
        extra=extra,
    )


def main(argv: list[str] | None = None) -> None:
    """Start an embedded Redis, run the baseline and print the Result as JSON."""
    from streamcalc.embedded import EmbeddedRedis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument(
        "--rate", type=float, default=None,
        help="open-loop events/s (default: half the closed-loop maximum)",
    )  # fmt: skip
    parser.add_argument("--open-loop-seconds", type=float, default=5.0, help="0 skips it")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--idle-samples", type=int, default=20)
    args = parser.parse_args(argv)
    exit_on_sigterm()

    with EmbeddedRedis() as srv:
        result = run_baseline(
            srv.url,
            events=args.events,
            open_loop_rate=args.rate,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            open_loop_seconds=args.open_loop_seconds,
            idle_samples=args.idle_samples,
        )
    print(result.to_json())


if __name__ == "__main__":
    main()
