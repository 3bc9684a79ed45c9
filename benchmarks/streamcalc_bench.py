"""Drive streamcalc itself: closed-loop throughput with N worker processes, open-loop latency,
a per-workload Streams ceiling, and an exact check of every derived value against the model.

Closed loop (:func:`run_closed`): the workload's entries are XADDed once into a template stream
and ``COPY``-ed into ``sc:{NS}:in`` of a fresh namespace; the graph is loaded; N processes of
``python -m streamcalc worker`` start (one process each, so each RSS is readable). A poller
reads ``XINFO GROUPS`` every millisecond: the measured window runs from the moment all N
consumers are in the group (one has read its first batch when it appears) to the moment the
group's last-delivered-id is the last entry and nothing is pending. Entries done before the
window (a fast starter) are subtracted. Worker CPU (``/proc/PID/stat``), Redis CPU
(``INFO cpu``) and Redis command statistics (``INFO commandstats``, reset before the run)
are sampled over the same window.

Open loop (:func:`run_latency`): one worker waits on an empty namespace; a producer *process*
XADDs at a fixed rate, noting ``time.time_ns()`` per entry ID; this process follows
``sc:{NS}:out`` with ``XREAD BLOCK`` and notes when each entry's first derived value arrives.

Check (:func:`verify`): ``sc:{NS}:out`` is read whole and compared, value by value, with the
model (:mod:`benchmarks.workloads`) replayed in a serial order. With one worker that order is
the stream order (SPEC S10). With N workers it is the order in which the batches committed:
a prefilled stream hands out consecutive blocks of ``--batch`` entries, each committed
atomically, so the serial order is a permutation of those blocks, read off ``out`` (blocks
that produced nothing go last; the model must then agree that they produce nothing).
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import Result, latency_summary, percentile, redis_memory_mb
from benchmarks.workloads import Workload
from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys
from streamcalc.store import store_graph

REPO_ROOT = Path(__file__).resolve().parents[1]
GROUP = "streamcalc"
FILL_CHUNK = 2000
READ_CHUNK = 20_000
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Every worker process started here, so that anything left can be killed on the way out.
_LIVE: set[subprocess.Popen[bytes]] = set()


def _raw(response: Any, **_: Any) -> Any:
    return response


def client_for(url: str) -> redis.Redis:
    """A client with flat (unparsed) replies for the stream commands the harness reads."""
    client = redis.Redis.from_url(url, protocol=2, socket_timeout=60)
    for command in ("XRANGE", "XREVRANGE", "XREAD", "XREADGROUP"):
        client.set_response_callback(command, _raw)
    return client


# -- processes --------------------------------------------------------------------------------


def kill_all_workers() -> None:
    """SIGKILL every worker process group this module started and has not reaped."""
    for proc in list(_LIVE):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        _LIVE.discard(proc)


class Workers:
    """N ``streamcalc worker`` processes, each in its own session; always stopped on exit."""

    def __init__(self, redis_url: str, ns: str, count: int, *, batch: int, block_ms: int) -> None:
        self.redis_url, self.ns, self.count = redis_url, ns, count
        self.batch, self.block_ms = batch, block_ms
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[str] = []
        self.exit_codes: list[int | None] = []

    def __enter__(self) -> Workers:
        env = dict(os.environ)
        env["STREAMCALC_REDIS_URL"] = self.redis_url
        env.pop("STREAMCALC_NS", None)
        for i in range(self.count):
            cmd = [
                sys.executable, "-m", "streamcalc", "worker", "--ns", self.ns,
                "--consumer", f"bench-{i}", "--batch", str(self.batch),
                "--block-ms", str(self.block_ms), "--log-format", "json",
                "--log-level", "warning",
            ]  # fmt: skip
            fd, log_path = tempfile.mkstemp(prefix=f"bench-worker-{i}-", suffix=".log")
            with os.fdopen(fd, "wb") as log:
                proc = subprocess.Popen(
                    cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=log, start_new_session=True, preexec_fn=_die_with_parent,
                )  # fmt: skip
            _LIVE.add(proc)
            self.procs.append(proc)
            self.logs.append(log_path)
        return self

    @property
    def pids(self) -> list[int]:
        """PIDs of the worker processes."""
        return [p.pid for p in self.procs]

    def check_alive(self) -> None:
        """Raise if a worker exited (with the end of its log)."""
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = Path(log).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {proc.pid} exited with {proc.returncode}:\n{tail}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (workers finish their batch and exit 0), then SIGKILL what is left."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            _LIVE.discard(proc)
        self.exit_codes = [p.returncode for p in self.procs]

    def log_lines(self) -> list[str]:
        """Every line the workers logged (warnings and worse, JSON)."""
        lines: list[str] = []
        for path in self.logs:
            with contextlib.suppress(OSError):
                lines += Path(path).read_text(errors="replace").splitlines()
        return lines

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for path in self.logs:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the harness dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all threads) in seconds; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _system_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all CPUs, from /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


class CpuWindow:
    """CPU used over a window by: the workers, redis-server, this process, everyone else."""

    def __init__(
        self, client: redis.Redis, pids: Sequence[int], helpers: Sequence[int] = ()
    ) -> None:
        self.client, self.pids, self.helpers = client, list(pids), list(helpers)
        self.redis_pid = int(client.info("server")["process_id"])
        self.start = self._now()

    def _now(self) -> tuple[float, list[float], float, float, float]:
        return (
            time.perf_counter(),
            [_cpu_seconds(p) for p in self.pids],
            _cpu_seconds(self.redis_pid),
            time.process_time() + sum(_cpu_seconds(p) for p in self.helpers),
            _system_busy_s(),
        )

    def restart(self) -> None:
        """Start the window again from now."""
        self.start = self._now()

    def stop(self) -> dict[str, float]:
        """CPU seconds and utilisations (in CPUs) since the start."""
        t0, w0, r0, h0, s0 = self.start
        t1, w1, r1, h1, s1 = self._now()
        wall = max(1e-9, t1 - t0)
        workers, redis_s, harness = sum(w1) - sum(w0), r1 - r0, h1 - h0
        other = max(0.0, (s1 - s0) - workers - redis_s - harness)
        return {
            "wall_s": wall,
            "workers_s": workers,
            "redis_s": redis_s,
            "harness_s": harness,
            "other_s": other,
            "other_util": round(other / wall, 3),
            "harness_util": round(harness / wall, 3),
        }


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    main = info.get("used_cpu_user_main_thread")
    if main is not None:
        return float(main) + float(info.get("used_cpu_sys_main_thread", 0.0))
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- filling ----------------------------------------------------------------------------------


def prefill(client: redis.Redis, key: str, workload: Workload) -> list[bytes]:
    """XADD every entry to ``key`` (pipelined); returns the entry IDs in order."""
    conn: Any = client.connection_pool.get_connection()
    ids: list[bytes] = []
    try:
        entries = workload.entries
        for lo in range(0, len(entries), FILL_CHUNK):
            cmds = [("XADD", key, "*", *e.xadd_fields()) for e in entries[lo : lo + FILL_CHUNK]]
            conn.send_packed_command(conn.pack_commands(cmds))
            for _ in cmds:
                ids.append(conn.read_response())
    finally:
        client.connection_pool.release(conn)
    return ids


def load_graph(client: redis.Redis, ns: str, workload: Workload) -> None:
    """Parse the workload's graph file and store it in namespace ``ns``."""
    graph = parse_graph_text(workload.graph_toml, f"<{workload.name}>")
    store_graph(client, Keys(ns), graph)


