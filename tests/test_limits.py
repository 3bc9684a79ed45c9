"""Limits a careless producer meets: huge integers (exact or a dead letter, never rounded)."""

from __future__ import annotations

import redis
from helpers import dead_letters, drain, load

from streamcalc.keys import Keys


def test_huge_integers_are_exact_end_to_end_or_dead_letters(
    redis_url: str, r: redis.Redis, ns: str, keys: Keys
) -> None:
    load(r, ns, '[nodes.S]\nexpr = "X + 1"\n')
    r.xadd(keys.input, {"X": str(2**62 + 1)})
    rounded = r.xadd(keys.input, {"X": "18446744073709551617"}).decode()
    drain(redis_url, ns)
    ((_, out),) = r.xrange(keys.output)
    assert out[b"S"] == str(2**62 + 2).encode()  # not 4.611686018427388e+18
    assert r.hget(keys.latest, "X").split()[1] == str(2**62 + 1).encode()  # type: ignore[union-attr]
    (letter,) = dead_letters(r, keys)
    assert letter["@src"] == rounded and "integer beyond +-(2^63 - 1)" in letter["@error"]
