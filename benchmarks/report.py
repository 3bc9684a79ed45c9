"""What a run reports: ratios to the baselines, the targets of the performance issue, and
the tables printed at the end (from the same document that ``--json`` writes).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import msgspec

from benchmarks.closed_loop import TOP_LEVEL_COMMANDS
from benchmarks.common import Result
from benchmarks.scaling import late_pct, scaling_table

#: The speed and latency targets: (label, workload, metric, bound, how the row is chosen).
#: Latency is open loop at half of the workload's 1-worker maximum; wide is judged by derived
#: values (about 67 an entry: 150,000 readings a second would be 1M values, beyond one Redis).
TARGETS: tuple[tuple[str, str, str, float, str], ...] = (
    ("seed vs baseline (a), 1 worker", "seed", "x_baseline", 300, "w1"),
    ("seed vs ceiling (b), 1 worker", "seed", "pct_ceiling", 55, "w1"),
    ("deep entries/s, 1 worker", "deep", "entries_per_s", 35_000, "w1"),
    ("wide derived values/s, 1 worker", "wide", "derived_per_s", 300_000, "w1"),
    ("seed p50 latency at half load (ms)", "seed", "latency_p50_ms", 1.0, "max"),
    ("seed p99 latency at half load (ms)", "seed", "latency_p99_ms", 5.0, "max"),
    ("deep p99 latency at half load (ms)", "deep", "latency_p99_ms", 5.0, "max"),
    ("wide p99 latency at half load (ms)", "wide", "latency_p99_ms", 20.0, "max"),
)


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
                "late_pct": late_pct(row),
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
                _fmt(late_pct(r), ".1f"),
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
        trips = sum(cs.get(c, {}).get("calls_per_entry", 0.0) for c in TOP_LEVEL_COMMANDS)
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
        "Redis CPU %", "harness CPU %", "producer CPU %", "others' CPU %", "producer lag p99 ms",
        "follower delay p99 ms",
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
                    _fmt(med("producer_cpu_util") * 100, ".0f")
                    if "producer_cpu_util" in runs[0]
                    else "-",
                    _fmt(med("other_processes_cpu_util") * 100, ".0f"),
                    _fmt(statistics.median(x["producer_lag_p99_max_ms"][0] for x in runs), ".1f"),
                    _fmt(med("follower_delay_p99_ms"), ".1f")
                    if runs[0].get("follower_delay_p99_ms") is not None
                    else "-",
                ]
            )
    return render_table(headers, rows)


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
        "Rates: per second of the measured window (partitions dealt out to all N workers ->"
        " every partition's group drained);"
        f" streamcalc rows are the median of {doc['repeats']} run(s), lost/bad summed over all.",
        "p50/p99: streamcalc = 1 worker, open-loop producer at half that workload's 1-worker"
        " maximum; ceiling = same entries at that same rate; baseline = half its own maximum.",
        "RSS: sum over the worker processes. Redis MiB: growth of used_memory during the run"
        " (streamcalc: input + output streams + state), absolute for the others.",
        "lost: derived values the model expects but out lacks; bad: wrong, duplicated or"
        " unexpected values (every value of every run is checked against tests/model.py).",
        "late %: derived values one worker in stream order makes that the run did not (late"
        " readings); each partition has one owner at a time, so it must be 0.",
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
        "Workers against 1 worker (P = partitions; late % and conflicts over every run;"
        " entries/CPU s = entries per second of worker + Redis CPU; CPU columns in CPUs):",
        scaling_table(results),
        "",
        targets_table(doc["targets"]),
    ]
    if doc.get("sweep"):
        sweep = [msgspec.convert(r, Result) for r in doc["sweep"]]
        lines += ["", "Graph size (wide, 1,000 inputs, 10 readings an entry, 1 worker):"]
        lines.append(sweep_table(sweep))
    return "\n".join(lines)
