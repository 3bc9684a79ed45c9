"""The Python producer: validation before the write, and backpressure on the group's lag."""

from __future__ import annotations

import time

import pytest
import redis
from helpers import Background, load, outputs

from streamcalc.errors import BackpressureError, UsageError
from streamcalc.keys import Keys
from streamcalc.producer import Producer


def test_refuses_bad_readings_before_writing(r: redis.Redis, ns: str) -> None:
    producer = Producer(r, ns)
    for readings in ({"C": True}, {"C": "7"}, {"C": float("nan")}, {"1C": 1}, {"@key": 1}, {}):
        with pytest.raises(UsageError):
            producer.send(readings)
    assert r.xlen(Keys(ns).input) == 0
    entry_id = producer.send({"C": 4, "V": [1, 2.5]}, ts=1000)
    ((got_id, fields),) = r.xrange(Keys(ns).input)
    assert got_id.decode() == entry_id
    assert fields == {b"C": b"4", b"V": b"[1,2.5]", b"@ts": b"1000"}


def test_raise_when_lag_exceeds_the_limit(r: redis.Redis, ns: str) -> None:
    producer = Producer(r, ns, max_lag=10, on_full="raise")
    producer.send_many([{"C": i} for i in range(10)])
    with pytest.raises(BackpressureError, match="lags 10 entries"):
        producer.send({"C": 11})
    assert r.xlen(Keys(ns).input) == 10  # refused, not written


def test_wait_gives_up_after_its_deadline(r: redis.Redis, ns: str) -> None:
    producer = Producer(r, ns, max_lag=5, on_full="wait", wait_s=0.3)
    producer.send_many([{"C": i} for i in range(5)])
    started = time.monotonic()
    with pytest.raises(BackpressureError):
        producer.send({"C": 6})
    assert 0.25 < time.monotonic() - started < 5


def test_wait_proceeds_as_consumers_catch_up(redis_url: str, r: redis.Redis, ns: str) -> None:
    load(r, ns, '[nodes.S]\nexpr = "C + 1"\nmode = "latest"\n')
    producer = Producer(r, ns, max_lag=20, on_full="wait", wait_s=30)
    lags = []
    with Background(redis_url, ns, batch=5):
        for i in range(300):
            producer.send({"C": i})
            lags.append(producer.lag())
        deadline = time.monotonic() + 20
        while len(outputs(r, Keys(ns))) < 300:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert max(lags) <= 20  # Redis never held more than the limit of unfinished entries
