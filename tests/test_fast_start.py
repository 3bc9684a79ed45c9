"""Fast start: the one-shot commands import only what they use.

``--help`` imports no Redis client at all; ``send`` and ``values`` import
redis-py's sync client but not its asyncio client nor importlib.metadata (see
:mod:`streamcalc.cli.lean`), and nothing else heavy (pydantic, rich).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis
from helpers import drain, load

from streamcalc.keys import Keys

GRAPH = '[nodes.A]\nfn = "add"\nargs = ["C", "D"]\n'
#: What would cost a command a tenth of a second or more to start (or means it did).
HEAVY = ("pydantic", "rich")
#: What ``--help`` needs no more than the rest: a Redis client and what reads Redis.
CLIENT = ("redis", "asyncio", "streamcalc.store", "streamcalc.ops")
#: What ``send`` and ``values`` leave unrun: redis-py's asyncio client, and the package
#: metadata redis-py would read its own version from.
UNUSED = (
    "redis.asyncio.client",
    "redis.asyncio.connection",
    "redis.asyncio.cluster",
    "redis.asyncio.sentinel",
    "importlib.metadata",
)


def imported(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``streamcalc ARGS`` with ``-X importtime``: its result and every module it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "streamcalc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return done, modules


@pytest.mark.parametrize(
    "args",
    [["--help"], ["send", "C=4", "D=[1,2]", "--key", "dev1"], ["send", "C=1"], ["values"]],
)
def test_quick_commands_import_nothing_heavy(
    env: dict[str, str], r: redis.Redis, ns: str, args: list[str]
) -> None:
    load(r, ns, GRAPH)
    done, modules = imported(env, *args)
    assert done.returncode == 0, done.stderr[-500:]
    avoid = HEAVY + CLIENT if args == ["--help"] else HEAVY
    heavy = {m for m in modules if m.split(".")[0] in avoid or m in avoid}
    assert not heavy, heavy
    if args != ["--help"]:
        assert "redis.client" in modules  # redis-py does the talking
        assert not modules & set(UNUSED), modules & set(UNUSED)


def test_deferred_packages_run_on_first_use(redis_url: str) -> None:
    """What ``send`` defers is still all there for whoever uses it in the same process:
    the asyncio client talks to Redis, the metadata answers, CLIENT SETINFO is unchanged
    (Redis 7.0 has no SETINFO: the client's own driver info is read)."""
    code = f"""
import asyncio, sys
from streamcalc.cli.lean import DeferredPackage, lean_redis
lean_redis()
from streamcalc.store import connect
client = connect({redis_url!r})
client.ping()
driver = client.connection_pool.connection_kwargs["driver_info"]  # what CLIENT SETINFO sends
assert "redis.asyncio.client" not in sys.modules
assert isinstance(sys.modules["importlib.metadata"], DeferredPackage)
import redis
from redis.asyncio import Redis
assert redis.asyncio.Redis is Redis is sys.modules["redis.asyncio.client"].Redis
async def ping() -> bool:
    async with Redis.from_url({redis_url!r}) as aclient:
        return await aclient.ping()
assert asyncio.run(ping())
from importlib.metadata import version
assert version("redis") == redis.__version__
assert not isinstance(sys.modules["importlib.metadata"], DeferredPackage)
print(driver.formatted_name, driver.lib_version)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-1000:]
    assert done.stdout.split() == ["redis-py", redis.__version__]


def test_send_and_values_do_it_all(
    env: dict[str, str], redis_url: str, r: redis.Redis, ns: str
) -> None:
    """What a user sees is the same whichever client did it: the entry lands, values reads it."""
    load(r, ns, GRAPH)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "streamcalc", *args],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout

    entry_id = cli("send", "C=4", "D=5", "--ts", "1700000000000").strip()
    assert r.xrange(Keys(ns).input) == [
        (entry_id.encode(), {b"C": b"4", b"D": b"5", b"@ts": b"1700000000000"})
    ]
    drain(redis_url, ns)
    got = json.loads(cli("values", "--json"))
    assert {node: v["value"] for node, v in got.items()} == {"A": 9, "C": 4, "D": 5}
    assert json.loads(cli("values", "A", "--json"))["A"]["ts"] == 1700000000000


@pytest.mark.parametrize(
    ("args", "alone"),
    [
        (["send", "C=1"], "send"),
        (["--cluster", "values", "--json"], "values"),
        (["values", "--help"], "values"),
        (["--help", "send"], None),
        (["status"], None),
        ([], None),
        (["--version"], None),
    ],
)
def test_quick_commands_start_alone(args: list[str], alone: str | None) -> None:
    """``send`` and ``values`` run in a group of their own (typer makes no other command's
    parameters); help, completion and every other command get the whole app."""
    from streamcalc.cli.app import app, app_for

    got = app_for(args)
    if alone is None:
        assert got is app
    else:
        assert [info.name for info in got.registered_commands] == [alone]


@pytest.mark.parametrize("command", ["send", "values"])
def test_quick_command_help_is_the_whole_apps(command: str) -> None:
    """What a quick command shows is what the whole app shows for it."""
    from typer.testing import CliRunner

    from streamcalc.cli.app import app, app_for

    runner = CliRunner()
    whole = runner.invoke(app, [command, "--help"], prog_name="streamcalc")
    alone = runner.invoke(app_for([command]), [command, "--help"], prog_name="streamcalc")
    assert whole.exit_code == alone.exit_code == 0
    assert alone.output == whole.output
    assert "Usage: streamcalc " + command in alone.output
