"""Closed-loop throughput: N ``streamcalc worker`` processes drain a prefilled stream.

The workload's entries are XADDed once into a template stream and ``COPY``-ed into
``sc:{NS}:in`` of a fresh namespace; the graph is loaded; N worker processes start
(:class:`benchmarks.processes.Workers`). A poller reads ``XINFO GROUPS`` every millisecond:
the measured window runs from the moment all N consumers are in the group (one has read its
first batch when it appears) to the moment the group's last-delivered-id is the last entry and
nothing is pending. Entries done before the window (a fast starter) are subtracted. Worker CPU,
Redis CPU (:class:`benchmarks.processes.CpuWindow`) and Redis command statistics (``INFO
commandstats``, reset before the run) are sampled over the same window. Afterwards every value
is checked (:mod:`benchmarks.verify`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from benchmarks.common import Result
from benchmarks.processes import CpuWindow, Workers, rss_and_peak_mb
from benchmarks.streams import (
    Sample,
    client_for,
    delete_namespace,
    group_sample,
    load_graph,
    new_ns,
)
from benchmarks.verify import read_out, verify
from benchmarks.workloads import Workload
from streamcalc.keys import Keys


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
                s = group_sample(client, keys.input)
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
            rss, hwm = rss_and_peak_mb(procs.pids)
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
        rows,
        workload.entries[:n],
        workload.model,
        batch=None if workers == 1 else batch,
        stream_expected=stream_expected,
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
