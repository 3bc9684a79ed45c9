"""Smoke test of the benchmark harness: ``benchmarks/run.py --quick`` runs and loses nothing.

Benchmarks are not tests: this only checks that the harness works end to end (own Redis,
Celery baseline, ceiling, every workload, the keyed one on 8 partitions) and that streamcalc
produced every derived value the model expects, with none late and no commit conflict (one
owner per partition). Its speed is not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(330)
def test_quick_benchmark_runs_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["nproc"] >= 1
    rows = doc["results"]
    systems = {(r["workload"], r["system"]) for r in rows}
    assert ("seed", "baseline-celery") in systems
    assert ("seed", "ceiling") in systems
    for workload in ("seed", "wide", "deep", "keyed"):
        assert (workload, "streamcalc") in systems
    streamcalc = [r for r in rows if r["system"] == "streamcalc"]
    assert {r["workers"] for r in streamcalc} >= {1, 2}
    for r in streamcalc:
        where = f"{r['workload']} x{r['workers']}"
        assert "error" not in r["extra"], where
        assert r["entries_per_s"] > 0, where
        assert r["lost"] == 0, (where, r["extra"].get("check"))
        assert r["extra"]["bad"] == 0, (where, r["extra"].get("check"))
        assert r["extra"]["late_pct_max_all_runs"] == 0, (where, r["extra"].get("check"))
        assert r["extra"]["commit_conflicts_all_runs"] == 0, where
        assert r["extra"]["partitions"] == (8 if r["workload"] == "keyed" else 1), where
    assert "seed vs baseline" in proc.stdout  # the table was printed
