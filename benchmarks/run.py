"""Benchmark harness: streamcalc on the *seed*, *wide* and *deep* workloads, next to the seed's
Celery design (baseline a) and the bare Redis Streams ceiling (b), in one run.

    .venv/bin/python benchmarks/run.py [--quick] [--json PATH]

Starts its own redis-server (never the shared one), runs everything, prints one table and the
ratios of every streamcalc figure to (a) and (b), checks the targets of the performance issue,
and writes the same as JSON. ``--quick`` (smoke test, < 2 minutes) runs fewer entries, 1 and 2
workers and no repeats; the full run (< 15 minutes) runs 1, 2 and 4 workers, three times each,
and reports the run with the median entries/s. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``streamcalc`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec
import redis

from benchmarks import ceiling, closed_loop, latency, processes, streams, verify, workloads
from benchmarks.common import Result, exit_on_sigterm

WORKLOADS = ("seed", "wide", "deep")


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of everything one run does."""

    name: str
    entries: dict[str, int]
    workers: tuple[int, ...]
    repeats: int
    latency_s: float
    latency_loads: tuple[float, ...]  # fractions of the 1-worker maximum; the first is the headline
    sweep_derived: tuple[int, ...]  # graph-size sweep: *wide* with this many derived nodes
    sweep_entries: int
    baseline_events: int
    baseline_open_loop_s: float
    baseline_idle_samples: int


QUICK = Plan(
    name="quick",
    entries={"seed": 30_000, "wide": 2_000, "deep": 8_000},
    workers=(1, 2),
    repeats=1,
    latency_s=1.5,
    latency_loads=(0.5,),
    sweep_derived=(),
    sweep_entries=0,
    baseline_events=500,
    baseline_open_loop_s=2.0,
    baseline_idle_samples=5,
)
FULL = Plan(
    name="full",
    entries={"seed": 200_000, "wide": 10_000, "deep": 60_000},
    workers=(1, 2, 4),
    repeats=3,
    latency_s=5.0,
    latency_loads=(0.5, 0.25),
    sweep_derived=(250, 500, 1000, 2000),
    sweep_entries=6_000,
    baseline_events=2_000,
    baseline_open_loop_s=5.0,
    baseline_idle_samples=20,
)

#: The targets of the performance issue: (label, workload, metric, bound, how the row is chosen)
TARGETS: tuple[tuple[str, str, str, float, str], ...] = (
    ("seed entries/s, 1 worker", "seed", "entries_per_s", 50_000, "w1"),
    ("seed derived values/s, 1 worker", "seed", "derived_per_s", 100_000, "w1"),
    ("seed vs baseline (a), 1 worker", "seed", "x_baseline", 300, "w1"),
    ("seed vs ceiling (b), 1 worker", "seed", "pct_ceiling", 30, "w1"),
    ("wide readings/s, 1 worker", "wide", "readings_per_s", 150_000, "w1"),
    ("wide readings/s, best worker count", "wide", "readings_per_s", 150_000, "best"),
    ("deep entries/s, 1 worker", "deep", "entries_per_s", 20_000, "w1"),
    ("deep entries/s, best worker count", "deep", "entries_per_s", 20_000, "best"),
    ("seed p99 latency at half load (ms)", "seed", "latency_p99_ms", 5.0, "max"),
    ("wide p99 latency at half load (ms)", "wide", "latency_p99_ms", 5.0, "max"),
    ("deep p99 latency at half load (ms)", "deep", "latency_p99_ms", 5.0, "max"),
)


# -- machine ---------------------------------------------------------------------------------


def machine_info(client: redis.Redis) -> dict[str, Any]:
    """What ran: CPUs, model, memory, kernel, Python, redis-server, load."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    server: Any = client.info("server")
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": server.get("redis_version"),
        "redis_malloc": server.get("mem_allocator"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_revision() -> str | None:
    """Commit (and ``+dirty``) of the tree being measured, when it is a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return f"{rev}{'+dirty' if dirty else ''}" if rev else None


# -- running -----------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def error_row(workload: str, system: str, workers: int, exc: BaseException) -> Result:
    """A row for a run that failed: zero rates, the error in ``extra``."""
    return Result(
        workload=workload,
        system=system,
        workers=workers,
        entries=0,
        seconds=0.0,
        entries_per_s=0.0,
        readings_per_s=0.0,
        derived_per_s=0.0,
        lost=0,
        extra={"error": f"{type(exc).__name__}: {exc}"},
    )


