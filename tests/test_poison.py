"""A poison entry (delivered more than --max-deliveries times) becomes a dead letter without a
worker first reading its fields: fetch.lua checks the delivery counts and cuts it."""

from __future__ import annotations

import redis
from helpers import dead_letters, drain, load, outputs

from streamcalc.keys import Keys
from streamcalc.scripts import DEAD_BYTES_LIMIT, DEAD_VALUE_PREFIX, Scripts

GROUP = "streamcalc"
VALUE = b"[" + b",".join([b"123456789.1234"] * 4000) + b"]"  # 60 KB: a valid vector value


def _huge_entry(r: redis.Redis, keys: Keys, fields: int) -> str:
    entry = {f"V{i}": VALUE for i in range(fields)}
    return r.xadd(keys.input, entry).decode()  # type: ignore[arg-type]


def _deliver(r: redis.Redis, keys: Keys, times: int) -> None:
    """A consumer that keeps dying on its entries: read, read again, ..."""
    for i in range(times):
        r.xreadgroup(GROUP, "doomed", {keys.input: "0" if i else ">"}, count=1)


def test_a_poison_entry_is_handed_over_cut_not_read(r: redis.Redis, keys: Keys) -> None:
    r.xgroup_create(keys.input, GROUP, id="0", mkstream=True)
    poison = _huge_entry(r, keys, 200)  # 12 MB
    _deliver(r, keys, 3)
    scripts = Scripts(r, keys)
    token = scripts.take_lease(GROUP, "doomed", 60_000).token
    assert token is not None
    reply = scripts.read(GROUP, "doomed", token, 10, "0", max_deliveries=3)
    assert reply.entries == [] and reply.poison is not None
    assert reply.poison.id.decode() == poison and reply.poison.deliveries == 4
    assert reply.poison.total_fields == 200
    kept = reply.poison.fields or []
    assert sum(map(len, kept)) < DEAD_BYTES_LIMIT + 200 * (DEAD_VALUE_PREFIX + 8)
    assert len(reply.poison.cut) == 200 - DEAD_BYTES_LIMIT // len(VALUE)
    # the give-up is no delivery: the entry is still pending with its old count
    (pending,) = r.xpending_range(keys.input, GROUP, "-", "+", 10)
    assert pending["times_delivered"] == 3
    # below the limit, own pending entries are read as usual
    assert scripts.read(GROUP, "doomed", token, 10, "0", max_deliveries=5).entries


def test_a_huge_poison_entry_is_a_truncated_dead_letter_and_the_rest_goes_on(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    r.xgroup_create(keys.input, GROUP, id="0", mkstream=True)
    poison = _huge_entry(r, keys, 100)
    r.xadd(keys.input, {"X": "1"})
    r.xadd(keys.input, {"X": "2"})
    _deliver(r, keys, 2)
    drain(redis_url, ns, claim_idle_ms=0, max_deliveries=2)
    (letter,) = dead_letters(r, keys)
    assert letter["@src"] == poison and letter["@deliveries"] == "3"
    assert letter["@truncated"] == "1"
    assert "delivered 3 times (limit 2); poison entry" in letter["@error"]
    assert f"the first {DEAD_VALUE_PREFIX} bytes of 'V" in letter["@error"]
    assert len(letter["V0"]) == len(VALUE) and len(letter["V99"]) == DEAD_VALUE_PREFIX
    assert [v for _, v, _, _ in outputs(r, keys)] == [2, 3]
    assert r.xpending(keys.input, GROUP)["pending"] == 0


def test_a_poison_entry_of_the_routing_stream_is_a_dead_letter_not_left_pending(
    redis_url: str, r: redis.Redis, ns: str
) -> None:
    """A partitioned namespace's router meets a poison entry among its own pending ones
    (it kept dying on it): the entry becomes a dead letter of the routing stream, the
    entries behind it are routed and processed, nothing stays pending."""
    from streamcalc.graph import parse_graph_text
    from streamcalc.keys import Namespace
    from streamcalc.store import store_graph

    store_graph(r, ns, parse_graph_text('[nodes.S]\nexpr = "X + 1"\n', "<test>"), partitions=2)
    root = Namespace(ns).root
    r.xgroup_create(root.input, GROUP, id="0", mkstream=True)
    poison = _huge_entry(r, root, 100)
    r.xadd(root.input, {"X": "1", "@key": "a"})
    _deliver(r, root, 2)
    drain(redis_url, ns, claim_idle_ms=0, max_deliveries=2)
    (letter,) = dead_letters(r, root)
    assert letter["@src"] == poison and letter["@deliveries"] == "3"
    assert "poison entry" in letter["@error"]
    parts = Namespace(ns).partitions(2)
    assert [v for keys in parts for _, v, _, _ in outputs(r, keys)] == [2]
    assert r.xpending(root.input, GROUP)["pending"] == 0
