"""The Python consumer API against real workers: latest values, history, resumable subscriptions."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from helpers import Background, drain

from streamcalc.consumer import Consumer, Derived, Latest
from streamcalc.errors import UsageError
from streamcalc.graph import parse_graph_text
from streamcalc.keys import partition_of
from streamcalc.producer import Producer
from streamcalc.store import store_graph

GRAPH = '[nodes.A]\nfn = "add"\nargs = ["C", "D"]\n[nodes.B]\nexpr = "A * F"\n'
P = 4
DEVICES = ["dev0", "dev1", "dev4", "dev5", "pump-9"]


@pytest.fixture
def plant(r: redis.Redis, redis_url: str, ns: str) -> Producer:
    """A namespace of 4 partitions with the graph loaded, and a producer for it."""
    store_graph(r, ns, parse_graph_text(GRAPH, "<test>"), partitions=P)
    return Producer(r, ns)


def fire(producer: Producer, device: str, c: int) -> None:
    """One entry of ``device`` that fires A = c + 1 and B = 2 * A."""
    producer.send({"C": c, "D": 1, "F": 2}, key=device)


def until(deadline_s: float) -> Callable[[], bool]:
    deadline = time.monotonic() + deadline_s
    return lambda: time.monotonic() > deadline


def test_latest_values_of_a_key_and_of_the_empty_key(
    r: redis.Redis, redis_url: str, ns: str, plant: Producer
) -> None:
    fire(plant, "dev4", 3)
    plant.send({"C": 10, "D": 5, "F": 1})
    drain(redis_url, ns)
    consumer = Consumer(r, ns)
    assert consumer.layout.count == P
    got = consumer.latest(["A", "B", "nothing_yet"], key="dev4")
    assert {node: v.value for node, v in got.items()} == {"A": 4, "B": 8}
    assert isinstance(got["A"], Latest) and got["A"].ts > 0
    every = consumer.latest()  # every node of the graph, the empty key
    assert {node: v.value for node, v in every.items()} == {
        "A": 15,
        "B": 15,
        "C": 10,
        "D": 5,
        "F": 1,
    }
    assert consumer.latest(key="pump-9") == {}
    with pytest.raises(UsageError, match="bad key"):
        consumer.latest(["A"], key="bad key")
    with pytest.raises(UsageError, match="bad node name"):
        consumer.latest(["1A"])


def test_history_of_a_node_across_partitions(
    r: redis.Redis, redis_url: str, ns: str, plant: Producer
) -> None:
    for i, device in enumerate(DEVICES):
        fire(plant, device, i)
    drain(redis_url, ns)
    values = Consumer(r, ns).history("B")
    assert sorted(v.value for v in values) == [2 * (i + 1) for i in range(len(DEVICES))]
    assert [v.value for v in Consumer(r, ns).history("B", key="dev1")] == [4]


def test_subscribe_to_chosen_nodes_and_keys_and_resume_exactly(
    r: redis.Redis, redis_url: str, ns: str, plant: Producer
) -> None:
    for round_ in range(3):
        for i, device in enumerate(DEVICES):
            fire(plant, device, 10 * round_ + i)
    drain(redis_url, ns)
    consumer = Consumer(r, ns)
    wanted = {"dev1", "pump-9"}
    everything = list(consumer.subscribe(["B"], wanted, after="0", block_ms=10, stop=until(1)))
    assert all(isinstance(v, Derived) and v.node == "B" for v in everything)
    for device in wanted:  # each key's values in the order they fired
        i = DEVICES.index(device)
        assert [v.value for v in everything if v.key == device] == [
            2 * (10 * round_ + i + 1) for round_ in range(3)
        ]
    assert len(everything) == 6
    ids = [(int(v.id.split("-")[0]), int(v.id.split("-")[1])) for v in everything]
    assert ids == sorted(ids)  # in entry-ID order across partitions

    # Read two, stop, and resume from the position: nothing missed, nothing twice.
    first = consumer.subscribe(["B"], wanted, after="0", block_ms=10)
    head = [next(first), next(first)]
    rest = list(consumer.subscribe(["B"], wanted, after=first.position, block_ms=10, stop=until(1)))
    assert [v.id for v in head + rest] == [v.id for v in everything]


def test_subscribe_from_now_sees_only_new_values_as_they_fire(
    r: redis.Redis, redis_url: str, ns: str, plant: Producer
) -> None:
    fire(plant, "dev0", 1)
    drain(redis_url, ns)
    live = Consumer(r, ns).subscribe(nodes=["A"], block_ms=50, stop=until(20))
    with Background(redis_url, ns):
        fire(plant, "dev5", 41)
        fire(plant, "dev0", 7)
        got = [next(live), next(live)]
    assert [(v.key, v.node, v.value) for v in got] == [("dev5", "A", 42), ("dev0", "A", 8)]
    assert [v.partition for v in got] == [partition_of("dev5", P), partition_of("dev0", P)]


def test_subscribe_to_the_empty_key(
    r: redis.Redis, redis_url: str, ns: str, plant: Producer
) -> None:
    fire(plant, "dev1", 1)
    plant.send({"C": 2, "D": 2, "F": 1})  # no @key
    drain(redis_url, ns)
    got = list(Consumer(r, ns).subscribe(["B"], [""], after="0", block_ms=10, stop=until(1)))
    assert [(v.key, v.value) for v in got] == [("", 4)]
