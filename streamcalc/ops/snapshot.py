"""``streamcalc status``: a snapshot of a namespace's streams, groups, consumers, lag and rates."""

from __future__ import annotations

import msgspec
import redis

from streamcalc.keys import Keys
from streamcalc.messages import id_ms
from streamcalc.ops.streams import as_text, stream_keys
from streamcalc.store import count_after, read_range, server_time_ms

#: Rates are measured over this window, ending at the Redis server's clock.
RATE_WINDOW_MS = 60_000
#: At most this many entries per stream are read to measure a rate; a busier
#: window is estimated from the time span of its newest RATE_SAMPLE_CAP entries.
RATE_SAMPLE_CAP = 10_000


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


class Rates(msgspec.Struct, frozen=True):
    """Input entries and output values per second over the last ``window_s`` seconds."""

    window_s: float
    input_per_s: float
    output_per_s: float
    input_entries: int  # entries of `in` in the window (at most RATE_SAMPLE_CAP)
    output_values: int  # entries of `out` in the window (at most RATE_SAMPLE_CAP)
    estimated: bool  # a window held more than RATE_SAMPLE_CAP entries: rate estimated


class Status(msgspec.Struct, frozen=True):
    """Everything ``streamcalc status`` shows; also its ``--json`` output.

    ``streams`` has the keys ``in``, ``out`` and ``dead``; ``graph_version`` is
    ``"0"`` when no graph was ever loaded.
    """

    ns: str
    graph_version: str
    streams: dict[str, StreamStatus]
    dead_letters: int
    rates: Rates


def status(client: redis.Redis, keys: Keys) -> Status:
    """A snapshot of the namespace: streams, groups, consumers, lag, dead letters, rates.

    Each part is read separately (not one atomic snapshot); that is what an
    operator's view needs, and it never blocks Redis for long.
    """
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.meta, "graph_version")
    for _, key in stream_keys(keys):
        pipe.exists(key)
        pipe.xlen(key)
        pipe.xrange(key, count=1)
        pipe.xrevrange(key, count=1)
    version, *replies = pipe.execute()
    streams: dict[str, StreamStatus] = {}
    for i, (name, key) in enumerate(stream_keys(keys)):
        exists, length, first, last = replies[4 * i : 4 * i + 4]
        streams[name] = StreamStatus(
            key=key,
            length=int(length),
            first_id=as_text(first[0][0]) if first else None,
            last_id=as_text(last[0][0]) if last else None,
            groups=_groups(client, key) if exists else [],
        )
    now_ms = server_time_ms(client)
    input_entries, input_rate, input_estimated = _rate(client, keys.input, now_ms)
    output_values, output_rate, output_estimated = _rate(client, keys.output, now_ms)
    return Status(
        ns=keys.ns,
        graph_version=as_text(version) if version else "0",
        streams=streams,
        dead_letters=streams["dead"].length,
        rates=Rates(
            window_s=RATE_WINDOW_MS / 1000,
            input_per_s=input_rate,
            output_per_s=output_rate,
            input_entries=input_entries,
            output_values=output_values,
            estimated=input_estimated or output_estimated,
        ),
    )


def _groups(client: redis.Redis, key: str) -> list[GroupStatus]:
    try:
        infos = client.xinfo_groups(key)
    except redis.ResponseError:  # the stream vanished since we looked
        return []
    groups = []
    for info in infos:
        name = as_text(info["name"])
        last = as_text(info["last-delivered-id"])
        lag = info.get("lag")
        capped = False
        if lag is None:
            lag, capped = count_after(client, key, last)
        consumers = [
            ConsumerStatus(as_text(c["name"]), int(c["pending"]), int(c["idle"]))
            for c in client.xinfo_consumers(key, name)
        ]
        groups.append(GroupStatus(name, int(info["pending"]), last, int(lag), capped, consumers))
    return groups


def _rate(client: redis.Redis, key: str, now_ms: int) -> tuple[int, float, bool]:
    """(entries in the window, entries per second, estimated) from the stream's IDs."""
    start = max(now_ms - RATE_WINDOW_MS, 0)
    rows = read_range(client, key, f"{start}-0", count=RATE_SAMPLE_CAP, reverse=True)
    if len(rows) < RATE_SAMPLE_CAP:
        return len(rows), len(rows) * 1000 / RATE_WINDOW_MS, False
    span_ms = max(now_ms - id_ms(rows[-1][0]), 1)
    return len(rows), len(rows) * 1000 / span_ms, True
