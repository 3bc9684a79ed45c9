"""A dead letter keeps its entry exactly, and a retry queues exactly that entry again."""

from __future__ import annotations

import redis
from helpers import drain, load

from streamcalc import ops
from streamcalc.keys import Keys


def test_a_letter_keeps_fields_named_like_its_own_and_a_retry_restores_them(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    original = {
        b"X": b"1",
        b"@error": b"forged",
        b"@node": b"S",
        b"@in_src": b"x",
        b"@deliveries": b"9",
        b"@src": b"upstream-1",
    }
    entry_id = r.xadd(keys.input, original).decode()  # type: ignore[arg-type]
    drain(redis_url, ns)
    [letter] = ops.dead_list(r, keys)
    assert letter.src == entry_id and "unknown reserved field" in letter.error
    assert letter.fields == {k.decode(): v.decode() for k, v in original.items()}
    assert ops.dead_retry(r, keys, [letter.id]) == 1
    [(_, again)] = r.xrange(keys.input, min=f"({entry_id}")
    assert again == {**original, b"@ts": entry_id.partition("-")[0].encode()}  # + its event time
    drain(redis_url, ns)
    [letter] = ops.dead_list(r, keys)  # rejected again, for the same reason: nothing was forged
    assert "unknown reserved field" in letter.error
    assert r.xlen(keys.output) == 0


def test_a_truncated_letter_is_not_retried(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    r.xadd(keys.input, {"X": b"1" * 100_000})
    drain(redis_url, ns)
    [letter] = ops.dead_list(r, keys)
    assert ops.dead_retry(r, keys, [letter.id]) == 0
    assert [d.id for d in ops.dead_list(r, keys)] == [letter.id]
