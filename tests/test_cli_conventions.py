"""The command line as a user types it: conventions, one-line errors, a truthful status."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from helpers import drain, healthz, load, wait_for

from streamcalc.cli import main
from streamcalc.embedded import free_port
from streamcalc.keys import Keys
from streamcalc.ops import rates as rates_module

SEED_TOML = '[nodes.A]\nfn = "add"\nargs = ["C", "D", "E"]\n[nodes.B]\nexpr = "A * F"\n'


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def streamcalc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command in a process of its own, as a shell runs it."""
    return subprocess.run(
        [sys.executable, "-m", "streamcalc", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def one_line_error(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("streamcalc: error: ") and "Traceback" not in err


# -- conventions ---------------------------------------------------------------------------------


def test_version_and_short_help(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert run(capsys, "--version") == (0, f"streamcalc {version('streamcalc')}\n", "")
    code, out, _ = run(capsys, "-h")
    assert code == 0 and "Usage: streamcalc" in out and "values" in out
    code, out, _ = run(capsys, "dead", "retry", "-h")
    assert code == 0 and "Usage: streamcalc dead retry" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["worker", "--batch", "many"], "'--batch'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["values", "--bogus"], "No such option: --bogus"),
        (["worker", "--log-level", "loud"], "'loud' is not one of"),
        (["worker", "--log-format", "xml"], "'xml' is not one of"),
        (["graph", "show", "--format", "png"], "'png' is not one of"),
        (["worker", "--metrics-port", "70000"], "'--metrics-port'"),
        (["history"], "Missing argument 'NODE'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, out, err = run(capsys, *args)
    assert (code, out) == (2, "")
    assert one_line_error(err), err
    assert needle in err and "--help" in err
    assert "╭" not in err and "│" not in err  # no boxes


def test_choices_are_listed_and_take_any_case(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "worker", "--help")
    assert code == 0
    assert "<debug|info|warning|error>" in out and "<auto|json|console>" in out
    code, out, _ = run(capsys, "graph", "show", "--help")
    assert code == 0 and "<text|json|dot|mermaid>" in out
    # Choices complete in a shell: the completion script lists them.
    done = subprocess.run(
        [sys.executable, "-m", "streamcalc", "worker", "--log-level", ""],
        env={"_STREAMCALC_COMPLETE": "complete_bash", "COMP_WORDS": "streamcalc worker "
             "--log-level ", "COMP_CWORD": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert {"debug", "info", "warning", "error"} <= set(done.stdout.split()), done


def test_metrics_port_in_use_is_a_usage_error(redis_url: str, ns: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = streamcalc("worker", "--metrics-port", str(port), "--redis-url", redis_url,
                          "--ns", ns)  # fmt: skip
    assert done.returncode == 2
    assert one_line_error(done.stderr), done.stderr
    assert f":{port}" in done.stderr and "in use" in done.stderr


def test_bad_redis_url_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("foo://x", "redis://host:notaport/0"):
        code, out, err = run(capsys, "values", "--redis-url", url)
        assert (code, out) == (1, "")
        assert one_line_error(err) and "bad Redis URL" in err


# -- status tells the truth ----------------------------------------------------------------------


def status_json(capsys: pytest.CaptureFixture[str], redis_url: str, ns: str) -> dict:  # type: ignore[type-arg]
    code, out, _ = run(capsys, "status", "--json", "--redis-url", redis_url, "--ns", ns)
    assert code == 0
    return json.loads(out)  # type: ignore[no-any-return]


def test_rates_after_a_burst_count_the_window(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    """20,000 values emitted within milliseconds are 20,000 values in the last minute."""
    keys = Keys(ns)
    pipe = r.pipeline(transaction=False)
    for i in range(20_000):
        pipe.xadd(keys.output, {"A": str(i), "@ts": "1", "@src": "1-0"})
    for _ in range(300):
        pipe.xadd(keys.input, {"C": "1"})
    pipe.execute()
    rates = status_json(capsys, redis_url, ns)["rates"]
    assert rates["window_s"] == 60 and rates["estimated"] is False
    assert (rates["input_entries"], rates["output_values"]) == (300, 20_000)
    assert rates["output_per_s"] == pytest.approx(20_000 / 60)
    assert rates["input_per_s"] == pytest.approx(300 / 60)
    assert 0 <= rates["input_idle_s"] < 30
    code, out, _ = run(capsys, "status", "--redis-url", redis_url, "--ns", ns)
    assert code == 0
    assert "rates over the last 60s (counted by entry IDs): in 5.00 entries/s (300), " in out
    assert "out 333.33 values/s (20,000)" in out and "newest input" in out


def test_rates_of_a_busy_window_are_counted_over_a_shorter_stated_one(
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
    r: redis.Redis,
    ns: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rates_module, "READ_BUDGET", 300)
    monkeypatch.setattr(rates_module, "FIRST_PAGE", 100)
    keys = Keys(ns)
    now = int(r.time()[0]) * 1000
    pipe = r.pipeline(transaction=False)
    for seq in range(1000):  # more than the budget, 40 s ago
        pipe.xadd(keys.input, {"C": "1"}, id=f"{now - 40_000}-{seq}")
    for seq in range(100):  # and 100 entries 5 s ago
        pipe.xadd(keys.input, {"C": "1"}, id=f"{now - 5_000}-{seq}")
    pipe.execute()
    rates = status_json(capsys, redis_url, ns)["rates"]
    # The window read in full is the 40 s after the oldest millisecond read: it holds 100.
    assert rates["input_entries"] == 100 and rates["estimated"] is False
    assert 39 < rates["window_s"] < 50
    assert rates["input_per_s"] == pytest.approx(100 / rates["window_s"], rel=0.01)


# -- the worker says what it waits for -----------------------------------------------------------


@contextmanager
def worker_process(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamcalc", "worker", "--block-ms", "20", *args],
            env=env,
            stderr=sink,
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_worker_waiting_for_redis_says_so_at_once(env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with worker_process({**env, "STREAMCALC_REDIS_URL": dead}, log, "--wait", "60"):
        wait_for(lambda: "waiting up to 60s for Redis" in log.read_text(), timeout=20)
    assert time.monotonic() - started < 30  # long before the 60 s wait runs out
    assert "hunter2" not in log.read_text()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_worker_without_a_graph_is_not_ready_and_says_so_once(
    env: dict[str, str], r: redis.Redis, ns: str, tmp_path: Path, processes: int
) -> None:
    log = tmp_path / "worker.log"
    port = free_port()
    with worker_process(env, log, "--metrics-port", str(port), "--processes", str(processes)):
        no_graph = (503, f"no graph loaded in namespace {ns!r}\n")
        wait_for(lambda: healthz(port) == no_graph, timeout=20)
        time.sleep(3)  # the worker looks for a graph every second
        assert log.read_text().count("no graph loaded;") == processes  # once by each
        load(r, ns, SEED_TOML)
        wait_for(lambda: healthz(port)[0] == 200, timeout=20)


def test_no_color_is_honoured_on_a_terminal(env: dict[str, str]) -> None:
    import os
    import pty

    def console_log(**extra: str) -> bytes:
        leader, follower = pty.openpty()
        try:
            subprocess.run(
                [sys.executable, "-m", "streamcalc", "worker", "--log-format", "console",
                 "--wait", "0.3"],
                env={**env, "STREAMCALC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                     **extra},
                stderr=follower, stdout=subprocess.DEVNULL, timeout=60, check=False,
            )  # fmt: skip
            os.set_blocking(leader, False)
            chunks = []
            with contextlib.suppress(OSError):
                while chunk := os.read(leader, 65536):
                    chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(leader)
            os.close(follower)

    coloured = console_log()
    assert b"waiting up to" in coloured and b"\x1b[" in coloured
    plain = console_log(NO_COLOR="1")
    assert b"waiting up to" in plain and b"\x1b[" not in plain


# -- values, history and tail for people ---------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], redis_url: str, ns: str, *args: str) -> tuple[int, str]:
    code, out, err = run(capsys, *args, "--redis-url", redis_url, "--ns", ns)
    assert err == "", err
    return code, out


def test_times_are_readable_and_json_keeps_epoch_ms(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    from datetime import datetime

    load(r, ns, SEED_TOML)
    ts = 1_764_590_400_123  # 2025-12-01 12:00:00.123 UTC
    local = (
        datetime.fromtimestamp(ts / 1000).astimezone().isoformat(sep=" ", timespec="milliseconds")
    )
    assert cli(capsys, redis_url, ns, "send", "C=4", "--ts", str(ts))[0] == 0
    drain(redis_url, ns)
    code, out = cli(capsys, redis_url, ns, "values", "C")
    assert code == 0 and local in out and str(ts) not in out
    code, out = cli(capsys, redis_url, ns, "values", "C", "--json")
    assert json.loads(out)["C"]["ts"] == ts
    code, out = cli(capsys, redis_url, ns, "history", "C")
    assert code == 0 and local in out.splitlines()[1]
    code, out = cli(capsys, redis_url, ns, "history", "C", "--json")
    assert json.loads(out)[0]["ts"] == ts


def test_vectors_do_not_break_the_columns_of_values(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns, SEED_TOML)
    vector = "[" + ",".join(str(i + 0.5) for i in range(500)) + "]"
    assert cli(capsys, redis_url, ns, "send", f"C={vector}", "D=1.5", "E=[1,2]")[0] == 0
    drain(redis_url, ns)
    code, out = cli(capsys, redis_url, ns, "values")
    assert code == 0
    header, *rows = out.splitlines()
    assert [row.split()[0] for row in rows] == ["C", "D", "E"]
    date = re.compile(r"\d{4}-\d\d-\d\d ")
    starts = {header.index("time"), *(date.search(row).start() for row in rows)}  # type: ignore[union-attr]
    assert len(starts) == 1  # the time column starts at the same place on every line
    assert "500 values]" in rows[0] and len(rows[0]) < 120
    code, out = cli(capsys, redis_url, ns, "values", "C", "--json")
    assert len(json.loads(out)["C"]["value"]) == 500  # --json has it whole


def test_tail_of_several_nodes(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns, SEED_TOML + '[nodes.G]\nexpr = "B + 1"\n')
    r.xadd(Keys(ns).input, {"C": "1", "D": "1", "E": "1", "F": "3"})
    drain(redis_url, ns)
    code, out = cli(capsys, redis_url, ns, "tail", "--from", "0", "--count", "2",
                    "--node", "A", "--node", "G")  # fmt: skip
    assert code == 0
    assert [line.split()[1:3] for line in out.splitlines()] == [["A", "3"], ["G", "10"]]


def test_loading_the_same_graph_again_changes_nothing(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str, tmp_path: Path
) -> None:
    path = tmp_path / "plant.toml"
    path.write_text(SEED_TOML)
    code, out = cli(capsys, redis_url, ns, "graph", "load", str(path))
    assert (code, out.split()[-3:]) == (0, ["graph", "version", "1"])
    path.write_text("# the same graph, written otherwise\n" + SEED_TOML.replace('"', "'"))
    code, out = cli(capsys, redis_url, ns, "graph", "load", str(path))
    assert code == 0 and "holds this graph already: version 1" in out
    assert r.hget(Keys(ns).meta, "graph_version") == b"1"
    path.write_text(SEED_TOML + '[nodes.G]\nexpr = "B + 1"\n')
    code, out = cli(capsys, redis_url, ns, "graph", "load", str(path))
    assert (code, out.split()[-3:]) == (0, ["graph", "version", "2"])


def test_a_removed_node_leaves_values_and_the_gauges(
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
    r: redis.Redis,
    ns: str,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    keys = Keys(ns)
    load(r, ns, SEED_TOML + '[nodes.G]\nexpr = "B + 1"\n')
    port = free_port()
    with worker_process(env, tmp_path / "worker.log", "--metrics-port", str(port),
                        "--export-values"):  # fmt: skip
        r.xadd(keys.input, {"C": "1", "D": "1", "E": "1", "F": "3"})
        wait_for(lambda: 'streamcalc_node_value{node="G"} 10.0' in scrape(port), timeout=30)
        assert 'streamcalc_node_staleness_seconds{node="G"}' in scrape(port)
        load(r, ns, SEED_TOML)
        wait_for(lambda: 'node="G"' not in scrape(port), timeout=30)  # gauges refresh every 5 s
        assert 'streamcalc_node_value{node="B"} 9.0' in scrape(port)
    code, out = cli(capsys, redis_url, ns, "values")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["A", "B", "C", "D", "E", "F"]


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()  # type: ignore[no-any-return]
    except OSError:
        return ""


def test_a_time_past_any_calendar_is_shown_in_ms(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    load(r, ns, SEED_TOML)
    far = 2**53 - 1  # the largest @ts there is: year 287396, past what a calendar shows
    assert cli(capsys, redis_url, ns, "send", "C=4", "--ts", str(far))[0] == 0
    drain(redis_url, ns, max_future_ms=0)
    code, out = cli(capsys, redis_url, ns, "values", "C")
    assert code == 0 and f"{far} ms" in out


def test_status_of_an_empty_namespace_says_so(
    capsys: pytest.CaptureFixture[str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    """A namespace with no graph and no streams (a typo in --ns, say) is an error, not a
    table of zeros; one with only a stream, or only a graph, is shown as usual."""
    url = ["--redis-url", redis_url, "--ns", ns]
    code, out, err = run(capsys, "status", *url)
    assert (code, out) == (1, "")
    assert err == (
        f"streamcalc: error: namespace {ns!r} has no graph and no streams (is --ns right? "
        "'streamcalc graph load FILE' starts one)\n"
    )
    assert run(capsys, "status", "--json", *url)[0] == 0  # scripts still get the snapshot
    r.xadd(Keys(ns).input, {"C": "1"})
    code, out, _ = run(capsys, "status", *url)
    assert code == 0 and out.startswith(f"namespace {ns!r}, graph version 0")
