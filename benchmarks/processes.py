"""Process control for the harness: ``streamcalc worker`` processes and CPU over a window.

:class:`Workers` starts N ``python -m streamcalc worker`` processes (one process each, so each
RSS is readable), each in its own session and killed with the harness even when it dies by
SIGKILL; :func:`kill_all_workers` reaps whatever a failed run left. With ``metrics=True`` each
serves ``/metrics`` on a free port and :meth:`Workers.scrape` reads the counters the harness
reports (commit conflicts, rebalances, late readings). :class:`CpuWindow` samples
the CPU of the workers (``/proc/PID/stat``), redis-server, the harness and everyone else
(``/proc/stat``) over one measured window.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import status_kb
from streamcalc.cluster import masters

REPO_ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Counters read off each worker's ``/metrics`` by :meth:`Workers.scrape` (summed over them).
SCRAPED = (
    "streamcalc_commit_conflicts_total",
    "streamcalc_rebalances_total",
    "streamcalc_late_readings_total",
    "streamcalc_claimed_total",
    "streamcalc_partitions_owned",
)

#: Every worker process started here, so that anything left can be killed on the way out.
_LIVE: set[subprocess.Popen[bytes]] = set()


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

    def __init__(
        self,
        redis_url: str,
        ns: str,
        count: int,
        *,
        batch: int,
        block_ms: int,
        metrics: bool = False,
    ) -> None:
        self.redis_url, self.ns, self.count = redis_url, ns, count
        self.batch, self.block_ms = batch, block_ms
        self.ports: list[int] = [_free_port() for _ in range(count)] if metrics else []
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
            if self.ports:
                cmd += ["--metrics-port", str(self.ports[i])]
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

    @property
    def consumers(self) -> list[str]:
        """The consumer names of the workers."""
        return [f"bench-{i}" for i in range(self.count)]

    def scrape(self) -> dict[str, float]:
        """The :data:`SCRAPED` counters summed over the workers (``metrics=True`` only)."""
        totals = dict.fromkeys(SCRAPED, 0.0)
        for port in self.ports:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                text = reply.read().decode()
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name in totals:
                    totals[name] += float(value)
        return totals

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


def _free_port() -> int:
    """A TCP port free on this machine now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the harness dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all threads) in seconds; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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
    """CPU used over a window by: the workers, redis-server, this process, everyone else.

    ``helpers`` (a producer process, say) count with this process in ``harness_*`` and
    on their own in ``helpers_util``.
    """

    def __init__(
        self, client: redis.Redis, pids: Sequence[int], helpers: Sequence[int] = ()
    ) -> None:
        self.client, self.pids, self.helpers = client, list(pids), list(helpers)
        # every shard's redis-server on a cluster (all on this machine: a local cluster)
        self.redis_pids = [int(s.info("server")["process_id"]) for s in masters(client)]
        self.start = self._now()

    def _now(self) -> tuple[float, list[float], list[float], float, float, float]:
        helpers = sum(cpu_seconds(p) for p in self.helpers)
        return (
            time.perf_counter(),
            [cpu_seconds(p) for p in self.pids],
            [cpu_seconds(p) for p in self.redis_pids],
            time.process_time() + helpers,
            _system_busy_s(),
            helpers,
        )

    def restart(self) -> None:
        """Start the window again from now."""
        self.start = self._now()

    def stop(self) -> dict[str, Any]:
        """CPU seconds and utilisations (in CPUs) since the start."""
        t0, w0, r0, h0, s0, p0 = self.start
        t1, w1, r1, h1, s1, p1 = self._now()
        wall = max(1e-9, t1 - t0)
        shards = [b - a for a, b in zip(r0, r1, strict=True)]
        workers, redis_s, harness = sum(w1) - sum(w0), sum(shards), h1 - h0
        other = max(0.0, (s1 - s0) - workers - redis_s - harness)
        return {
            "wall_s": wall,
            "workers_s": workers,
            "redis_s": redis_s,
            "redis_shards_s": shards,
            "harness_s": harness,
            "other_s": other,
            "other_util": round(other / wall, 3),
            "harness_util": round(harness / wall, 3),
            "helpers_util": round((p1 - p0) / wall, 3),
        }


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds redis-server has used (its main thread where INFO tells it)."""
    info = client.info("cpu")
    main = info.get("used_cpu_user_main_thread")
    if main is not None:
        return float(main) + float(info.get("used_cpu_sys_main_thread", 0.0))
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def rss_and_peak_mb(pids: Sequence[int]) -> tuple[list[float], list[float]]:
    """Resident set size and its peak (``VmRSS``, ``VmHWM``) of each process, in MiB."""
    return (
        [status_kb(p, "VmRSS") / 1024 for p in pids],
        [status_kb(p, "VmHWM") / 1024 for p in pids],
    )
