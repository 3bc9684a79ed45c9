"""``worker --processes N``: run N consumer processes, restart one that dies, stop all on SIGTERM.

Each child is a plain ``streamcalc worker`` with its own consumer name
(``<consumer>-<i>``), so a restarted child first re-processes the entries it
had pending. On SIGTERM/SIGINT every child gets SIGTERM, finishes and
acknowledges its batch and leaves the group; the supervisor exits once all have.

Metrics: the children write their samples to a private PROMETHEUS_MULTIPROC_DIR
and the supervisor alone serves ``/metrics`` (the sum over all processes, dead
ones marked) and ``/healthz`` (Redis reachable, every child alive and its
heartbeat file fresh).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import redis
import structlog

from streamcalc.keys import Keys, Namespace
from streamcalc.scripts import Scripts
from streamcalc.settings import Settings
from streamcalc.store import connect, partition_keys
from streamcalc.worker import BLOCKED_PREFIX, default_consumer_name

#: A child that dies sooner than this after its start is restarted with growing delays.
_QUICK_DEATH_S = 5.0
#: A child still running this long after SIGTERM is SIGKILLed (its batch is fenced anyway).
_STOP_TIMEOUT_S = 60.0


def child_command(settings: Settings, consumer: str, log_level: str) -> list[str]:
    """The command line of one child worker (the Redis URL travels in the environment).

    ``-P``: the child does not put the current directory first on its module
    path, so a file there can never shadow a module the worker imports.
    """
    s = settings
    command = [
        sys.executable, "-P", "-m", "streamcalc", "worker",
        "--ns", s.ns, "--group", s.group, "--consumer", consumer,
        "--batch", str(s.batch), "--block-ms", str(s.block_ms),
        "--claim-idle", str(s.claim_idle_ms), "--max-deliveries", str(s.max_deliveries),
        "--lease-ms", str(s.lease_ms), "--cache-keys", str(s.cache_keys),
        "--log-format", s.log_format, "--log-level", log_level, "--wait", str(s.wait_s),
    ]  # fmt: skip
    if s.export_values:
        command.append("--export-values")
    if s.cluster:
        command.append("--cluster")
    command += ["--stuck-after", str(s.stuck_after_s)]
    command += ["--function-timeout", str(s.function_timeout_s)]
    command += ["--max-future", f"{s.max_future_ms}ms"]
    if s.plugins:
        command += ["--plugins", ",".join(s.plugins)]
    if s.retain_ms is not None:
        command += ["--retain", f"{s.retain_ms}ms"]
    elif s.retain_len is not None:
        command += ["--retain", str(s.retain_len)]
    return command


class Supervisor:
    """Runs the children; :meth:`run` returns the exit code."""

    def __init__(self, settings: Settings, processes: int, log_level: str) -> None:
        self.settings = settings
        self.log_level = log_level
        base = settings.consumer or default_consumer_name()
        self.names = [f"{base}-{i}" for i in range(processes)]
        self.log = structlog.get_logger("streamcalc.supervisor").bind(
            ns=settings.ns, group=settings.group, consumer=base
        )
        self.state_dir = Path(tempfile.mkdtemp(prefix="streamcalc-workers-"))
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, float] = {}
        self.stopping = False

    def heartbeat(self, name: str) -> Path:
        """The file child ``name`` touches while it makes progress."""
        return self.state_dir / f"{name}.heartbeat"

    def spawn(self, name: str) -> None:
        """Start (or restart) child ``name``."""
        env = {k: v for k, v in os.environ.items() if k != "STREAMCALC_METRICS_PORT"}
        env.update(
            STREAMCALC_REDIS_URL=self.settings.redis_url,
            PROMETHEUS_MULTIPROC_DIR=str(self.state_dir / "metrics"),
            STREAMCALC_HEARTBEAT_FILE=str(self.heartbeat(name)),
        )
        self.heartbeat(name).write_text("")
        command = child_command(self.settings, name, self.log_level)
        self.children[name] = subprocess.Popen(command, env=env)
        self.started[name] = time.monotonic()

    def health(self) -> tuple[bool, str]:
        """For ``/healthz``: Redis reachable, every child alive and making progress."""
        client = connect(self.settings.redis_url, timeout=2.0, cluster=self.settings.cluster)
        try:
            client.ping()
            graph_loaded = client.exists(Namespace(self.settings.ns).root.graph)
        except redis.RedisError:
            return False, "redis unreachable"
        finally:
            client.close()
        if not graph_loaded:
            return False, f"no graph loaded in namespace {self.settings.ns!r}"
        stuck_after = self.settings.stuck_after
        now = time.time()
        for name, child in self.children.items():
            if child.poll() is not None:
                return False, f"worker {name} is not running"
            blocked = self.blocked(name)
            if blocked:
                return False, f"worker {name} {blocked}"
            age = now - self.heartbeat(name).stat().st_mtime
            if age > stuck_after:
                return False, f"worker {name} stuck: no progress for {age:.0f}s"
        return True, "ok"

    def blocked(self, name: str) -> str:
        """What blocks child ``name`` as it said in its heartbeat file ("" when nothing)."""
        path = self.heartbeat(name)
        try:
            if not path.stat().st_size:
                return ""
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return text[len(BLOCKED_PREFIX) :] if text.startswith(BLOCKED_PREFIX) else ""

    def replace_blocked(self) -> None:
        """SIGKILL every child a plugin blocks (it cannot stop by itself); the loop restarts
        it. Its leases, left to expire, fence it: whatever it might still do, it commits
        nothing; the next owner claims its entries."""
        for name, child in self.children.items():
            if child.poll() is None:
                blocked = self.blocked(name)
                if blocked:
                    self.log.error("worker blocked; replacing it", child=name, error=blocked)
                    child.kill()
                    child.wait()

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT, then stop every child cleanly."""
        from prometheus_client import multiprocess

        (self.state_dir / "metrics").mkdir()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if self.settings.metrics_port is not None:
            from streamcalc.metrics import multiprocess_registry, serve

            serve(
                self.settings.metrics_port,
                self.health,
                multiprocess_registry(str(self.state_dir / "metrics")),
                host=self.settings.metrics_host,
            )
        try:
            for name in self.names:
                self.spawn(name)
            self.log.info("supervisor started", processes=len(self.names), consumers=self.names)
            failures = dict.fromkeys(self.names, 0)
            restart_at: dict[str, float] = {}
            while not self.stopping:
                time.sleep(0.1)
                self.replace_blocked()
                now = time.monotonic()
                for name, child in self.children.items():
                    code = child.poll()
                    if code is None or name in restart_at:
                        continue
                    multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                        child.pid, str(self.state_dir / "metrics")
                    )
                    quick = now - self.started[name] < _QUICK_DEATH_S
                    failures[name] = failures[name] + 1 if quick else 0
                    delay = min(0.5 * 2 ** failures[name], 30.0) if quick else 0.0
                    self.log.warning("worker died; restarting", child=name, code=code, delay=delay)
                    restart_at[name] = now + delay
                for name, when in list(restart_at.items()):
                    if now >= when and not self.stopping:
                        del restart_at[name]
                        self.spawn(name)
            return self._stop_all()
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _stop_all(self) -> int:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        codes = [self._wait_or_kill(name, child) for name, child in self.children.items()]
        # A child stopped before it could leave (say, while starting up) leaves its name behind.
        client = connect(self.settings.redis_url, cluster=self.settings.cluster)
        every = [Keys(self.settings.ns)]
        with contextlib.suppress(redis.RedisError):
            every += partition_keys(client, self.settings.ns)
        for keys in dict.fromkeys(every):  # the routing stream's group and each partition's
            scripts = Scripts(client, keys)
            for name in self.names:
                with contextlib.suppress(redis.RedisError):  # no such group: nothing to leave
                    scripts.leave(self.settings.group, name)
        client.close()
        self.log.info("supervisor stopped", codes=codes)
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1

    def _wait_or_kill(self, name: str, child: subprocess.Popen[bytes]) -> int:
        """Wait for a child to stop; SIGKILL one that ignores SIGTERM (blocked) for a minute."""
        try:
            return child.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.log.error("worker ignores SIGTERM; killing it", child=name)
            child.kill()
            return child.wait()


def supervise(settings: Settings, processes: int, log_level: str) -> int:
    """Run ``processes`` children until SIGTERM/SIGINT; returns the exit code."""
    return Supervisor(settings, processes, log_level).run()