def median_run(runs: Sequence[Result]) -> Result:
    """The run with the median entries/s, carrying every run's figures and summed losses."""
    ordered = sorted(runs, key=lambda r: r.entries_per_s)
    pick = ordered[(len(ordered) - 1) // 2]
    row = msgspec.structs.replace(pick, extra=dict(pick.extra))
    row.lost = sum(r.lost for r in runs)
    row.extra["runs"] = len(runs)
    row.extra["runs_entries_per_s"] = [r.entries_per_s for r in runs]
    row.extra["runs_derived_per_s"] = [r.derived_per_s for r in runs]
    row.extra["bad"] = sum(_bad(r) for r in runs)
    row.extra["dead_letters_all_runs"] = sum(int(r.extra.get("dead_letters", 0)) for r in runs)
    row.extra["failed_worker_exits_all_runs"] = sum(
        1 for r in runs for code in r.extra.get("worker_exit_codes", []) if code != 0
    )
    if len(runs) > 1:
        rates = [r.entries_per_s for r in runs]
        row.extra["entries_per_s_spread_pct"] = round(
            (max(rates) - min(rates)) / statistics.median(rates) * 100, 1
        )
    return row


def _bad(r: Result) -> int:
    check = r.extra.get("check") or {}
    return (
        int(check.get("wrong", 0))
        + int(check.get("unexpected", 0))
        + int(check.get("duplicates", 0))
    )


def run_streamcalc(
    url: str,
    plan: Plan,
    names: Sequence[str],
    batch: int,
    client: redis.Redis,
    ceilings: dict[str, Result],
) -> tuple[list[Result], bool]:
    """Every workload x worker count (median of repeats), its latency run, and its ceiling
    (closed loop, and latency at the same offered rate as streamcalc's latency run)."""
    rows: list[Result] = []
    failed = False
    for name in names:
        n = plan.entries[name]
        log(f"{name}: building {n} entries, filling the template stream")
        wl = workloads.build(name, n)
        template = f"bench:template:{name}"
        client.delete(template)
        ids = streams.prefill(client, template, wl)
        expected = verify.stream_order_count(wl.entries[:n], wl.model)
        try:
            if name != "seed":  # the seed's ceiling is benchmarks.ceiling (run by main)
                log(f"{name}: Streams ceiling (XREADGROUP + XACK, no computation)")
                ceilings[name] = _guard(
                    lambda: ceiling.run_stream_ceiling(url, wl, template, n, batch=batch),  # noqa: B023
                    name,
                    "ceiling",
                )
            for workers in plan.workers:
                runs: list[Result] = []
                for rep in range(plan.repeats):
                    log(f"{name}: {workers} worker(s), run {rep + 1}/{plan.repeats}")
                    try:
                        runs.append(
                            closed_loop.run_closed(
                                url,
                                wl,
                                template,
                                ids,
                                workers,
                                batch=batch,
                                timeout_s=120 + n / 100,
                                stream_expected=expected,
                            )
                        )
                    except Exception as exc:
                        log(f"{name}: {workers} worker(s) failed: {exc}")
                        failed = True
                        runs.append(error_row(name, "streamcalc", workers, exc))
                    finally:
                        processes.kill_all_workers()
                rows.append(median_run(runs))
            one = next((r for r in rows if r.workload == name and r.workers == 1), None)
            if one is not None and one.entries_per_s > 0 and plan.latency_s > 0:
                failed = _latency(url, wl, plan, batch, one, ceilings.get(name)) or failed
        finally:
            client.delete(template)
    return rows, failed


def _latency(
    url: str, wl: workloads.Workload, plan: Plan, batch: int, one: Result, ceiling: Result | None
) -> bool:
    """Open-loop latency runs with 1 worker at each load of the plan (fractions of ``one``'s
    entries/s); the median p50/p99 over the repeats at the first load go into ``one``.

    Returns True when a run failed.
    """
    failed = False
    by_load: list[dict[str, Any]] = []
    for load in plan.latency_loads:
        rate = one.entries_per_s * load
        runs: list[dict[str, Any]] = []
        for rep in range(plan.repeats):
            log(f"{wl.name}: open-loop latency, 1 worker, {rate:.0f} entries/s, run {rep + 1}")
            try:
                runs.append(
                    latency.run_latency(url, wl, rate=rate, seconds=plan.latency_s, batch=batch)
                )
            except Exception as exc:
                log(f"{wl.name}: latency run failed: {exc}")
                one.extra["latency_error"] = f"{type(exc).__name__}: {exc}"
                failed = True
            finally:
                processes.kill_all_workers()
        if not runs:
            continue
        p50 = round(statistics.median(r["p50_ms"] for r in runs), 3)
        p99 = round(statistics.median(r["p99_ms"] for r in runs), 3)
        one.lost += sum(r["lost"] for r in runs)
        one.extra["bad"] = one.extra.get("bad", 0) + sum(_bad_check(r["check"]) for r in runs)
        by_load.append({"load": load, "rate": round(rate, 1), "p50_ms": p50, "p99_ms": p99,
                        "runs": runs})  # fmt: skip
        if load == plan.latency_loads[0]:
            one.latency_p50_ms, one.latency_p99_ms = p50, p99
            _ceiling_latency(url, wl, plan, rate, batch, ceiling)
    one.extra["latency"] = by_load
    return failed


def _ceiling_latency(
    url: str, wl: workloads.Workload, plan: Plan, rate: float, batch: int, row: Result | None
) -> None:
    """The ceiling's latency at streamcalc's offered rate, into the ceiling's row."""
    if row is None or "error" in row.extra:
        return
    log(f"{wl.name}: ceiling latency at the same {rate:.0f} entries/s")
    try:
        if wl.name == "seed":
            p50, p99 = ceiling.run_ceiling_latency(
                url, rate=rate, seconds=plan.latency_s, batch=batch
            )
        else:
            lat = ceiling.run_stream_ceiling_latency(
                url, wl, rate=rate, seconds=plan.latency_s, batch=batch
            )
            p50, p99 = lat["p50_ms"], lat["p99_ms"]
    except Exception as exc:
        log(f"{wl.name}: ceiling latency failed: {exc}")
        row.extra["latency_error"] = f"{type(exc).__name__}: {exc}"
        return
    row.latency_p50_ms, row.latency_p99_ms = p50, p99
    row.extra["latency_rate"] = round(rate, 1)


def run_sweep(url: str, plan: Plan, batch: int, client: redis.Redis) -> tuple[list[Result], bool]:
    """Graph size: *wide* (1,000 inputs, 10 readings an entry) with more and more derived
    nodes, 1 worker, one run each."""
    rows: list[Result] = []
    failed = False
    for derived in plan.sweep_derived:
        wl = workloads.wide(plan.sweep_entries, derived=derived)
        wl.name = f"wide-{derived}"
        template = f"bench:template:{wl.name}"
        log(f"graph-size sweep: {wl.name}, 1 worker")
        try:
            ids = streams.prefill(client, template, wl)
            rows.append(closed_loop.run_closed(url, wl, template, ids, 1, batch=batch))
        except Exception as exc:
            log(f"{wl.name} failed: {exc}")
            failed = True
            rows.append(error_row(wl.name, "streamcalc", 1, exc))
        finally:
            processes.kill_all_workers()
            client.delete(template)
    return rows, failed


def sweep_table(rows: Sequence[Result]) -> str:
    """Cost against graph size: per entry and per derived value."""
    headers = [
        "workload", "derived/entry", "entries/s", "derived/s", "worker us/entry",
        "Redis us/entry", "worker us/derived", "Redis us/derived", "lost",
    ]  # fmt: skip
    out: list[list[str]] = []
    for r in rows:
        e = r.extra
        per = (e.get("out_entries") or 0) / max(1, r.entries)
        w, rd = e.get("worker_cpu_us_per_entry"), e.get("redis_cpu_us_per_entry")
        out.append(
            [
                r.workload,
                _fmt(per, ".1f"),
                _fmt(r.entries_per_s),
                _fmt(r.derived_per_s),
                _fmt(w, ".1f"),
                _fmt(rd, ".1f"),
                _fmt(w / per if w and per else None, ".2f"),
                _fmt(rd / per if rd and per else None, ".2f"),
                _fmt(r.lost),
            ]
        )
    return render_table(headers, out)


def _bad_check(check: dict[str, Any]) -> int:
    return int(check["wrong"]) + int(check["unexpected"]) + int(check["duplicates"])


def run_seed_ceiling(url: str, plan: Plan, batch: int) -> Result:
    """Baseline (b) for *seed*: benchmarks.ceiling, closed loop (latency comes later, at
    streamcalc's offered rate)."""
    return ceiling.run_ceiling(url, entries=plan.entries["seed"], batch=batch, with_ts=True)


def run_celery_baseline(url: str, plan: Plan) -> Result:
    """Baseline (a): the seed's Celery + python-redis-lock design (benchmarks.baseline)."""
    from benchmarks.baseline.run import run_baseline

    return run_baseline(
        url,
        events=plan.baseline_events,
        open_loop_rate=None,
        concurrency=2,
        timeout_s=120.0,
        open_loop_seconds=plan.baseline_open_loop_s,
        idle_samples=plan.baseline_idle_samples,
    )


# -- ratios, targets, table ------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(
    rows: Sequence[Result], baseline: Result | None, ceilings: dict[str, Result]
) -> list[dict[str, Any]]:
    """Every streamcalc figure against baseline (a) and ceiling (b).

    Throughputs: streamcalc / other (higher is better). Latencies: other / streamcalc for (a)
    (how many times faster), streamcalc / ceiling for (b) (how many times the bare minimum).
    """
    out: list[dict[str, Any]] = []
    for r in rows:
        if r.system != "streamcalc":
            continue
        b = ceilings.get(r.workload) or ceilings.get("seed")
        out.append(
            {
                "workload": r.workload,
                "workers": r.workers,
                "x_baseline_entries": _ratio(r.entries_per_s, baseline and baseline.entries_per_s),
                "x_baseline_readings": _ratio(
                    r.readings_per_s, baseline and baseline.readings_per_s
                ),
                "x_baseline_derived": _ratio(r.derived_per_s, baseline and baseline.derived_per_s),
                "x_baseline_p50": _ratio(baseline and baseline.latency_p50_ms, r.latency_p50_ms),
                "x_baseline_p99": _ratio(baseline and baseline.latency_p99_ms, r.latency_p99_ms),
                "pct_ceiling_entries": _pct(r.entries_per_s, b and b.entries_per_s),
                "pct_ceiling_readings": _pct(r.readings_per_s, b and b.readings_per_s),
                "x_ceiling_p50": _ratio(r.latency_p50_ms, b and b.latency_p50_ms),
                "x_ceiling_p99": _ratio(r.latency_p99_ms, b and b.latency_p99_ms),
                "ceiling_workload": b.workload if b else None,
            }
        )
    return out


