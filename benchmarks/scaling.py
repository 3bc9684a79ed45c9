"""Workers and partitions: what N workers do against one, and the keyed-scaling targets.

Every streamcalc row of the closed loop is set against the 1-worker row of its workload:
entries/s, late %, commit conflicts, rebalances and work per CPU second (entries per second of
worker + Redis CPU, so that a box with 2 cores still shows whether more workers would scale on
more cores). The targets:

- *keyed*, 1 worker: >= 85 % of *seed*'s 1-worker entries/s in the same run;
- late % = 0 and commit conflicts = 0 with any number of workers, every workload (each
  partition has one owner at a time);
- *keyed* work per CPU second with 2 and with 4 workers: >= 90 % of that with 1 worker.

The unpartitioned workloads (*seed*, *wide*, *deep*: ``P = 1``) have one owner whatever the
number of workers; the others stand by, so their N-worker rows show about one worker's rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.common import Result

KEYED_VS_SEED_PCT = 85.0
CPU_EFFICIENCY_PCT = 90.0


def late_pct(r: Result) -> float | None:
    """Derived values one worker in stream order makes that this run did not, in %."""
    check = r.extra.get("check") or {}
    exp, got = check.get("expected_stream_order"), check.get("produced")
    if r.system != "streamcalc" or not exp or got is None:
        return None
    return round((1 - got / exp) * 100, 2)


def _rows(results: Sequence[Result]) -> list[Result]:
    return [r for r in results if r.system == "streamcalc" and "error" not in r.extra]


def _one(results: Sequence[Result], workload: str, workers: int) -> Result | None:
    return next(
        (r for r in _rows(results) if r.workload == workload and r.workers == workers), None
    )


def _pct(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b * 100, 1)


def _per_cpu(r: Result | None) -> float | None:
    return None if r is None else r.extra.get("entries_per_cpu_s")


def scaling_rows(results: Sequence[Result]) -> list[dict[str, Any]]:
    """One row per streamcalc closed-loop row, with its ratios to the workload's 1 worker."""
    out: list[dict[str, Any]] = []
    for r in _rows(results):
        one = _one(results, r.workload, 1)
        e = r.extra
        out.append(
            {
                "workload": r.workload,
                "partitions": e.get("partitions", 1),
                "workers": r.workers,
                "entries_per_s": r.entries_per_s,
                "pct_of_1_worker": _pct(r.entries_per_s, one and one.entries_per_s),
                "late_pct": late_pct(r),
                "late_pct_max_all_runs": e.get("late_pct_max_all_runs", late_pct(r)),
                "commit_conflicts_all_runs": e.get(
                    "commit_conflicts_all_runs", e.get("commit_conflicts")
                ),
                "rebalances": e.get("rebalances"),
                "entries_per_cpu_s": _per_cpu(r),
                "cpu_pct_of_1_worker": _pct(_per_cpu(r), _per_cpu(one)),
                "worker_cpu": round(e.get("worker_cpu_util", 0) * r.workers, 2),
                "redis_cpu": e.get("redis_cpu_util"),
                "others_cpu": e.get("other_processes_cpu_util"),
                "balanced": e.get("balanced"),
                "startup_s": e.get("startup_s"),
                "done_before_window": e.get("all_workers_started_after_entries"),
            }
        )
    return out


def _target(label: str, op: str, bound: float, value: float | None, **more: Any) -> dict:
    if value is None:
        return {"target": label, "op": op, "bound": bound, "value": None, "met": False, **more}
    met = value >= bound if op == ">=" else value == bound
    factor = round(value / bound, 3) if op == ">=" and bound else None
    return {"target": label, "op": op, "bound": bound, "value": value, "met": met,
            "factor_of_target": factor, **more}  # fmt: skip


def scaling_targets(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The keyed-scaling targets (see the module doc), in the shape of ``report.check_targets``."""
    rows = scaling_rows(results)
    out: list[dict[str, Any]] = []
    keyed1, seed1 = _one(results, "keyed", 1), _one(results, "seed", 1)
    if keyed1 is not None:
        value = _pct(keyed1.entries_per_s, seed1 and seed1.entries_per_s)
        out.append(_target("keyed entries/s, 1 worker, % of seed's", ">=", KEYED_VS_SEED_PCT,
                           value, workers=1))  # fmt: skip
    if rows:
        lates = [r["late_pct_max_all_runs"] for r in rows if r["late_pct_max_all_runs"] is not None]
        worst = max(lates, key=abs) if lates else None
        out.append(_target("late % with any number of workers (every workload, every run)",
                           "==", 0, worst, workers=max(r["workers"] for r in rows)))  # fmt: skip
        known = [c for r in rows if (c := r["commit_conflicts_all_runs"]) is not None]
        total = sum(known) if known else None
        out.append(_target("commit conflicts with any number of workers (every run)", "==", 0,
                           total, workers=max(r["workers"] for r in rows)))  # fmt: skip
    for r in rows:
        if r["workload"] == "keyed" and r["workers"] > 1:
            label = f"keyed work per CPU second, {r['workers']} workers, % of 1 worker's"
            out.append(_target(label, ">=", CPU_EFFICIENCY_PCT, r["cpu_pct_of_1_worker"],
                               workers=r["workers"]))  # fmt: skip
    return out


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return format(v, spec)


def scaling_table(results: Sequence[Result]) -> str:
    """Workers against one worker, per workload (the rows of :func:`scaling_rows`)."""
    from benchmarks.report import render_table

    headers = [
        "workload", "P", "workers", "entries/s", "% of 1 worker", "late %", "conflicts",
        "rebalances", "entries/CPU s", "% of 1 worker/CPU", "worker CPU", "Redis CPU",
        "others' CPU", "balanced", "start s", "done before",
    ]  # fmt: skip
    body = [
        [
            r["workload"],
            str(r["partitions"]),
            str(r["workers"]),
            _fmt(r["entries_per_s"], ",.0f"),
            _fmt(r["pct_of_1_worker"], ".1f"),
            _fmt(r["late_pct_max_all_runs"], ".1f"),
            _fmt(r["commit_conflicts_all_runs"], "d"),
            _fmt(r["rebalances"], "d"),
            _fmt(r["entries_per_cpu_s"], ",.0f"),
            _fmt(r["cpu_pct_of_1_worker"], ".1f"),
            _fmt(r["worker_cpu"], ".2f"),
            _fmt(r["redis_cpu"], ".2f"),
            _fmt(r["others_cpu"], ".2f"),
            _fmt(r["balanced"], ""),
            _fmt(r["startup_s"], ".2f"),
            _fmt(r["done_before_window"], ",d"),
        ]
        for r in scaling_rows(results)
    ]
    return render_table(headers, body)
