"""The ACLs of the README's Security section, created on the test's redis-server: a producer,
a worker and a reader each work with exactly their ACL, and no more."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import Background, load, outputs, wait_for

from streamcalc import ops
from streamcalc.keys import Keys
from streamcalc.producer import Producer

README = Path(__file__).parent.parent / "README.md"


def acl_rules(ns: str) -> dict[str, str]:
    """role -> the README's ACL rules (its Security section), for namespace ``ns``."""
    found = re.findall(r"^ACL SETUSER (\w+) on >PASSWORD (.+)$", README.read_text(), re.MULTILINE)
    rules = {role: text.replace("{plant", "{" + ns) for role, text in found}
    assert set(rules) == {"producer", "worker", "reader"}
    return rules


@pytest.fixture
def users(r: redis.Redis, redis_url: str, ns: str) -> Iterator[dict[str, str]]:
    """role -> a Redis URL of a fresh ACL user with that role's rules."""
    urls: dict[str, str] = {}
    names = []
    for role, rules in acl_rules(ns).items():
        name, password = f"{role}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        r.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules.split())
        names.append(name)
        urls[role] = redis_url.replace("redis://", f"redis://{name}:{password}@")
    try:
        yield urls
    finally:
        r.execute_command("ACL", "DELUSER", *names)


def test_producer_worker_and_reader_each_work_with_exactly_their_acl(
    r: redis.Redis, ns: str, keys: Keys, users: dict[str, str]
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + Y"\nmode = "latest"\n')
    producer = redis.Redis.from_url(users["producer"])
    reader = redis.Redis.from_url(users["reader"])
    try:
        producer.xadd(keys.input, {"X": "1", "Y": "2"})
        Producer(producer, ns).send({"X": 10})
        for denied in (
            lambda: producer.hset(keys.graph, "S", "{}"),  # the graph: no
            lambda: producer.xadd(keys.output, {"S": "666"}),  # forged output: no
            lambda: producer.xrange(keys.input),  # reading: no
            lambda: producer.xadd(f"sc:{{{ns}x}}:in", {"X": "1"}),  # another namespace: no
            lambda: producer.hset(keys.meta, "partitions", "4"),  # meta is read-only
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                denied()
        with Background(users["worker"], ns):
            wait_for(lambda: len(outputs(r, keys)) == 2, timeout=30)
        assert [v for _, v, _, _ in outputs(r, keys)] == [3, 12]
        snapshot = ops.status(reader, keys)
        assert snapshot.streams["out"].length == 2
        assert [v.value for v in ops.history(reader, keys, "S")] == [12, 3]
        assert ops.dead_list(reader, keys) == []
        for denied in (
            lambda: reader.xadd(keys.input, {"X": "1"}),
            lambda: reader.hset(keys.graph, "S", "{}"),
            lambda: reader.eval("return redis.call('DEL', KEYS[1])", 1, keys.output),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                denied()
        assert r.xlen(keys.output) == 2
    finally:
        producer.close()
        reader.close()
