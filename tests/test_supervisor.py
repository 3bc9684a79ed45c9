"""Children of a supervisor that was killed stop on their own: no orphan keeps working."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import redis
from helpers import load, wait_for

from streamcalc.keys import Namespace

GRAPH = '[nodes.S]\nexpr = "X + 1"\n'


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [int(p) for p in file.read().split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as file:
        return file.read().split(")")[-1].split()[0] != "Z"


def test_children_stop_when_their_supervisor_is_killed(
    r: redis.Redis, ns: str, env: dict[str, str]
) -> None:
    load(r, ns, GRAPH)
    command = [sys.executable, "-m", "streamcalc", "worker", "--processes", "2"]
    supervisor = subprocess.Popen(
        [*command, "--consumer", "pool", "--lease-ms", "1000", "--log-level", "error"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    children: list[int] = []
    try:
        members = Namespace(ns).members("streamcalc")
        wait_for(lambda: r.zcard(members) == 2, timeout=30)
        children = _children(supervisor.pid)
        assert len(children) == 2
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in children):
            assert time.monotonic() < deadline, "orphaned children run on"
            time.sleep(0.1)
        assert r.zcard(members) == 0  # they handed over and left
    finally:
        supervisor.kill()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_children_stop_when_their_supervisor_is_killed_while_redis_is_away(
    env: dict[str, str],
) -> None:
    from streamcalc.embedded import EmbeddedRedis

    server = EmbeddedRedis().start()
    own = redis.Redis.from_url(server.url)
    load(own, "away", GRAPH)
    own.close()
    command = [sys.executable, "-m", "streamcalc", "worker", "--processes", "2", "--ns", "away"]
    supervisor = subprocess.Popen(
        [*command, "--consumer", "pool", "--lease-ms", "1000", "--log-level", "error"],
        env={**env, "STREAMCALC_REDIS_URL": server.url},
        stderr=subprocess.DEVNULL,
    )
    children: list[int] = []
    try:
        wait_for(lambda: len(_children(supervisor.pid)) == 2, timeout=30)
        children = _children(supervisor.pid)
        time.sleep(2.0)  # the children are working
        server.stop()  # Redis gone: the children retry, making no progress
        time.sleep(1.0)
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children):
            assert time.monotonic() < deadline, "orphaned children retry on forever"
            time.sleep(0.1)
    finally:
        supervisor.kill()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        server.stop()
