"""Plugin functions in a real worker process: a hanging one is cut off by the timeout."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from helpers import Background, dead_letters, drain, load, outputs, wait_for

from streamcalc.keys import Keys
from streamcalc.settings import Settings
from streamcalc.supervisor import child_command

GRAPH = """
[nodes.H]
fn = "graph_plugins:hang"
args = ["X"]
[nodes.S]
fn = "graph_plugins:stubborn"
args = ["X"]
[nodes.E]
fn = "graph_plugins:efficiency"
args = ["X", "Y"]
mode = "latest"
"""


def test_hanging_plugins_are_cut_off(r: redis.Redis, ns: str, env: dict[str, str]) -> None:
    keys = Keys(ns)
    load(r, ns, GRAPH)
    env = {
        **env,
        "STREAMCALC_FUNCTION_TIMEOUT": "0.2",
        "STREAMCALC_PLUGINS": "graph_plugins",
        "PYTHONPATH": str(Path(__file__).parent),
    }
    first = r.xadd(keys.input, {"X": "2", "Y": "3"}).decode()
    second = r.xadd(keys.input, {"X": "4"}).decode()
    started = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-m", "streamcalc", "worker", "--block-ms", "20"],
        env=env,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            wait_for(lambda: len(dead_letters(r, keys)) == 4, timeout=30)
            wait_for(lambda: r.xpending(keys.input, "streamcalc")["pending"] == 0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    assert time.monotonic() - started < 20
    letters = {(d["@src"], d["@node"]): d["@error"] for d in dead_letters(r, keys)}
    assert set(letters) == {(first, "H"), (first, "S"), (second, "H"), (second, "S")}
    assert all("timed out after 0.2s" in error for error in letters.values())
    assert [(n, v, s) for n, v, _, s in outputs(r, keys)] == [
        ("E", 1.5, first),
        ("E", 0.75, second),
    ]


def test_the_timeout_comes_from_the_settings(
    r: redis.Redis, redis_url: str, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMCALC_FUNCTION_TIMEOUT", raising=False)
    keys = Keys(ns)
    load(r, ns, '[nodes.N]\nfn = "graph_plugins:nap"\nargs = ["X"]\n')
    src = r.xadd(keys.input, {"X": "1"}).decode()
    started = time.monotonic()
    drain(redis_url, ns, function_timeout_s=0.2, plugins=("graph_plugins",))
    assert time.monotonic() - started < 5
    [letter] = dead_letters(r, keys)
    assert (letter["@src"], letter["@node"]) == (src, "N")
    assert letter["@error"] == "graph_plugins:nap timed out after 0.2s"


def test_worker_children_get_the_timeout_and_the_trusted_plugins() -> None:
    settings = Settings(function_timeout_s=0.25, plugins=("a.b", "c"))
    command = child_command(settings, "c-0", "info")
    assert command[command.index("--function-timeout") + 1] == "0.25"
    assert command[command.index("--plugins") + 1] == "a.b,c"
    assert command[1:3] == ["-P", "-m"]  # the current directory cannot shadow a module


def test_a_worker_refuses_plugins_it_was_not_told_to_trust(
    r: redis.Redis, redis_url: str, ns: str
) -> None:
    keys = Keys(ns)
    load(r, ns, '[nodes.E]\nfn = "graph_plugins:efficiency"\nargs = ["X", "Y"]\n')
    r.xadd(keys.input, {"X": "2", "Y": "3"})
    drain(redis_url, ns, plugins=("graph_plugins",))
    assert [v for _, v, _, _ in outputs(r, keys)] == [1.5]
    waiting = r.xadd(keys.input, {"X": "2", "Y": "4"}).decode()
    with Background(redis_url, ns) as worker:  # no --plugins: it won't import graph_plugins
        wait_for(lambda: "is not trusted" in worker.health()[1])
        assert worker.health()[0] is False
        time.sleep(0.5)
        assert len(outputs(r, keys)) == 1 and r.xlen(keys.dead) == 0  # paused, nothing lost
        load(r, ns, '[nodes.E]\nexpr = "X / Y"\n')  # a graph it can run: it goes on
        wait_for(lambda: len(outputs(r, keys)) == 2)
        assert worker.health() == (True, "ok")
    assert outputs(r, keys)[1][1:] == (0.5, outputs(r, keys)[1][2], waiting)


def test_a_broken_stored_definition_pauses_the_worker_until_a_good_graph(
    r: redis.Redis, redis_url: str, ns: str
) -> None:
    keys = Keys(ns)
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    with Background(redis_url, ns) as worker:
        r.xadd(keys.input, {"X": "1"})
        wait_for(lambda: len(outputs(r, keys)) == 1)
        r.hset(keys.graph, "S", b'{"name": "S", "args": ["X"], "ex')  # truncated
        r.hincrby(keys.meta, "graph_version", 1)
        r.xadd(keys.input, {"X": "2"})
        wait_for(lambda: "bad stored definition" in worker.health()[1])
        assert len(outputs(r, keys)) == 1  # never the older graph in its place
        load(r, ns, '[nodes.S]\nexpr = "X + 10"\n')
        wait_for(lambda: len(outputs(r, keys)) == 2)
    assert outputs(r, keys)[1][1] == 12