def _pct(a: float | None, b: float | None) -> float | None:
    r = _ratio(a, b)
    return None if r is None else round(r * 100, 1)


def check_targets(rows: Sequence[Result], ratio_rows: Sequence[dict[str, Any]]) -> list[dict]:
    """Each target of the issue: the measured figure, met or not, and by what factor."""
    by_key = {(r["workload"], r["workers"]): r for r in ratio_rows}
    out: list[dict[str, Any]] = []
    for label, workload, metric, bound, pick in TARGETS:
        cands = [r for r in rows if r.system == "streamcalc" and r.workload == workload]
        if pick == "w1":
            cands = [r for r in cands if r.workers == 1]
        values: list[tuple[float, Result]] = []
        for r in cands:
            if metric == "x_baseline":
                v = by_key.get((workload, r.workers), {}).get("x_baseline_entries")
            elif metric == "pct_ceiling":
                v = by_key.get((workload, r.workers), {}).get("pct_ceiling_entries")
            else:
                v = getattr(r, metric)
            if v is not None:
                values.append((float(v), r))
        if not values:
            out.append({"target": label, "bound": bound, "value": None, "met": False})
            continue
        lower_is_better = metric.startswith("latency")
        # "w1": the one-worker row; "best": the highest throughput; "max": the worst latency
        value, row = (max if pick != "w1" or not lower_is_better else min)(
            values, key=lambda t: t[0]
        )
        met = value <= bound if lower_is_better else value >= bound
        factor = (bound / value if lower_is_better else value / bound) if value else 0.0
        out.append(
            {
                "target": label,
                "op": "<=" if lower_is_better else ">=",
                "bound": bound,
                "value": round(value, 3),
                "workers": row.workers,
                "met": met,
                "factor_of_target": round(factor, 3),
                "late_pct": _late_pct(row),
            }
        )
    lost = sum(r.lost for r in rows if r.system == "streamcalc")
    bad = sum(int(r.extra.get("bad", 0)) for r in rows if r.system == "streamcalc")
    errors = [r for r in rows if r.system == "streamcalc" and "error" in r.extra]
    out.append(
        {
            "target": "zero lost (and zero wrong/duplicate) values in every streamcalc run",
            "op": "==",
            "bound": 0,
            "value": lost + bad,
            "met": lost + bad == 0 and not errors,
            "lost": lost,
            "bad": bad,
            "failed_runs": len(errors),
        }
    )
    return out


