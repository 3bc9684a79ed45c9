"""Logs: JSON lines with consumer, group and namespace; console on a terminal; no secrets."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from helpers import wait_for

from streamcalc.embedded import EmbeddedRedis
from streamcalc.keys import Keys

SECRET = "s3cret-Pa55"
GRAPH = '[nodes.A]\nfn = "div"\nargs = ["C", "D"]\n'


@pytest.fixture(scope="module")
def locked() -> Iterator[EmbeddedRedis]:
    """A private Redis that wants a password."""
    with EmbeddedRedis(extra_args=["--requirepass", SECRET]) as server:
        yield server


def url_of(server: EmbeddedRedis, password: str = SECRET) -> str:
    return f"redis://:{password}@127.0.0.1:{server.port}/0"


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamcalc", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_json_log_lines_carry_context_and_no_secret(
    locked: EmbeddedRedis, ns: str, tmp_path: object
) -> None:
    env = {**os.environ, "STREAMCALC_REDIS_URL": url_of(locked), "STREAMCALC_NS": ns}
    graph = os.path.join(str(tmp_path), "g.toml")
    with open(graph, "w") as file:
        file.write(GRAPH)
    seen = [cli(env, "graph", "load", graph)]
    r = redis.Redis.from_url(url_of(locked))
    keys = Keys(ns)
    with subprocess.Popen(
        [sys.executable, "-m", "streamcalc", "worker", "--consumer", "w-logs",
         "--log-format", "json", "--log-level", "debug", "--block-ms", "20"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:  # fmt: skip
        try:
            r.xadd(keys.input, {"C": "1", "D": "2"})
            r.xadd(keys.input, {"C": "1", "D": "0"})  # function error
            r.xadd(keys.input, {"C": "nope"})  # dead letter
            wait_for(lambda: r.xlen(keys.dead) == 2, timeout=20)
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in err.splitlines()]
    assert lines, "the worker logged nothing"
    for line in lines:
        assert line["consumer"] == "w-logs" and line["group"] == "streamcalc" and line["ns"] == ns
        assert {"level", "timestamp", "event"} <= set(line)
    levels = {(line["event"], line["level"]) for line in lines}
    assert ("batch committed", "debug") in levels
    assert ("dead letter", "warning") in levels
    assert ("function error", "warning") in levels
    seen += [
        cli(env, "send", "C=4", "D=2"),
        cli(env, "values"),
        cli(env, "status"),
        cli(env, "graph", "show"),
        cli({**env, "STREAMCALC_REDIS_URL": url_of(locked, "wrong")}, "values"),
        cli({**env, "STREAMCALC_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:1/0"}, "status"),
    ]
    assert [p.returncode for p in seen] == [0, 0, 0, 0, 0, 1, 1]
    assert "refused" in seen[-2].stderr and ":***@" in seen[-2].stderr
    for text in [out, err] + [p.stdout + p.stderr for p in seen]:
        assert SECRET not in text
        assert "wrong" not in text or ":***@" in text


def test_console_logs_on_a_terminal(locked: EmbeddedRedis, ns: str) -> None:
    env = {**os.environ, "STREAMCALC_REDIS_URL": url_of(locked), "STREAMCALC_NS": ns}
    env.pop("STREAMCALC_LOG_FORMAT", None)
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamcalc", "worker", "--wait", "5", "--block-ms", "20"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    try:
        text = b""
        deadline = time.monotonic() + 20
        while b"waiting for" not in text and time.monotonic() < deadline:
            text += os.read(controller, 4096)  # no graph in this namespace: it says so
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        os.close(controller)
    line = re.sub(r"\x1b\[[0-9;]*m", "", text.decode(errors="replace").splitlines()[0])
    assert not line.lstrip().startswith("{")  # console renderer (in colour), not JSON
    assert "no graph loaded" in line and "consumer=" in line and f"ns={ns}" in line
    assert SECRET not in text.decode(errors="replace")
