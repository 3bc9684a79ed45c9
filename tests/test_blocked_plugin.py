"""A plugin that blocks in C past --function-timeout: the worker says so on /healthz and
lets its leases expire; under --processes the supervisor replaces the stuck child, and the
entries go to a live worker (never a clone that commits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from blocking_plugins import BLOCK_AT
from helpers import dead_letters, healthz, load, outputs, wait_for

from streamcalc.embedded import free_port
from streamcalc.keys import Keys

GRAPH = '[nodes.S]\nfn = "blocking_plugins:block_in_c"\nargs = ["X"]\n'


@pytest.fixture
def plugin_env(env: dict[str, str]) -> dict[str, str]:
    return {
        **env,
        "STREAMCALC_PLUGINS": "blocking_plugins",
        "STREAMCALC_FUNCTION_TIMEOUT": "0.5",
        "STREAMCALC_LEASE_MS": "2000",
        "STREAMCALC_BLOCK_MS": "100",
        "PYTHONPATH": str(Path(__file__).parent),
    }


def _worker(env: dict[str, str], consumer: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "streamcalc", "worker", "--consumer", consumer, *args]
    with log.open("wb") as err:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)


def test_a_worker_blocked_in_a_plugin_is_unhealthy_and_gives_its_partition_up(
    r: redis.Redis, ns: str, keys: Keys, plugin_env: dict[str, str], tmp_path: Path
) -> None:
    load(r, ns, GRAPH)
    port = free_port()
    env = {**plugin_env, "STREAMCALC_MAX_DELIVERIES": "1"}
    stuck = _worker(env, "stuck", "--metrics-port", str(port), log=tmp_path / "stuck.log")
    live = None
    try:
        wait_for(lambda: healthz(port)[0] == 200, timeout=30)
        r.xadd(keys.input, {"X": str(BLOCK_AT)})
        r.xadd(keys.input, {"X": "1"})
        wait_for(lambda: healthz(port)[0] == 503, timeout=30)
        body = healthz(port)[1]
        assert "plugin blocking_plugins:block_in_c blocked for" in body
        assert "past its timeout of 0.5s" in body
        wait_for(lambda: r.get(keys.lease("streamcalc")) is None, timeout=30)  # left to expire
        live = _worker(env, "live", log=tmp_path / "live.log")
        wait_for(lambda: len(outputs(r, keys)) == 1, timeout=60)
        assert [v for _, v, _, _ in outputs(r, keys)] == [1]
        (letter,) = dead_letters(r, keys)
        assert "poison entry" in letter["@error"] and letter["X"] == str(BLOCK_AT)
        assert stuck.poll() is None  # still blocked, and fenced: it never commits
        said = (tmp_path / "stuck.log").read_text()
        assert "worker blocked; its leases are left to expire" in said
    finally:
        stuck.kill()
        stuck.wait(timeout=30)
        if live is not None:
            live.terminate()
            assert live.wait(timeout=30) == 0


@pytest.mark.slow
def test_the_supervisor_replaces_a_child_blocked_in_a_plugin(
    r: redis.Redis, ns: str, keys: Keys, plugin_env: dict[str, str], tmp_path: Path
) -> None:
    load(r, ns, GRAPH)
    port = free_port()
    env = {**plugin_env, "STREAMCALC_MAX_DELIVERIES": "2"}
    args = ["--processes", "2", "--metrics-port", str(port)]
    supervisor = _worker(env, "sup", *args, log=tmp_path / "sup.log")
    try:
        wait_for(lambda: healthz(port)[0] == 200, timeout=60)
        r.xadd(keys.input, {"X": str(BLOCK_AT)})
        for i in range(1, 4):
            r.xadd(keys.input, {"X": str(i)})
        wait_for(lambda: "blocked" in healthz(port)[1], timeout=30)
        wait_for(lambda: len(outputs(r, keys)) == 3, timeout=90)
        assert [v for _, v, _, _ in outputs(r, keys)] == [1, 2, 3]  # each once: no clone
        (letter,) = dead_letters(r, keys)
        assert "poison entry" in letter["@error"] and letter["@deliveries"] == "3"
        wait_for(lambda: healthz(port)[0] == 200, timeout=60)
        log = (tmp_path / "sup.log").read_text()
        assert "worker blocked; replacing it" in log
    finally:
        supervisor.terminate()
        code = supervisor.wait(timeout=90)
    assert code == 0