def _late_pct(r: Result) -> float | None:
    check = r.extra.get("check") or {}
    exp, got = check.get("expected_stream_order"), check.get("produced")
    if r.system != "streamcalc" or not exp or got is None:
        return None
    return round((1 - got / exp) * 100, 1)


def _fmt(v: Any, spec: str = ",.0f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:  # NaN
        return "-"
    if isinstance(v, str):
        return v
    return format(v, spec)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns: the first two left-aligned, the rest right-aligned."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def main_table(results: Sequence[Result], ratio_rows: Sequence[dict[str, Any]]) -> str:
    """The one table: every row, with x(a) and %(b) for streamcalc rows."""
    by_key = {(r["workload"], r["workers"]): r for r in ratio_rows}
    headers = [
        "workload",
        "system",
        "workers",
        "entries",
        "entries/s",
        "readings/s",
        "derived/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "Redis MiB",
        "lost",
        "bad",
        "late %",
        "x (a)",
        "% (b)",
    ]
    rows: list[list[str]] = []
    for r in results:
        rat = by_key.get((r.workload, r.workers), {}) if r.system == "streamcalc" else {}
        bad = (
            r.extra.get("bad") if r.system == "streamcalc" else r.extra.get("closed_derived_wrong")
        )
        rows.append(
            [
                r.workload,
                r.system + (" (failed)" if "error" in r.extra else ""),
                str(r.workers),
                _fmt(r.entries),
                _fmt(r.entries_per_s),
                _fmt(r.readings_per_s),
                _fmt(r.derived_per_s),
                _fmt(r.latency_p50_ms, ".2f"),
                _fmt(r.latency_p99_ms, ".2f"),
                _fmt(r.worker_rss_mb, ".1f"),
                _fmt(r.redis_memory_mb, ".1f"),
                _fmt(r.lost),
                _fmt(bad),
                _fmt(_late_pct(r), ".1f"),
                _fmt(rat.get("x_baseline_entries"), ",.1f"),
                _fmt(rat.get("pct_ceiling_entries"), ".1f"),
            ]
        )
    return render_table(headers, rows)


def ratio_table(ratio_rows: Sequence[dict[str, Any]]) -> str:
    """Every streamcalc figure as a ratio to (a) and (b)."""
    headers = [
        "workload",
        "workers",
        "entries x(a)",
        "readings x(a)",
        "derived x(a)",
        "p50 (a)/sc",
        "p99 (a)/sc",
        "entries %(b)",
        "readings %(b)",
        "p50 sc/(b)",
        "p99 sc/(b)",
        "(b) of",
    ]
    rows = [
        [
            r["workload"],
            str(r["workers"]),
            _fmt(r["x_baseline_entries"], ",.1f"),
            _fmt(r["x_baseline_readings"], ",.1f"),
            _fmt(r["x_baseline_derived"], ",.0f"),
            _fmt(r["x_baseline_p50"], ",.1f"),
            _fmt(r["x_baseline_p99"], ",.1f"),
            _fmt(r["pct_ceiling_entries"], ".1f"),
            _fmt(r["pct_ceiling_readings"], ".1f"),
            _fmt(r["x_ceiling_p50"], ".1f"),
            _fmt(r["x_ceiling_p99"], ".1f"),
            _fmt(r["ceiling_workload"]),
        ]
        for r in ratio_rows
    ]
    return render_table(headers, rows)


def cost_table(results: Sequence[Result]) -> str:
    """Where the time of one entry goes, per streamcalc row (µs per input entry)."""
    headers = [
        "workload",
        "workers",
        "wall us",
        "worker CPU us",
        "Redis CPU us",
        "EVALSHA us",
        "XREADGROUP us",
        "XADD in Lua us",
        "round trips",
        "worker CPU %",
        "Redis CPU %",
        "others' CPU %",
    ]
    rows: list[list[str]] = []
    for r in results:
        if r.system != "streamcalc" or "error" in r.extra:
            continue
        e = r.extra
        cs = e.get("commandstats_per_entry", {})
        trips = sum(
            cs.get(c, {}).get("calls_per_entry", 0.0) for c in closed_loop.TOP_LEVEL_COMMANDS
        )
        rows.append(
            [
                r.workload,
                str(r.workers),
                _fmt(e.get("wall_us_per_entry"), ".1f"),
                _fmt(e.get("worker_cpu_us_per_entry"), ".1f"),
                _fmt(e.get("redis_cpu_us_per_entry"), ".1f"),
                _fmt(cs.get("evalsha", {}).get("usec_per_entry"), ".1f"),
                _fmt(cs.get("xreadgroup", {}).get("usec_per_entry"), ".1f"),
                _fmt(cs.get("xadd", {}).get("usec_per_entry"), ".1f"),
                _fmt(trips * 1000, ".2f") + "/1k",
                _fmt(e.get("worker_cpu_util", 0) * 100, ".0f"),
                _fmt(e.get("redis_cpu_util", 0) * 100, ".0f"),
                _fmt(e.get("other_processes_cpu_util", 0) * 100, ".0f"),
            ]
        )
    return render_table(headers, rows)


def latency_table(results: Sequence[Result]) -> str:
    """Open-loop latency of every load: median p50/p99 over the repeats, and how the runs went."""
    headers = [
        "workload", "load", "entries/s", "p50 ms", "p99 ms", "p99 of runs", "worker CPU %",
        "Redis CPU %", "harness CPU %", "others' CPU %", "producer lag p99 ms",
    ]  # fmt: skip
    rows: list[list[str]] = []
    for r in results:
        if r.system != "streamcalc" or r.workers != 1:
            continue
        for entry in r.extra.get("latency", []):
            runs = entry["runs"]

            def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
                return statistics.median(float(x[key]) for x in runs)

            rows.append(
                [
                    r.workload,
                    f"{entry['load']:.2f}",
                    _fmt(entry["rate"]),
                    _fmt(entry["p50_ms"], ".2f"),
                    _fmt(entry["p99_ms"], ".2f"),
                    " ".join(_fmt(x["p99_ms"], ".1f") for x in runs),
                    _fmt(med("worker_cpu_util") * 100, ".0f"),
                    _fmt(med("redis_cpu_util") * 100, ".0f"),
                    _fmt(med("harness_and_producer_cpu_util") * 100, ".0f"),
                    _fmt(med("other_processes_cpu_util") * 100, ".0f"),
                    _fmt(statistics.median(x["producer_lag_p99_max_ms"][0] for x in runs), ".1f"),
                ]
            )
    return render_table(headers, rows)


def targets_table(targets: Sequence[dict[str, Any]]) -> str:
    """Targets of the issue: measured value, met or missed, by what factor."""
    headers = ["target", "need", "measured", "workers", "met", "x of target", "late %"]
    rows = [
        [
            t["target"],
            f"{t.get('op', '')} {t['bound']:,}",
            _fmt(t["value"], ",.2f"),
            _fmt(t.get("workers")),
            "yes" if t["met"] else "NO",
            _fmt(t.get("factor_of_target"), ".2f"),
            _fmt(t.get("late_pct"), ".1f"),
        ]
        for t in targets
    ]
    return render_table(headers, rows)


def report(doc: dict[str, Any]) -> str:
    """Everything printed at the end of a run."""
    results = [msgspec.convert(r, Result) for r in doc["results"]]
    m = doc["machine"]
    lines = [
        f"streamcalc benchmark, {doc['plan']} run, {doc['started']}, {doc['duration_s']:.0f} s,"
        f" tree {doc.get('revision') or '?'}",
        f"machine: {m['nproc']} CPUs ({m['cpus_usable']} usable), {m['cpu_model']},"
        f" {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']},"
        f" redis-server {m['redis_server']} (same box), load {m['loadavg_at_start']}",
        "",
        main_table(results, doc["ratios"]),
        "",
        "Rates: per second of the measured window (all N workers running -> group drained);"
        f" streamcalc rows are the median of {doc['repeats']} run(s), lost/bad summed over all.",
        "p50/p99: streamcalc = 1 worker, open-loop producer at half that workload's 1-worker"
        " maximum; ceiling = same entries at that same rate; baseline = half its own maximum.",
        "RSS: sum over the worker processes. Redis MiB: growth of used_memory during the run"
        " (streamcalc: input + output streams + state), absolute for the others.",
        "lost: derived values the model expects but out lacks; bad: wrong, duplicated or"
        " unexpected values (every value of every run is checked against tests/model.py).",
        "late %: derived values (vs one worker in stream order) not produced because, with N"
        " workers, a later block committed first and the earlier block's readings were late"
        " (allowed by SPEC S10; the model replays the actual commit order and agrees).",
        "x (a): entries/s over baseline (a) = the seed's Celery design on *seed*;"
        " % (b): entries/s as % of the ceiling (b) on the same workload's entries.",
        "",
        ratio_table(doc["ratios"]),
        "",
        "Open-loop latency, 1 worker (load = fraction of its closed-loop entries/s; harness ="
        " producer + follower processes, on the same 2 CPUs):",
        latency_table(results),
        "",
        "Cost of one input entry (per entry, measured window):",
        cost_table(results),
        "",
        targets_table(doc["targets"]),
    ]
    if doc.get("sweep"):
        sweep = [msgspec.convert(r, Result) for r in doc["sweep"]]
        lines += ["", "Graph size (wide, 1,000 inputs, 10 readings an entry, 1 worker):"]
        lines.append(sweep_table(sweep))
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (< 2 minutes)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated subset of seed,wide,deep"
    )
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration")
    parser.add_argument("--batch", type=int, default=500, help="worker --batch")
    parser.add_argument("--no-baseline", action="store_true", help="skip the Celery baseline")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every run completed, 1 when one failed."""
    args = parse_args(argv)
    exit_on_sigterm()
    plan = QUICK if args.quick else FULL
    if args.repeats is not None:
        plan = dataclasses.replace(plan, repeats=args.repeats)
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        print(f"unknown workload(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    from streamcalc.embedded import EmbeddedRedis

    started = time.time()
    t0 = time.monotonic()
    failed = False
    results: list[Result] = []
    sweep: list[Result] = []
    ceilings: dict[str, Result] = {}
    baseline: Result | None = None
    server = EmbeddedRedis()
    try:
        server.start()
        url = server.url
        client = streams.client_for(url)
        machine = machine_info(client)
        log(f"redis-server {machine['redis_server']} on {url}; {plan.name} run")
        log("seed: ceiling (b), benchmarks.ceiling")
        ceilings["seed"] = _guard(
            lambda: run_seed_ceiling(url, plan, args.batch), "seed", "ceiling"
        )
        if not args.no_baseline:
            log(f"seed: baseline (a), Celery, {plan.baseline_events} events")
            baseline = _guard(lambda: run_celery_baseline(url, plan), "seed", "baseline-celery")
            client.flushall()
        rows, failed = run_streamcalc(url, plan, names, args.batch, client, ceilings)
        sweep, sweep_failed = run_sweep(url, plan, args.batch, client)
        failed = failed or sweep_failed
        failed = failed or any("error" in r.extra for r in (baseline, *ceilings.values()) if r)
        for name in names:
            if name in ceilings:
                results.append(ceilings[name])
            if name == "seed" and baseline is not None:
                results.append(baseline)
            results += [r for r in rows if r.workload == name]
        client.close()
    finally:
        processes.kill_all_workers()
        server.stop()
    ratio_rows = ratios(results, baseline, ceilings)
    doc: dict[str, Any] = {
        "plan": plan.name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
        "revision": git_revision(),
        "repeats": plan.repeats,
        "workers": list(plan.workers),
        "entries": plan.entries,
        "machine": {**machine, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "results": [msgspec.to_builtins(r) for r in results],
        "sweep": [msgspec.to_builtins(r) for r in sweep],
        "ratios": ratio_rows,
    }
    doc["targets"] = check_targets([*results, *sweep], ratio_rows)
    print(report(doc))
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 1 if failed else 0


def _guard(action: Callable[[], Result], workload: str, system: str) -> Result:
    """Run a baseline; a failure becomes an error row instead of ending the benchmark."""
    try:
        return action()
    except Exception as exc:
        log(f"{workload} {system} failed: {exc}")
        return error_row(workload, system, 1, exc)


if __name__ == "__main__":
    sys.exit(main())
