"""``streamcalc status``: a snapshot of a namespace: its partitions, owners, lag and rates.

Every partition is listed with its streams, its group's lag, pending entries
and consumers, and its owner (the worker that holds its lease); with ``P > 1``
partitions the routing stream is listed too, as ``router``. ``streams`` sums up
every partition's streams of each name, so a script that reads the lag or the
dead letters of the namespace reads the same fields whatever ``P`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import msgspec
import redis

from streamcalc.keys import Keys, Namespace
from streamcalc.ops.rates import Rates, idle_s, rates
from streamcalc.ops.streaminfo import ConsumerStatus, StreamStatus, combine, read_streams
from streamcalc.ops.streams import Layout, as_text, id_key, layout, stream_keys
from streamcalc.scripts import UNKNOWN_NAMES_KEPT, LeaseToken
from streamcalc.settings import DEFAULT_GROUP
from streamcalc.store import server_time_ms

_NAMES = ("in", "out", "dead")


class Owner(msgspec.Struct, frozen=True):
    """The worker that holds a partition's lease, and for how much longer unless renewed."""

    consumer: str
    epoch: int  # counts the takes of this partition's lease: a new owner, a new epoch
    expires_in_ms: int


class PartitionStatus(msgspec.Struct, frozen=True):
    """One partition (or, as ``router``, the routing stream): streams, group, owner."""

    partition: int | None  # None: the routing stream sc:{NS}:in of a partitioned namespace
    label: str  # as in the metrics' `partition` label: "-", "0".."P-1", "router"
    streams: dict[str, StreamStatus]
    group: str
    owner: Owner | None  # None: no worker holds the lease
    lag: int | None  # the group's: entries not yet delivered (None: no group yet)
    lag_capped: bool
    pending: int
    consumers: list[ConsumerStatus]


class Member(msgspec.Struct, frozen=True):
    """A live worker of the group, and when its membership runs out unless renewed."""

    name: str
    expires_in_ms: int


class UnknownName(msgspec.Struct, frozen=True):
    """A name read that is not a node of the graph, and about how often (since the graph's load)."""

    name: str
    count: int


class Totals(msgspec.Struct, frozen=True):
    """The group's lag and pending entries over every partition and the routing stream."""

    lag: int
    lag_capped: bool  # some lag was counted and reached its cap: the total is a lower bound
    pending: int
    owned: int  # partitions (and routing stream) that have an owner


class Status(msgspec.Struct, frozen=True):
    """Everything ``streamcalc status`` shows; also its ``--json`` output.

    ``streams`` has the keys ``in``, ``out`` and ``dead`` (with ``P > 1``, each
    the sum over the partitions and the routing stream, keyed by the namespace's
    own stream); ``graph_version`` is ``"0"`` when no graph was ever loaded.
    """

    ns: str
    graph_version: str
    streams: dict[str, StreamStatus]
    dead_letters: int
    rates: Rates
    group: str = DEFAULT_GROUP
    partition_count: int = 1
    partitions: list[PartitionStatus] = msgspec.field(default_factory=list)
    router: PartitionStatus | None = None
    members: list[Member] = msgspec.field(default_factory=list)
    totals: Totals | None = None
    unknown_names: list[UnknownName] = msgspec.field(default_factory=list)
    """The most frequent names read that are not nodes, most frequent first (at most
    UNKNOWN_NAMES_SHOWN)."""


#: How many of the most frequent unknown names ``status`` lists.
UNKNOWN_NAMES_SHOWN = 20


