"""Fast start: send, values and --help import neither redis-py nor pydantic, and still do it all.

The quick client they use (streamcalc.resp) is tested here against real
servers: a password, an ACL user, a database number, a Unix socket, error
replies, and the hand-over to redis-py for what it does not speak.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import drain, load

from streamcalc.embedded import EmbeddedRedis, free_port
from streamcalc.errors import RedisUnavailable
from streamcalc.keys import Keys
from streamcalc.resp import FullClientNeeded, QuickRedis, RedisReplyError

GRAPH = '[nodes.A]\nfn = "add"\nargs = ["C", "D"]\n'
#: What would cost a command a tenth of a second or more to start (or means it did).
HEAVY = ("redis", "pydantic", "asyncio", "rich", "streamcalc.store", "streamcalc.ops")


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
    heavy = {m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY}
    assert not heavy, heavy


def test_send_and_values_through_the_quick_client(
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


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A server with a password, an ACL user and a Unix socket."""
    sock = tmp_path_factory.mktemp("sock") / "redis.sock"
    server = EmbeddedRedis(
        extra_args=["--requirepass", "s3cret", "--unixsocket", str(sock), "--unixsocketperm", "700"]
    ).start()
    client = redis.Redis(port=server.port, password="s3cret")
    client.execute_command("ACL", "SETUSER", "app", "on", ">pw:1", "~*", "+@all")
    client.close()
    try:
        yield server
    finally:
        server.stop()


def test_quick_client_speaks_auth_acl_db_and_unix_sockets(
    guarded: EmbeddedRedis, tmp_path: Path
) -> None:
    port = guarded.port
    for url in (
        f"redis://:s3cret@127.0.0.1:{port}/3",
        f"redis://app:pw%3A1@127.0.0.1:{port}/3",
        f"redis://127.0.0.1:{port}?db=3&password=s3cret",
        f"unix://:s3cret@{guarded.extra_args[3]}?db=3",
    ):
        with QuickRedis(url) as quick:
            assert quick.execute("SET", "k", url) == b"OK", url
            assert quick.pipeline([("GET", "k"), ("DBSIZE",)]) == [url.encode(), 1]
    assert redis.Redis(port=port, password="s3cret", db=3).get("k") is not None
    with (
        QuickRedis(f"redis://:wrong@127.0.0.1:{port}/0") as quick,
        pytest.raises(RedisUnavailable, match=r"refused us") as refused,
    ):
        quick.execute("PING")
    assert "wrong" not in str(refused.value)
    with (
        QuickRedis(f"redis://127.0.0.1:{port}/0") as quick,
        pytest.raises(RedisUnavailable, match=r"refused us: NOAUTH"),
    ):
        quick.execute("PING")


def test_quick_client_errors_and_hand_over(redis_url: str) -> None:
    with QuickRedis(redis_url) as quick:
        with pytest.raises(RedisReplyError, match="redis error: ERR unknown command"):
            quick.execute("NOSUCHCOMMAND")
        assert quick.execute("PING") == b"PONG"  # the connection survives an error reply
    with pytest.raises(RedisUnavailable, match=r"cannot reach Redis at redis://:\*\*\*@"):
        QuickRedis(f"redis://:hunter2@127.0.0.1:{free_port()}/0").execute("PING")
    for url in ("rediss://localhost:6380/0", f"{redis_url}?socket_timeout=3"):
        with pytest.raises(FullClientNeeded):
            QuickRedis(url)


def test_quick_client_hands_a_cluster_over_to_redis_py(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cluster node that serves no slot yet answers CLUSTERDOWN: redis-py's to wait out.
    # The bus port must be given: port + 10000 may be taken, or past 65535.
    node = EmbeddedRedis(
        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "n.conf"),
                    "--cluster-port", str(free_port())]
    ).start()  # fmt: skip
    try:
        with QuickRedis(node.url) as quick:
            assert quick.execute("PING") == b"PONG"
            with pytest.raises(FullClientNeeded, match="CLUSTERDOWN"):
                quick.execute("HGET", "sc:{default}:meta", "partitions")
    finally:
        node.stop()
    with pytest.raises(FullClientNeeded):
        QuickRedis("redis://localhost:6379/0", cluster=True)  # --cluster
    monkeypatch.setenv("STREAMCALC_CLUSTER", "1")
    with pytest.raises(FullClientNeeded):
        QuickRedis("redis://localhost:6379/0")
