"""The Python consumer API: read latest values, past values, and follow derived values as they fire.

The counterpart of :class:`streamcalc.producer.Producer` for code that uses
what the workers compute::

    import redis
    from streamcalc.consumer import Consumer

    consumer = Consumer(redis.Redis(), "plant")
    consumer.latest(["B"], key="boiler-7")          # {'B': Latest(value=9, ts=1700000000000)}
    for value in consumer.subscribe(nodes=["B"]):   # every B of every key, as it fires
        print(value.key, value.node, value.value, value.ts)

A subscription reads the output streams of every partition (with ``keys``,
only those keys' partitions) with one blocking ``XREAD`` and yields values in
entry-ID order. It is resumable: :attr:`Subscription.position` holds the last
entry ID seen in each partition, and ``subscribe(after=position)`` goes on
from exactly there, neither missing a value nor repeating one (as long as
the output streams were not trimmed past it). Nothing here writes to Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import NamedTuple

import msgspec
import redis

from streamcalc import ops
from streamcalc.errors import UsageError
from streamcalc.graph import valid_node_name
from streamcalc.ops.streams import check_id
from streamcalc.ops.timeline import Follow, start_after
from streamcalc.store import fetch_graph, latest_values
from streamcalc.values import Value

__all__ = ["Consumer", "Derived", "Latest", "Position", "Subscription"]

#: Where a subscription stands: partition -> the last entry ID seen in its output stream.
Position = dict[int, str]


class Latest(NamedTuple):
    """A node's latest value and its event time (ms since the epoch)."""

    value: Value
    ts: int


class Derived(msgspec.Struct, frozen=True):
    """One fired value, as a subscription yields it."""

    node: str
    value: Value
    ts: int  # the value's event time, ms since the epoch
    key: str  # the entry's @key ("" for the empty key)
    id: str  # its entry ID in the output stream of `partition`
    partition: int
    src: str  # the ID of the input entry whose wave fired it


class Consumer:
    """Reads a namespace's values; works the same on 1 or P partitions.

    ``client`` may return bytes or text. The partition count is read once,
    when the consumer is made (it is fixed once a namespace holds state).
    """

    def __init__(self, client: redis.Redis, ns: str = "default") -> None:
        self.client = client
        self.layout = ops.layout(client, ns)

    @property
    def ns(self) -> str:
        """The namespace read."""
        return self.layout.ns

    def latest(self, nodes: Iterable[str] | None = None, key: str = "") -> dict[str, Latest]:
        """The latest value of each of ``nodes`` (None: every node of the graph) of ``key``.

        Nodes without a value yet are left out.
        """
        if key:
            ops.check_key(key)
        if nodes is None:
            graph = fetch_graph(self.client, self.layout.root)[1]
            names = sorted(graph.inputs | set(graph.nodes)) if graph is not None else []
        else:
            names = _checked(nodes)
        found = latest_values(self.client, self.layout.of_key(key), names, key) if names else {}
        return {node: Latest(value, ts) for node, (ts, value) in found.items()}

    def history(
        self, node: str, *, key: str | None = None, since_ms: int | None = None, limit: int = 100
    ) -> list[ops.PastValue]:
        """Past values of ``node`` (readings and fired values), newest first.

        ``key``: only that key's (None: every key's); ``since_ms``: only
        entries written at or after that time (ms since the epoch).
        """
        _checked([node])
        if key is not None:
            ops.check_key(key)
        return ops.history(self.client, self.layout, node, key=key, since_ms=since_ms, limit=limit)

    def subscribe(
        self,
        nodes: Collection[str] | None = None,
        keys: Collection[str] | None = None,
        *,
        after: str | Mapping[int, str] = "$",
        block_ms: int = 1000,
        stop: Callable[[], bool] | None = None,
    ) -> Subscription:
        """Follow the derived values of ``nodes`` (None: all) of ``keys`` (None: every key;
        ``""`` is the empty key).

        ``after``: ``"$"`` (values fired from now on), ``"0"`` (everything still
        in the streams), an entry ID (after it, in every partition), or a
        :data:`Position` from an earlier subscription. ``stop`` is asked
        between reads (every ``block_ms`` at most) whether to end.
        """
        wanted_nodes = None if nodes is None else frozenset(_checked(nodes))
        # "" is the empty key: the values of entries without @key.
        wanted_keys = None if keys is None else frozenset(k and ops.check_key(k) for k in keys)
        if wanted_keys is None:
            readers = self.layout.partitions
        else:  # only the partitions of the keys wanted, each once
            readers = list(
                {self.layout.of_key(k).output: self.layout.of_key(k) for k in wanted_keys}.values()
            )
        streams = {keys.output: self.layout.number(keys) or 0 for keys in readers}
        start = {stream: self._start(stream, number, after) for stream, number in streams.items()}
        follow = Follow(
            self.client,
            start,
            streams,
            block_ms=block_ms,
            stop=stop,
            nodes=wanted_nodes,
            keys=wanted_keys,
        )
        return Subscription(follow)

    def _start(self, stream: str, partition: int, after: str | Mapping[int, str]) -> str:
        if isinstance(after, str):
            return start_after(
                self.client, stream, after if after in ("$", "0") else check_id(after)
            )
        return check_id(after[partition]) if partition in after else "0-0"


class Subscription(Iterator[Derived]):
    """An iterator of fired values; :attr:`position` says where to resume it."""

    def __init__(self, follow: Follow) -> None:
        self._follow = follow

    @property
    def position(self) -> Position:
        """partition -> where to resume in its output stream (pass it as ``after``).

        Every value up to it was yielded (or was not wanted); none after it was.
        """
        follow = self._follow
        return {follow.partitions[stream]: last for stream, last in follow.position.items()}

    def __next__(self) -> Derived:
        emitted = next(self._follow)
        out = emitted.output
        return Derived(out.node, out.value, out.ts, out.key, emitted.id, emitted.partition, out.src)


def _checked(nodes: Iterable[str]) -> list[str]:
    names = list(nodes)
    for node in names:
        if not valid_node_name(node):
            raise UsageError(f"bad node name {node!r}")
    return names