def status(
    client: redis.Redis,
    where: Keys | Layout,
    group: str = DEFAULT_GROUP,
    *,
    measured: Rates | None = None,
) -> Status:
    """A snapshot of the namespace: every partition's streams, group, owner; rates, members.

    ``where`` is the namespace's :class:`Layout` (or the keys of its root,
    whose layout is then read). Each part is read separately (not one atomic
    snapshot); that is what an operator's view needs, and it never blocks
    Redis for long: every step is one pipeline over all partitions.
    ``measured``: rates the caller counted itself (the live page, which samples
    every second, counts them from its samples); without, they are counted
    from the streams' entry IDs.
    """
    shape = layout(client, where.ns) if isinstance(where, Keys) else where
    every = shape.everything()
    now_ms = server_time_ms(client)
    read = read_streams(client, [key for keys in every for _, key in stream_keys(keys)])
    owners = _owners(client, every, group)
    parts = [
        _partition(shape, keys, dict(zip(_NAMES, read[3 * i : 3 * i + 3], strict=True)), group)
        for i, keys in enumerate(every)
    ]
    parts = [
        msgspec.structs.replace(p, owner=owner) for p, owner in zip(parts, owners, strict=True)
    ]
    router = parts.pop() if shape.routed else None
    listed = [*parts, *([router] if router else [])]
    streams = {
        name: combine(key, [p.streams[name] for p in listed]) if shape.routed else read[i]
        for i, (name, key) in enumerate(stream_keys(shape.root))
    }
    version = cast(bytes | None, client.hget(shape.root.meta, "graph_version"))
    return Status(
        ns=shape.ns,
        graph_version=as_text(version) if version else "0",
        streams=streams,
        dead_letters=streams["dead"].length,
        rates=msgspec.structs.replace(
            rates(client, shape.partitions, now_ms) if measured is None else measured,
            input_idle_s=idle_s(_newest(parts, "in"), now_ms),
            output_idle_s=idle_s(_newest(parts, "out"), now_ms),
        ),
        group=group,
        partition_count=shape.count,
        partitions=parts,
        router=router,
        members=_members(client, shape.ns, group, now_ms),
        totals=Totals(
            lag=sum(p.lag or 0 for p in listed),
            lag_capped=any(p.lag_capped for p in listed),
            pending=sum(p.pending for p in listed),
            owned=sum(p.owner is not None for p in listed),
        ),
        unknown_names=_unknown_names(client, every),
    )


def _unknown_names(client: redis.Redis, every: Sequence[Keys]) -> list[UnknownName]:
    """The most frequent unknown names over every partition (each keeps its own few)."""
    pipe = client.pipeline(transaction=False)
    for keys in every:
        pipe.zrevrange(keys.unknown, 0, UNKNOWN_NAMES_KEPT - 1, withscores=True)
    counts: dict[str, int] = {}
    for rows in pipe.execute():
        for name, score in cast(list[tuple[bytes, float]], rows):
            text = as_text(name)
            counts[text] = counts.get(text, 0) + int(score)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [UnknownName(name, count) for name, count in ranked[:UNKNOWN_NAMES_SHOWN]]


def _partition(
    shape: Layout, keys: Keys, streams: dict[str, StreamStatus], group: str
) -> PartitionStatus:
    number = shape.number(keys)
    mine = next((g for g in streams["in"].groups if g.name == group), None)
    return PartitionStatus(
        partition=number,
        label="router" if number is None else keys.label,
        streams=streams,
        group=group,
        owner=None,
        lag=None if mine is None else mine.lag,
        lag_capped=mine is not None and mine.lag_capped,
        pending=0 if mine is None else mine.pending,
        consumers=[] if mine is None else mine.consumers,
    )


def _owners(client: redis.Redis, every: Sequence[Keys], group: str) -> list[Owner | None]:
    """The holder of each partition's lease (a :class:`LeaseToken`), from one pipeline."""
    pipe = client.pipeline(transaction=False)
    for keys in every:
        pipe.get(keys.lease(group))
        pipe.pttl(keys.lease(group))
    replies = pipe.execute()
    owners: list[Owner | None] = []
    for raw, ttl in zip(replies[0::2], replies[1::2], strict=True):
        token = LeaseToken.parse(as_text(raw)) if raw else None
        owners.append(Owner(token.consumer, token.epoch, max(int(ttl), 0)) if token else None)
    return owners


def _members(client: redis.Redis, ns: str, group: str, now_ms: int) -> list[Member]:
    """The live workers of the group (their membership has not run out)."""
    raw = cast(
        list[tuple[bytes, float]],
        client.zrangebyscore(Namespace(ns).members(group), now_ms + 1, "+inf", withscores=True),
    )
    members = [Member(as_text(name), int(score) - now_ms) for name, score in raw]
    return sorted(members, key=lambda m: m.name)


def _newest(parts: Sequence[PartitionStatus], name: str) -> str | None:
    """The newest entry ID of the partitions' streams called ``name``."""
    lasts = [last for p in parts if (last := p.streams[name].last_id) is not None]
    return max(lasts, key=id_key) if lasts else None
