"""``worker --processes N``: run N consumer processes, restart one that dies, stop all on SIGTERM.

Each child is a plain ``streamcalc worker`` with its own consumer name
(``<consumer>-<i>``), so a restarted child re-processes its own pending entries
first. On SIGTERM/SIGINT every child gets SIGTERM, finishes and acknowledges its
batch and leaves the group; the supervisor exits once all have.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

import structlog

from streamcalc.settings import Settings
from streamcalc.worker import default_consumer_name

#: A child that dies sooner than this after its start is restarted with growing delays.
_QUICK_DEATH_S = 5.0


def child_command(settings: Settings, consumer: str, log_level: str) -> list[str]:
    """The command line of one child worker."""
    s = settings
    command = [
        sys.executable,
        "-m",
        "streamcalc",
        "worker",
        "--ns",
        s.ns,
        "--group",
        s.group,
        "--consumer",
        consumer,
        "--batch",
        str(s.batch),
        "--block-ms",
        str(s.block_ms),
        "--claim-idle",
        str(s.claim_idle_ms),
        "--max-deliveries",
        str(s.max_deliveries),
        "--log-format",
        s.log_format,
        "--log-level",
        log_level,
        "--wait",
        str(s.wait_s),
    ]
    return command


def supervise(settings: Settings, processes: int, log_level: str) -> int:
    """Run ``processes`` children until SIGTERM/SIGINT; returns the exit code."""
    log = structlog.get_logger("streamcalc.supervisor").bind(ns=settings.ns, group=settings.group)
    base = settings.consumer or default_consumer_name()
    names = [f"{base}-{i}" for i in range(processes)]
    children: dict[str, subprocess.Popen[bytes]] = {}
    started: dict[str, float] = {}
    failures: dict[str, int] = dict.fromkeys(names, 0)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def spawn(name: str) -> None:
        # The password-bearing URL travels in the environment, not on a visible command line.
        env = {**os.environ, "STREAMCALC_REDIS_URL": settings.redis_url}
        children[name] = subprocess.Popen(child_command(settings, name, log_level), env=env)
        started[name] = time.monotonic()

    for name in names:
        spawn(name)
    log.info("supervisor started", processes=processes, consumers=names)
    restart_at: dict[str, float] = {}
    while not stopping:
        time.sleep(0.2)
        now = time.monotonic()
        for name, child in list(children.items()):
            code = child.poll()
            if code is None or name in restart_at:
                continue
            quick = now - started[name] < _QUICK_DEATH_S
            failures[name] = failures[name] + 1 if quick else 0
            delay = min(0.5 * 2 ** failures[name], 30.0) if quick else 0.0
            log.warning("worker process died; restarting", consumer=name, code=code, delay=delay)
            restart_at[name] = now + delay
        for name, when in list(restart_at.items()):
            if now >= when and not stopping:
                del restart_at[name]
                spawn(name)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    codes = [child.wait() for child in children.values()]
    log.info("supervisor stopped", codes=codes)
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
