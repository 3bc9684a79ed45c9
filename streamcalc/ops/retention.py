"""``streamcalc trim`` and ``worker --retain``: drop processed history, never what a group needs."""

from __future__ import annotations

import dataclasses

import msgspec
import redis

from streamcalc.errors import UsageError
from streamcalc.keys import Keys
from streamcalc.ops.streams import Layout, id_key, stream_keys
from streamcalc.scripts import Scripts, TrimRequest
from streamcalc.store import server_time_ms

#: Entries one trim script call removes at most (it is called again until done).
TRIM_CHUNK = 10_000


class StreamTrim(msgspec.Struct, frozen=True):
    """What a trim did (or, dry run, would do) to one stream."""

    key: str
    removed: int
    length: int  # entries left (dry run: that would be left)
    floor: str | None  # lowest ID some group still needs ("0-0": no group yet); None: no group


class PartitionTrim(msgspec.Struct, frozen=True):
    """What a trim did to one partition's streams (``partition`` None: the routing stream's)."""

    partition: int | None
    streams: dict[str, StreamTrim]


class TrimResult(msgspec.Struct, frozen=True):
    """The result of a trim; ``streams`` has the keys ``in``, ``out`` and ``dead``.

    For one partition, ``streams`` are its streams. For a namespace, each
    partition's are in ``partitions`` and ``streams`` sums them up: the
    namespace's own key, entries removed and left over all partitions, and the
    lowest floor of those that still hold entries.
    """

    dry_run: bool
    streams: dict[str, StreamTrim]
    partitions: list[PartitionTrim] = msgspec.field(default_factory=list)

    @property
    def removed(self) -> int:
        """Entries removed from all three streams."""
        return sum(s.removed for s in self.streams.values())


def _limits(
    client: redis.Redis, max_age_ms: int | None, max_len: int | None, chunk: int, now_ms: int | None
) -> str:
    """Check the limits; returns the age cutoff as a stream ID ("" = no age limit)."""
    if max_age_ms is None and max_len is None:
        raise UsageError("trim needs a maximum age or a maximum length (or both)")
    if (max_age_ms is not None and max_age_ms < 0) or (max_len is not None and max_len < 0):
        raise UsageError("maximum age and maximum length must not be negative")
    if chunk < 1:
        raise UsageError("chunk must be at least 1")
    if max_age_ms is None:
        return ""
    now = server_time_ms(client) if now_ms is None else now_ms
    return f"{max(now - max_age_ms, 0)}-0"


def trim(
    client: redis.Redis,
    where: Keys | Layout,
    *,
    max_age_ms: int | None = None,
    max_len: int | None = None,
    dry_run: bool = False,
    now_ms: int | None = None,
    chunk: int = TRIM_CHUNK,
) -> TrimResult:
    """Drop old entries of ``in``, ``out`` and ``dead``, never one a consumer group still needs.

    ``where`` is one partition, or a namespace's :class:`Layout`: then every
    partition and (``P > 1``) the routing stream, each stream bounded by
    ``max_len`` on its own and every age measured against one clock reading.

    An entry goes when it is older than ``max_age_ms`` (by its ID, against
    ``now_ms``, default the server's clock) or when more than ``max_len``
    newer entries follow it, and only when it lies below the stream's floor:
    the oldest entry that any group of that stream has pending or not yet
    delivered (trim.lua computes the floor and trims atomically). ``in``
    without any group keeps everything: nothing was acknowledged. ``out`` and
    ``dead`` have no groups of streamcalc's own, but a downstream consumer's
    group on them is respected the same way.

    Work is done in script calls of at most ``chunk`` entries, so Redis is never
    blocked for long; safe to run while workers run, and from several places.
    """
    cutoff = _limits(client, max_age_ms, max_len, chunk, now_ms)
    if isinstance(where, Keys):
        return TrimResult(dry_run, _trim_partition(client, where, cutoff, max_len, dry_run, chunk))
    parts = [
        PartitionTrim(
            where.number(keys),
            _trim_partition(client, keys, cutoff, max_len, dry_run, chunk),
        )
        for keys in where.everything()
    ]
    if not where.routed:
        return TrimResult(dry_run, parts[0].streams, parts)
    total = {
        name: StreamTrim(
            key,
            sum(p.streams[name].removed for p in parts),
            sum(p.streams[name].length for p in parts),
            _lowest([p.streams[name] for p in parts]),
        )
        for name, key in stream_keys(where.root)
    }
    return TrimResult(dry_run, total, parts)


def _trim_partition(
    client: redis.Redis, keys: Keys, cutoff: str, max_len: int | None, dry_run: bool, chunk: int
) -> dict[str, StreamTrim]:
    scripts = Scripts(client, keys)
    streams: dict[str, StreamTrim] = {}
    for name, key in stream_keys(keys):
        removed = 0
        request = TrimRequest(name == "in", cutoff, max_len, chunk, dry_run)
        while True:
            reply = scripts.trim(key, request)
            removed += reply.removed
            if not reply.more:
                break
            request = dataclasses.replace(request, after=reply.last, counted=removed)
        length = int(client.xlen(key)) - (removed if dry_run else 0)
        streams[name] = StreamTrim(key, removed, length, reply.floor)
    return streams


def _lowest(streams: list[StreamTrim]) -> str | None:
    """The lowest floor of the streams that still hold entries (else of all of them)."""
    holding = [s.floor for s in streams if s.floor is not None and s.length]
    known = holding or [s.floor for s in streams if s.floor is not None]
    return min(known, key=id_key) if known else None
