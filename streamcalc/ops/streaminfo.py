"""What ``status`` reads of many streams at once: lengths, ends, groups and consumers.

Each step is one pipeline over every stream, so a namespace of many
partitions costs a few round trips, not a few per partition; and the work
that grows with a stream's size (counting a lag Redis does not report) shares
one budget over all streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import redis

from streamcalc import store
from streamcalc.ops.streams import as_text, id_key, page_size


class ConsumerStatus(msgspec.Struct, frozen=True):
    """One consumer of a group (XINFO CONSUMERS)."""

    name: str
    pending: int  # entries delivered to it and not yet acknowledged
    idle_ms: int  # since its last read or claim


class GroupStatus(msgspec.Struct, frozen=True):
    """One consumer group of a stream (XINFO GROUPS)."""

    name: str
    pending: int  # delivered, not yet acknowledged
    last_delivered_id: str
    lag: int | None  # entries not yet delivered; None when unknown
    lag_capped: bool  # lag was counted and reached store.LAG_COUNT_CAP: it is a lower bound
    consumers: list[ConsumerStatus]


class StreamStatus(msgspec.Struct, frozen=True):
    """One stream: its length, oldest and newest entry IDs, and its groups."""

    key: str
    length: int
    first_id: str | None
    last_id: str | None
    groups: list[GroupStatus]


def read_streams(client: redis.Redis, keys: Sequence[str]) -> list[StreamStatus]:
    """The status of each stream of ``keys``, in that order (a missing stream is empty)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
        pipe.xlen(key)
        pipe.xrange(key, count=1)
        pipe.xrevrange(key, count=1)
    replies = pipe.execute()
    exists = replies[0::4]
    ends = [replies[4 * i + 1 : 4 * i + 4] for i in range(len(keys))]
    groups = _groups(client, [key for key, found in zip(keys, exists, strict=True) if found])
    return [
        StreamStatus(
            key=key,
            length=int(length),
            first_id=as_text(first[0][0]) if first else None,
            last_id=as_text(last[0][0]) if last else None,
            groups=groups.get(key, []),
        )
        for key, (length, first, last) in zip(keys, ends, strict=True)
    ]


def _groups(client: redis.Redis, keys: Sequence[str]) -> dict[str, list[GroupStatus]]:
    """The groups of each stream (XINFO GROUPS and CONSUMERS in two pipelines)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.xinfo_groups(key)
    infos: dict[str, list[dict[str, Any]]] = {}
    for key, reply in zip(keys, pipe.execute(raise_on_error=False), strict=True):
        if not isinstance(reply, Exception):  # the stream vanished since we looked
            infos[key] = reply
    pipe = client.pipeline(transaction=False)
    for key, groups in infos.items():
        for info in groups:
            pipe.xinfo_consumers(key, as_text(info["name"]))
    consumers = iter(pipe.execute(raise_on_error=False))
    uncounted = sum(info.get("lag") is None for groups in infos.values() for info in groups)
    cap = page_size(store.LAG_COUNT_CAP, uncounted, least=1)
    result: dict[str, list[GroupStatus]] = {}
    for key, groups in infos.items():
        for info in groups:
            last = as_text(info["last-delivered-id"])
            lag, capped = info.get("lag"), False
            if lag is None:
                lag, capped = store.count_after(client, key, last, cap)
            members = next(consumers)
            listed = [] if isinstance(members, Exception) else members
            result.setdefault(key, []).append(
                GroupStatus(
                    name=as_text(info["name"]),
                    pending=int(info["pending"]),
                    last_delivered_id=last,
                    lag=int(lag),
                    lag_capped=capped,
                    consumers=[
                        ConsumerStatus(as_text(c["name"]), int(c["pending"]), int(c["idle"]))
                        for c in listed
                    ],
                )
            )
    return result


def combine(key: str, streams: Sequence[StreamStatus]) -> StreamStatus:
    """Streams of one name over several partitions, as one: lengths and lags add up.

    A group's consumers are merged by name (pending added, the least idle
    time); its last delivered ID is the newest of any partition.
    """
    firsts = [s.first_id for s in streams if s.first_id is not None]
    lasts = [s.last_id for s in streams if s.last_id is not None]
    by_name: dict[str, list[GroupStatus]] = {}
    for stream in streams:
        for group in stream.groups:
            by_name.setdefault(group.name, []).append(group)
    return StreamStatus(
        key=key,
        length=sum(s.length for s in streams),
        first_id=min(firsts, key=id_key) if firsts else None,
        last_id=max(lasts, key=id_key) if lasts else None,
        groups=[_combine_groups(name, groups) for name, groups in sorted(by_name.items())],
    )


def _combine_groups(name: str, groups: Sequence[GroupStatus]) -> GroupStatus:
    consumers: dict[str, ConsumerStatus] = {}
    for group in groups:
        for c in group.consumers:
            seen = consumers.get(c.name)
            if seen is not None:
                c = ConsumerStatus(c.name, seen.pending + c.pending, min(seen.idle_ms, c.idle_ms))
            consumers[c.name] = c
    lags = [g.lag for g in groups]
    return GroupStatus(
        name=name,
        pending=sum(g.pending for g in groups),
        last_delivered_id=max((g.last_delivered_id for g in groups), key=id_key),
        lag=None if None in lags else sum(lag or 0 for lag in lags),
        lag_capped=any(g.lag_capped for g in groups),
        consumers=[consumers[n] for n in sorted(consumers)],
    )
