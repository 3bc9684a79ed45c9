"""Closed-loop throughput: N ``streamcalc worker`` processes drain prefilled streams.

The workload's entries are XADDed once into a template stream per partition (one for an
unpartitioned workload) and ``COPY``-ed into each partition's input of a fresh namespace; the
graph is loaded (with the workload's partitions); N worker processes start
(:class:`benchmarks.processes.Workers`). Workers own partitions through leases, so a
poller reads every partition's ``XINFO GROUPS`` and lease and the group's members every 1-5 ms:
the measured window runs from the moment all N workers are members and every partition is
leased to the worker it is dealt to (round-robin over the sorted names; with more workers than
partitions the rest stand by) to the moment every partition's group was handed its last entry
and has nothing pending. Entries done before the window (while the first workers held more than
their share) are subtracted. Worker CPU, Redis CPU (:class:`benchmarks.processes.CpuWindow`)
and Redis command statistics (``INFO commandstats``, reset before the run) are sampled over the
same window; the workers' counters (commit conflicts, rebalances) are read off their
``/metrics`` at the end. Afterwards every value is checked (:mod:`benchmarks.verify`) in stream
order per partition, which is each key's order.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from benchmarks.common import Result
from benchmarks.processes import CpuWindow, Workers, rss_and_peak_mb
from benchmarks.streams import (
    Prefilled,
    Progress,
    client_for,
    copy_stream,
    delete_namespace,
    load_graph,
    new_ns,
    partition_keys,
    progress,
)
from benchmarks.verify import OutRows, read_out, verify
from benchmarks.workloads import Workload
from streamcalc.cluster import masters


def _commandstats(client: redis.Redis) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for shard in masters(client):  # a cluster: summed over its shards
        stats: Any = shard.info("commandstats")
        for name, row in stats.items():
            cmd = out.setdefault(name.removeprefix("cmdstat_"), {"calls": 0.0, "usec": 0.0})
            cmd["calls"] += float(row["calls"])
            cmd["usec"] += float(row["usec"])
    return out


def _used_memory(client: redis.Redis) -> int:
    return sum(int(shard.info("memory")["used_memory"]) for shard in masters(client))


#: Commands a worker sends itself, one round trip each (the rest run inside commit.lua or
#: inside MULTI/EXEC, and count in EVALSHA's / EXEC's time).
TOP_LEVEL_COMMANDS = ("evalsha", "eval", "xreadgroup", "xautoclaim", "exec", "hgetall")
HARNESS_COMMANDS = ("xinfo|groups", "info", "config|resetstat", "ping", "client|setinfo")


def run_closed(
    url: str,
    workload: Workload,
    filled: Prefilled,
    workers: int,
    *,
    batch: int = 500,
    block_ms: int = 50,
    timeout_s: float = 300.0,
    stream_expected: int | None = None,
) -> Result:
    """One closed-loop run of ``workers`` worker processes over the prefilled templates."""
    client = client_for(url)
    ns = new_ns(f"{workload.name}-w{workers}")
    parts = partition_keys(ns, workload)
    n = filled.count
    last_ids = [ids[-1] for ids in filled.ids]
    try:
        memory0 = _used_memory(client)
        load_graph(client, ns, workload)
        for template, keys in zip(filled.templates, parts, strict=True):
            copy_stream(client, template, keys.input)
        client.config_resetstat()
        with Workers(url, ns, workers, batch=batch, block_ms=block_ms, metrics=True) as procs:
            launched = time.perf_counter()
            first: Progress | None = None
            begin: Progress | None = None
            deadline = time.monotonic() + timeout_s
            cpu = CpuWindow(client, procs.pids)
            while True:
                s = progress(client, ns, parts)
                if first is None and s.started():
                    first = s
                    cpu.restart()
                if begin is None and s.balanced(procs.consumers):
                    begin = s
                    if first is not None:  # else the window starts at the first delivery
                        cpu.restart()
                if s.drained(last_ids):
                    end = s
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{workload.name} x{workers}: not drained within {timeout_s:.0f} s "
                        f"({s.done} of {n} entries done)"
                    )
                procs.check_alive()
                time.sleep(0.001 if begin is None else 0.005)
            used = cpu.stop()
            rss, hwm = rss_and_peak_mb(procs.pids)
            stats = _commandstats(client)
            counters = procs.scrape()
            procs.stop()
            log_lines = procs.log_lines()
            exit_codes = procs.exit_codes
        assert first is not None
        balanced = begin is not None
        if begin is None or first.t > begin.t:
            # drained before the partitions were dealt out, or balanced before the first
            # delivery: measure from the first delivery
            begin = first
        done_before = begin.done
        measured = n - done_before
        seconds = max(1e-9, end.t - begin.t)
        out_len = sum(int(client.xlen(keys.output)) for keys in parts)
        dead_len = sum(int(client.xlen(keys.dead)) for keys in parts)
        memory_abs = _used_memory(client)
        rows = OutRows()
        for keys, ids, index in zip(parts, filled.ids, filled.index, strict=True):
            read_out(client, keys.output, dict(zip(ids, index, strict=True)), rows)
    finally:
        delete_namespace(client, ns, workload.partitions)
        client.close()
    # each partition has one owner at a time: the serial order is the stream order
    check = verify(rows, workload.entries[:n], workload.model, stream_expected=stream_expected)
    worker_cpu = used["workers_s"]
    redis_cpu = used["redis_s"]
    rate = measured / seconds
    derived_rate = out_len * measured / n / seconds
    extra: dict[str, Any] = {
        "batch": batch,
        "partitions": workload.partitions,
        "startup_s": round(begin.t - launched, 3),
        "all_workers_started": balanced,
        "balanced": balanced,
        "all_workers_started_after_entries": done_before,
        "first_delivery_to_end_s": round(end.t - first.t, 4),
        "owners_at_start": begin.owners,
        "worker_cpu_s": round(worker_cpu, 3),
        "worker_cpu_us_per_entry": round(worker_cpu / measured * 1e6, 2),
        "worker_cpu_util": round(worker_cpu / seconds / workers, 3),
        "redis_cpu_s": round(redis_cpu, 3),
        "redis_cpu_us_per_entry": round(redis_cpu / measured * 1e6, 2),
        "redis_cpu_util": round(redis_cpu / seconds, 3),
        "redis_cpu_s_per_shard": [round(s, 3) for s in used["redis_shards_s"]],
        "entries_per_cpu_s": round(measured / max(1e-9, worker_cpu + redis_cpu), 1),
        "wall_us_per_entry": round(seconds / measured * 1e6, 2),
        "harness_cpu_util": used["harness_util"],
        "other_processes_cpu_util": used["other_util"],
        "commit_conflicts": int(counters["streamcalc_commit_conflicts_total"]),
        "rebalances": int(counters["streamcalc_rebalances_total"]),
        "late_readings_metric": int(counters["streamcalc_late_readings_total"]),
        "claimed": int(counters["streamcalc_claimed_total"]),
        "partitions_owned_at_end": int(counters["streamcalc_partitions_owned"]),
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