def delete_namespace(client: redis.Redis, ns: str) -> None:
    """Drop every key of namespace ``ns``."""
    client.delete(*Keys(ns).all())


def new_ns(tag: str) -> str:
    """A fresh namespace name."""
    return f"bench-{tag}-{uuid.uuid4().hex[:8]}"


# -- checking ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Check:
    """Derived values compared with the model (see :func:`verify`)."""

    order: str
    expected: int = 0
    produced: int = 0
    lost: int = 0  # the model has it, out does not
    wrong: int = 0  # both have it, value or ts differ
    unexpected: int = 0  # out has it, the model does not
    duplicates: int = 0  # a second out entry for the same (@src, node)
    late_readings: int = 0  # readings the model found late in that serial order
    expected_stream_order: int | None = None  # what one worker in stream order would produce
    block_splits: int = 0  # blocks whose output is not contiguous in out (N workers)
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Keep a few examples of what went wrong."""
        if len(self.examples) < 5:
            self.examples.append(text)

    @property
    def bad(self) -> int:
        """Wrong + unexpected + duplicated values."""
        return self.wrong + self.unexpected + self.duplicates

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON output."""
        return {
            "order": self.order,
            "expected": self.expected,
            "produced": self.produced,
            "lost": self.lost,
            "wrong": self.wrong,
            "unexpected": self.unexpected,
            "duplicates": self.duplicates,
            "late_readings": self.late_readings,
            "expected_stream_order": self.expected_stream_order,
            "block_splits": self.block_splits,
            "examples": self.examples[:5],
        }


class OutRows:
    """``sc:{NS}:out`` in compact columns, in stream (= commit) order."""

    def __init__(self) -> None:
        self.src = array("q")  # input entry index, -1 when @src is unknown
        self.node = array("l")  # index into names
        self.value = array("d")
        self.ts = array("q")
        self.names: list[str] = []
        self._name_ids: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self.src)

    def add(self, src: int, node: bytes, value: float, ts: int) -> None:
        """Append one row."""
        nid = self._name_ids.get(node)
        if nid is None:
            nid = self._name_ids[node] = len(self.names)
            self.names.append(node.decode())
        self.src.append(src)
        self.node.append(nid)
        self.value.append(value)
        self.ts.append(ts)


def read_out(client: redis.Redis, key: str, index_of: dict[bytes, int]) -> OutRows:
    """Every entry of the output stream ``key``; ``@src`` mapped to entry indices."""
    rows = OutRows()
    start = b"-"
    while True:
        chunk: Any = client.execute_command("XRANGE", key, start, "+", "COUNT", READ_CHUNK)
        if not chunk:
            return rows
        for _id, flat in chunk:
            node = value = ts = src = None
            for i in range(0, len(flat), 2):
                name = flat[i]
                if name == b"@src":
                    src = flat[i + 1]
                elif name == b"@ts":
                    ts = flat[i + 1]
                else:
                    node, value = name, flat[i + 1]
            try:
                number = float(value) if value is not None else math.nan
            except ValueError:
                number = math.nan
            rows.add(index_of.get(src, -1) if src else -1, node or b"?", number, int(ts or -1))
        start = b"(" + chunk[-1][0]
        if len(chunk) < READ_CHUNK:
            return rows


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _serial_order(rows: OutRows, n: int, batch: int | None) -> tuple[list[int], int]:
    """Entry indices in commit order (see the module doc), and the count of split blocks."""
    if batch is None:
        return list(range(n)), 0
    blocks: list[int] = []
    seen: set[int] = set()
    last = -1
    splits = 0
    for src in rows.src:
        if src < 0:
            continue
        block = src // batch
        if block != last:
            if block in seen:
                splits += 1
            else:
                seen.add(block)
                blocks.append(block)
            last = block
    blocks += [b for b in range((n + batch - 1) // batch) if b not in seen]
    order = [i for b in blocks for i in range(b * batch, min(n, (b + 1) * batch))]
    return order, splits


def _ranges(rows: OutRows) -> dict[int, list[tuple[int, int]]]:
    """Entry index -> the [lo, hi) row ranges of its output, in out order (several = split)."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    srcs = rows.src
    i = 0
    total = len(srcs)
    while i < total:
        j = i
        src = srcs[i]
        while j < total and srcs[j] == src:
            j += 1
        ranges.setdefault(src, []).append((i, j))
        i = j
    return ranges


def _compare(
    check: Check, index: int, fired: list[tuple[str, Any, int]], actual: dict[str, Any]
) -> None:
    """Tally one entry: the model's fired values against the engine's (consumes ``actual``)."""
    check.expected += len(fired)
    for name, value, ts in fired:
        got = actual.pop(name, None)
        if got is None:
            check.lost += 1
            check.note(f"lost {name}={value} of entry {index}")
        elif not _close(got[0], float(value)) or got[1] != ts:
            check.wrong += 1
            check.note(f"wrong {name} of entry {index}: {got} != {(value, ts)}")
    if actual:
        check.unexpected += len(actual)
        check.note(f"unexpected {sorted(actual)[:3]} for entry {index}")


def verify(
    rows: OutRows, workload: Workload, n: int, *, batch: int | None, stream_expected: int | None
) -> Check:
    """Compare ``rows`` with the model over the first ``n`` entries.

    ``batch`` None: the serial order is the stream order (one worker). Otherwise the serial
    order is the commit order of the blocks of ``batch`` consecutive entries (N workers).
    """
    order, splits = _serial_order(rows, n, batch)
    check = Check(order="stream" if batch is None else f"commit order of {batch}-entry blocks")
    check.block_splits = splits
    check.produced = len(rows)
    check.expected_stream_order = stream_expected
    ranges = _ranges(rows)
    for lo, hi in ranges.pop(-1, []):
        check.unexpected += hi - lo
        check.note(f"{hi - lo} out entries with an unknown @src")
    model = workload.model()
    names = rows.names
    entries = workload.entries
    for index in order:
        actual: dict[str, tuple[float, int]] = {}
        for lo, hi in ranges.pop(index, ()):
            for k in range(lo, hi):
                name = names[rows.node[k]]
                if name in actual:
                    check.duplicates += 1
                    check.note(f"duplicate {name} for entry {index}")
                else:
                    actual[name] = (rows.value[k], rows.ts[k])
        _compare(check, index, model.wave(entries[index]), actual)
    for rest in ranges.values():  # rows for entries beyond n
        check.unexpected += sum(hi - lo for lo, hi in rest)
    check.late_readings = model.late
    return check


def stream_order_count(workload: Workload, n: int) -> int:
    """Derived values the model produces for the first ``n`` entries in stream order."""
    model = workload.model()
    return sum(len(model.wave(e)) for e in workload.entries[:n])


# -- closed loop ------------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """One XINFO GROUPS observation."""

    t: float
    consumers: int
    pending: int
    last_id: bytes
    done: int  # entries-read - pending (Redis >= 7)


def _sample(client: redis.Redis, key: str) -> Sample | None:
    t = time.perf_counter()
    try:
        groups: Any = client.xinfo_groups(key)
    except redis.ResponseError:
        return None
    for g in groups:
        if g["name"] in (GROUP, GROUP.encode()):
            last = g["last-delivered-id"]
            last_b = last if isinstance(last, bytes) else str(last).encode()
            read = g.get("entries-read")
            done = -1 if read is None else int(read) - int(g["pending"])
            return Sample(t, int(g["consumers"]), int(g["pending"]), last_b, done)
    return None


def _commandstats(client: redis.Redis) -> dict[str, dict[str, float]]:
    stats: Any = client.info("commandstats")
    out: dict[str, dict[str, float]] = {}
    for name, row in stats.items():
        cmd = name.removeprefix("cmdstat_")
        out[cmd] = {"calls": float(row["calls"]), "usec": float(row["usec"])}
    return out


#: Commands a worker sends itself, one round trip each (the rest run inside commit.lua or
#: inside MULTI/EXEC, and count in EVALSHA's / EXEC's time).
TOP_LEVEL_COMMANDS = ("evalsha", "eval", "xreadgroup", "xautoclaim", "exec", "hgetall")
HARNESS_COMMANDS = ("xinfo|groups", "info", "config|resetstat", "ping", "client|setinfo")


def run_closed(
    url: str,
    workload: Workload,
    template: str,
    ids: Sequence[bytes],
    workers: int,
    *,
    batch: int = 500,
    block_ms: int = 50,
    timeout_s: float = 300.0,
    stream_expected: int | None = None,
) -> Result:
    """One closed-loop run of ``workers`` worker processes over the prefilled ``template``."""
    client = client_for(url)
    ns = new_ns(f"{workload.name}-w{workers}")
    keys = Keys(ns)
    n = len(ids)
    last_id = ids[-1]
    try:
        memory0 = int(client.info("memory")["used_memory"])
        load_graph(client, ns, workload)
        client.execute_command("COPY", template, keys.input)
        client.config_resetstat()
        with Workers(url, ns, workers, batch=batch, block_ms=block_ms) as procs:
            launched = time.perf_counter()
            first: Sample | None = None
            begin: Sample | None = None
            deadline = time.monotonic() + timeout_s
            cpu = CpuWindow(client, procs.pids)
            while True:
                s = _sample(client, keys.input)
                if s is not None and first is None and s.last_id != b"0-0":
                    first = s
                    cpu.restart()
                if s is not None and begin is None and s.consumers >= workers:
                    begin = s
                    if begin is not first:
                        cpu.restart()
                if s is not None and s.last_id == last_id and s.pending == 0:
                    end = s
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{workload.name} x{workers}: not drained within {timeout_s:.0f} s "
                        f"({s.done if s else '?'} of {n} entries done)"
                    )
                procs.check_alive()
                time.sleep(0.001 if begin is None else 0.005)
            used = cpu.stop()
            rss = [_status_kb(p, "VmRSS") / 1024 for p in procs.pids]
            hwm = [_status_kb(p, "VmHWM") / 1024 for p in procs.pids]
            stats = _commandstats(client)
            procs.stop()
            log_lines = procs.log_lines()
            exit_codes = procs.exit_codes
        assert first is not None
        all_started = begin is not None
        if begin is None:  # drained before the last worker joined: measure from the first
            begin = first
        done_before = max(0, begin.done) if begin is not first else 0
        measured = n - done_before
        seconds = max(1e-9, end.t - begin.t)
        out_len = int(client.xlen(keys.output))
        dead_len = int(client.xlen(keys.dead))
        memory_abs = int(client.info("memory")["used_memory"])
        rows = read_out(client, keys.output, {eid: i for i, eid in enumerate(ids)})
    finally:
        delete_namespace(client, ns)
        client.close()
    check = verify(
        rows, workload, n, batch=None if workers == 1 else batch, stream_expected=stream_expected
    )
    worker_cpu = used["workers_s"]
    redis_cpu = used["redis_s"]
    rate = measured / seconds
    derived_rate = out_len * measured / n / seconds
    extra: dict[str, Any] = {
        "batch": batch,
        "startup_s": round(begin.t - launched, 3),
        "all_workers_started": all_started,
        "all_workers_started_after_entries": done_before,
        "first_delivery_to_end_s": round(end.t - first.t, 4),
        "worker_cpu_s": round(worker_cpu, 3),
        "worker_cpu_us_per_entry": round(worker_cpu / measured * 1e6, 2),
        "worker_cpu_util": round(worker_cpu / seconds / workers, 3),
        "redis_cpu_s": round(redis_cpu, 3),
        "redis_cpu_us_per_entry": round(redis_cpu / measured * 1e6, 2),
        "redis_cpu_util": round(redis_cpu / seconds, 3),
        "wall_us_per_entry": round(seconds / measured * 1e6, 2),
        "harness_cpu_util": used["harness_util"],
        "other_processes_cpu_util": used["other_util"],
        "commandstats_per_entry": _per_entry(stats, n),
        "rss_per_worker_mb": [round(x, 1) for x in rss],
        "rss_peak_per_worker_mb": [round(x, 1) for x in hwm],
        "redis_used_memory_mb": round(memory_abs / 2**20, 2),
        "out_entries": out_len,
        "dead_letters": dead_len,
        "worker_exit_codes": exit_codes,
        "worker_log_lines": len(log_lines),
        "worker_log_sample": log_lines[:3],
        "check": check.as_dict(),
    }
    return Result(
        workload=workload.name,
        system="streamcalc",
        workers=workers,
        entries=n,
        seconds=round(seconds, 4),
        entries_per_s=round(rate, 1),
        readings_per_s=round(rate * workload.readings_per_entry, 1),
        derived_per_s=round(derived_rate, 1),
        worker_rss_mb=round(sum(rss), 2),
        redis_memory_mb=round((memory_abs - memory0) / 2**20, 2),
        lost=check.lost,
        extra=extra,
    )


def _per_entry(stats: dict[str, dict[str, float]], n: int) -> dict[str, dict[str, float]]:
    """Redis command statistics of the engine, per input entry (harness polling left out)."""
    out: dict[str, dict[str, float]] = {}
    total_usec = 0.0
    for cmd, row in sorted(stats.items(), key=lambda kv: -kv[1]["usec"]):
        if cmd in HARNESS_COMMANDS:
            continue
        out[cmd] = {
            "calls_per_entry": round(row["calls"] / n, 4),
            "usec_per_entry": round(row["usec"] / n, 3),
            "usec_per_call": round(row["usec"] / max(1.0, row["calls"]), 2),
        }
        if cmd in TOP_LEVEL_COMMANDS:
            total_usec += row["usec"]
    # evalsha already includes the commands its script runs: count only the top level
    out["_top_level_total"] = {"usec_per_entry": round(total_usec / n, 3)}
    return out


# -- Streams ceiling for any workload ---------------------------------------------------------


def run_stream_ceiling(
    url: str, workload: Workload, template: str, n: int, *, batch: int = 500
) -> Result:
    """The workload's entries through XREADGROUP COUNT batch + XACK, no computation."""
    client = client_for(url)
    key = f"bench:ceiling:{uuid.uuid4().hex[:8]}"
    try:
        client.execute_command("COPY", template, key)
        client.xgroup_create(key, "ceiling", id="0")
        redis_cpu0 = _redis_cpu(client)
        consumed = 0
        start = time.perf_counter()
        while True:
            reply: Any = client.execute_command(
                "XREADGROUP", "GROUP", "ceiling", "c1", "COUNT", batch, "STREAMS", key, ">"
            )
            if not reply or not reply[0][1]:
                break
            messages = reply[0][1]
            client.xack(key, "ceiling", *[m[0] for m in messages])
            consumed += len(messages)
        seconds = time.perf_counter() - start
        redis_cpu = _redis_cpu(client) - redis_cpu0
        memory = redis_memory_mb(client)
    finally:
        client.delete(key)
        client.close()
    rate = consumed / seconds
    return Result(
        workload=workload.name,
        system="ceiling",
        workers=1,
        entries=consumed,
        seconds=round(seconds, 4),
        entries_per_s=round(rate, 1),
        readings_per_s=round(rate * workload.readings_per_entry, 1),
        derived_per_s=0.0,
        redis_memory_mb=memory,
        lost=0,
        extra={
            "batch": batch,
            "redis_cpu_us_per_entry": round(redis_cpu / max(1, consumed) * 1e6, 2),
            "redis_cpu_util": round(redis_cpu / seconds, 3),
            "wall_us_per_entry": round(seconds / max(1, consumed) * 1e6, 2),
        },
    )


# -- open loop --------------------------------------------------------------------------------


MAX_TICK = 1000


def _produce(url: str, key: str, rows: list[list[str]], rate: float, report: Any) -> None:
    """Producer process: XADD ``rows`` in order at ``rate``/s (open loop, packed writes).

    Each tick sends every entry that is due; each entry's stamp is ``time.time_ns()`` when
    its command was packed. Puts ([(id, stamp_ns)], seconds, lag) on ``report``, where lag
    is (p99, max) in ms of how late entries went out against the schedule.
    """
    gc.collect()
    gc.freeze()
    gc.disable()  # no collection pauses, so no bursts
    client = redis.Redis.from_url(url, protocol=2)
    conn: Any = client.connection_pool.get_connection()
    stamps: list[tuple[bytes, int]] = []
    lags: list[float] = []
    try:
        packed = [b"".join(conn.pack_command("XADD", key, "*", *row)) for row in rows]
        total = len(rows)
        sent = 0
        start = time.perf_counter()
        while sent < total:
            elapsed = time.perf_counter() - start
            due = min(total, int(elapsed * rate) + 1, sent + MAX_TICK)
            if due <= sent:
                time.sleep(max(0.0, min(0.0005, (sent + 1) / rate - elapsed)))
                continue
            lags.append((elapsed - sent / rate) * 1000)  # the oldest entry of this tick
            now = time.time_ns()
            conn.send_packed_command([b"".join(packed[sent:due])], check_health=False)
            for _ in range(sent, due):
                stamps.append((conn.read_response(), now))
            sent = due
        took = time.perf_counter() - start
        lag = (round(percentile(lags, 99), 3), round(max(lags), 3)) if lags else (0.0, 0.0)
        report.put((stamps, took, lag))
    finally:
        client.connection_pool.release(conn)
        client.close()


def _wait_for_consumers(client: redis.Redis, key: str, procs: Workers, count: int) -> None:
    """Until ``count`` consumers are in the group (a worker joins with its first read)."""
    deadline = time.monotonic() + 60
    while True:
        s = _sample(client, key)
        if s is not None and s.consumers >= count:
            return
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not start within 60 s")
        time.sleep(0.01)


class _Follower:
    """Notes when each commit of a single worker lands in ``sc:{NS}:out``, cheaply.

    One pipelined round trip per commit: ``XREAD COUNT 1 BLOCK`` wakes up when a commit has
    written (a commit's values appear at once), ``XREVRANGE COUNT 1`` reads the newest value,
    whose ``@src`` is the newest input entry finished. With one worker, ``out`` follows the
    stream order (:func:`verify` checks it), so every entry up to that ``@src`` is done.
    Parsing every output value instead would cost the harness a CPU core on a busy workload.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client, self.key = client, key
        self.last = b"0-0"
        self.marks: list[tuple[int, bytes]] = []  # (time.time_ns(), newest @src)

    def read(self, block_ms: int | None) -> int:
        """One wait for new output; returns 1 when there was some."""
        args: list[Any] = ["XREAD", "COUNT", 1]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command(*args, "STREAMS", self.key, self.last)
        pipe.execute_command("XREVRANGE", self.key, "+", "-", "COUNT", 1)
        _, newest = pipe.execute()
        now = time.time_ns()
        if not newest or newest[0][0] == self.last:
            return 0
        eid, flat = newest[0]
        self.last = eid
        src = _field(flat, b"@src")
        if src is not None:
            self.marks.append((now, src))
        return 1

    def arrivals(self, ids: Sequence[bytes]) -> dict[bytes, int]:
        """Input entry ID -> when the first commit covering it showed up (IDs in order)."""
        out: dict[bytes, int] = {}
        marks = [(_id_key(src), now) for now, src in self.marks]
        k = 0
        for eid in ids:
            key = _id_key(eid)
            while k < len(marks) and marks[k][0] < key:
                k += 1
            if k == len(marks):
                break
            out[eid] = marks[k][1]
        return out


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No garbage collection pauses in this process while timing (objects so far frozen)."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def _follow(
    client: redis.Redis,
    keys: Keys,
    follower: _Follower,
    report: Any,
    producer: Any,
    procs: Workers,
    deadline: float,
) -> None:
    """Follow ``out`` until the producer is done and the worker has drained the input."""
    while True:
        follower.read(100)
        # the producer is done once its report is in the queue; read the report only after
        # the worker drained, so that unpickling it delays no arrival
        if not report.empty():
            s = _sample(client, keys.input)
            if s is not None and s.pending == 0 and s.last_id == _last_id(client, keys):
                while follower.read(None):  # what the last commit wrote
                    pass
                return
        elif not producer.is_alive():
            raise RuntimeError(f"latency producer died (exit {producer.exitcode})")
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("latency run did not finish in time")


def run_latency(
    url: str,
    workload: Workload,
    *,
    rate: float,
    seconds: float,
    batch: int = 500,
    block_ms: int = 50,
    warmup_s: float = 0.5,
) -> dict[str, Any]:
    """Open-loop latency with one worker at ``rate`` entries/s for ``warmup_s + seconds``.

    Latency of an entry = arrival of its first derived value in ``out`` (XREAD BLOCK here)
    minus the producer's clock when it packed the entry's XADD. Entries of the first
    ``warmup_s`` are left out of the percentiles. The output is also checked (stream order).
    """
    total = max(1, min(len(workload.entries), int(rate * (seconds + warmup_s))))
    client = client_for(url)
    ns = new_ns(f"{workload.name}-lat")
    keys = Keys(ns)
    ctx = multiprocessing.get_context("spawn")
    report = ctx.Queue()
    rows = [e.xadd_fields() for e in workload.entries[:total]]
    producer = ctx.Process(target=_produce, args=(url, keys.input, rows, rate, report), daemon=True)
    follower = _Follower(client, keys.output)
    try:
        load_graph(client, ns, workload)
        with Workers(url, ns, 1, batch=batch, block_ms=block_ms) as procs:
            _wait_for_consumers(client, keys.input, procs, 1)
            producer.start()
            assert producer.pid is not None
            cpu = CpuWindow(client, procs.pids, helpers=[producer.pid])
            deadline = time.monotonic() + seconds + warmup_s + 120
            with _no_gc():  # a collection here would delay the arrival stamps
                _follow(client, keys, follower, report, producer, procs, deadline)
            used = cpu.stop()
            stamps, took, lag = report.get()
            procs.stop()
        ids = [eid for eid, _ in stamps]
        out = read_out(client, keys.output, {eid: i for i, eid in enumerate(ids)})
    finally:
        if producer.is_alive():
            producer.kill()
        if producer.pid is not None:
            producer.join(timeout=5)
        delete_namespace(client, ns)
        client.close()
    check = verify(out, workload, len(ids), batch=None, stream_expected=None)
    arrivals = follower.arrivals(ids)
    t0 = stamps[0][1] + warmup_s * 1e9
    latencies = [(arrivals[eid] - st) / 1e6 for eid, st in stamps if st >= t0 and eid in arrivals]
    p50, p99 = latency_summary(latencies)
    return {
        "timeline_p50_ms": _timeline(stamps, arrivals),
        "p50_ms": p50,
        "p99_ms": p99,
        "p999_ms": round(percentile(latencies, 99.9), 3) if latencies else None,
        "max_ms": round(max(latencies), 3) if latencies else None,
        "rate": round(rate, 1),
        "rate_achieved": round(len(stamps) / max(took, 1e-9), 1),
        "producer_lag_p99_max_ms": lag,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "entries": len(stamps),
        "samples": len(latencies),
        "commits_seen": len(follower.marks),
        "worker_cpu_util": round(used["workers_s"] / used["wall_s"], 3),
        "redis_cpu_util": round(used["redis_s"] / used["wall_s"], 3),
        "harness_and_producer_cpu_util": used["harness_util"],
        "other_processes_cpu_util": used["other_util"],
        "check": check.as_dict(),
        "lost": check.lost,
    }


def run_stream_ceiling_latency(
    url: str, workload: Workload, *, rate: float, seconds: float, batch: int = 500
) -> dict[str, Any]:
    """Ceiling latency: the workload's entries XADDed at ``rate`` by the same producer, read
    with XREADGROUP BLOCK + XACK (no computation); receipt time minus the producer's stamp."""
    total = max(1, min(len(workload.entries), int(rate * (seconds + 0.5))))
    client = client_for(url)
    key = f"bench:ceiling-lat:{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    report = ctx.Queue()
    rows = [e.xadd_fields() for e in workload.entries[:total]]
    producer = ctx.Process(target=_produce, args=(url, key, rows, rate, report), daemon=True)
    arrivals: dict[bytes, int] = {}
    try:
        client.xgroup_create(key, "ceiling", id="$", mkstream=True)
        producer.start()
        deadline = time.monotonic() + seconds + 60
        gc.collect()
        gc.freeze()
        gc.disable()
        while True:
            reply: Any = client.execute_command(
                "XREADGROUP", "GROUP", "ceiling", "c1", "COUNT", batch, "BLOCK", 100,
                "STREAMS", key, ">",
            )  # fmt: skip
            now = time.time_ns()
            if reply and reply[0][1]:
                messages = reply[0][1]
                for eid, _fields in messages:
                    arrivals[eid] = now
                client.xack(key, "ceiling", *[m[0] for m in messages])
            if not report.empty():  # the producer is done: stop once everything is read
                if len(arrivals) >= total:
                    break
            elif not producer.is_alive():
                raise RuntimeError(f"ceiling producer died (exit {producer.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError("ceiling latency run did not finish in time")
        stamps, _took, lag = report.get()
    finally:
        gc.enable()
        gc.unfreeze()
        if producer.is_alive():
            producer.kill()
        if producer.pid is not None:
            producer.join(timeout=5)
        client.delete(key)
        client.close()
    t0 = stamps[0][1] + 0.5e9
    latencies = [(arrivals[eid] - st) / 1e6 for eid, st in stamps if st >= t0 and eid in arrivals]
    p50, p99 = latency_summary(latencies)
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "rate": round(rate, 1),
        "samples": len(latencies),
        "producer_lag_p99_max_ms": lag,
    }


def _timeline(
    stamps: Sequence[tuple[bytes, int]], arrivals: dict[bytes, int], step_s: float = 0.25
) -> list[float | None]:
    """Median latency (ms) of the entries sent in each ``step_s`` of the run: flat = keeping up."""
    if not stamps:
        return []
    t0 = stamps[0][1]
    buckets: dict[int, list[float]] = {}
    for eid, st in stamps:
        if eid in arrivals:
            buckets.setdefault(int((st - t0) / 1e9 / step_s), []).append((arrivals[eid] - st) / 1e6)
    last = max(buckets, default=-1)
    return [round(percentile(buckets[i], 50), 2) if i in buckets else None for i in range(last + 1)]


def _last_id(client: redis.Redis, keys: Keys) -> bytes | None:
    """ID of the newest entry of the input stream."""
    newest: Any = client.execute_command("XREVRANGE", keys.input, "+", "-", "COUNT", 1)
    return newest[0][0] if newest else None


def _field(flat: Sequence[bytes], name: bytes) -> bytes | None:
    for i in range(0, len(flat) - 1, 2):
        if flat[i] == name:
            return flat[i + 1]
    return None


# -- profile ----------------------------------------------------------------------------------

#: Buckets of a worker's time, matched leaf-first against py-spy's frames (first match wins).
PROFILE_BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting for Redis (socket)", ("recv (", "recv_into (", "read_from_socket (", "select (")),
    ("sending commands", ("sendall (", "pack_command", "send_packed_command")),
    ("evaluating waves", ("run_wave (",)),
    ("decoding entries", ("decode_entry (", "Engine._decode (")),
    ("building commit arguments", ("_commit_args (",)),
    ("after-commit bookkeeping (metrics, cache)", ("Engine._committed (", "Engine._settle (")),
    ("prefetching slot state", ("Engine._prefetch (",)),
    ("parsing replies", ("read_response (",)),
)


def profile_buckets(raw_path: str) -> list[tuple[str, float]]:
    """Share of py-spy samples (``--format raw``) per bucket of :data:`PROFILE_BUCKETS`."""
    counts: dict[str, int] = {}
    total = 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")[::-1]
        bucket = next(
            (
                name
                for frame in frames
                for name, keys in PROFILE_BUCKETS
                if any(k in frame for k in keys)
            ),
            "other",
        )
        counts[bucket] = counts.get(bucket, 0) + int(count)
        total += int(count)
    return sorted(((k, v / max(1, total)) for k, v in counts.items()), key=lambda kv: -kv[1])


def profile(name: str, entries: int, seconds: int, out: str, batch: int = 500) -> None:
    """Sample one worker draining ``entries`` prefilled entries of workload ``name`` with
    py-spy (``pip install py-spy``; idle samples included, so waiting on Redis shows)."""
    from benchmarks import workloads
    from streamcalc.embedded import EmbeddedRedis

    spy = Path(sys.executable).with_name("py-spy")
    with EmbeddedRedis() as server:
        client = client_for(server.url)
        wl = workloads.build(name, entries)
        prefill(client, "bench:template:profile", wl)
        ns = new_ns("profile")
        keys = Keys(ns)
        load_graph(client, ns, wl)
        client.execute_command("COPY", "bench:template:profile", keys.input)
        with Workers(server.url, ns, 1, batch=batch, block_ms=50) as procs:
            while (s := _sample(client, keys.input)) is None or s.last_id == b"0-0":
                procs.check_alive()
                time.sleep(0.001)
            subprocess.run(
                [str(spy), "record", "--pid", str(procs.pids[0]), "--duration", str(seconds),
                 "--rate", "250", "--idle", "--nonblocking", "--format", "raw", "-o", out],
                check=True, capture_output=True,
            )  # fmt: skip
            s = _sample(client, keys.input)
            if s is not None and s.last_id == _last_id(client, keys) and s.pending == 0:
                print("warning: the stream drained before the profile ended", file=sys.stderr)
    for bucket, share in profile_buckets(out):
        print(f"{share * 100:5.1f}%  {bucket}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Profile one streamcalc worker with py-spy.")
    parser.add_argument("command", choices=["profile"])
    parser.add_argument("workload", choices=["seed", "wide", "deep"])
    parser.add_argument("--entries", type=int, default=400_000)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--out", default="profile.raw")
    opts = parser.parse_args()
    profile(opts.workload, opts.entries, opts.seconds, opts.out)
