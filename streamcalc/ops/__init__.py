"""Operator functions over a namespace's streams: status, history, tail, dead letters, trim.

Pure library code: each function takes a redis client (bytes or text replies)
and the namespace's :class:`Keys`, reads or changes Redis, and returns
msgspec structs whose field names are also the keys of the CLI's ``--json``
output. Writes that must not race a worker (re-queuing dead letters, trimming)
run as Lua scripts (``scripts/dead_retry.lua``, ``scripts/trim.lua``).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec
import redis

from streamcalc.errors import EntryError, UsageError
from streamcalc.keys import Keys
from streamcalc.messages import OutputValue, decode_entry, decode_output, id_ms
from streamcalc.scripts import script_source
from streamcalc.store import read_range
from streamcalc.values import Value

#: Rates are measured over this window, ending at the Redis server's clock.
RATE_WINDOW_MS = 60_000
#: At most this many entries per stream are read to measure a rate; a busier
#: window is estimated from the time span of its newest RATE_SAMPLE_CAP entries.
RATE_SAMPLE_CAP = 10_000
#: Without a lag from Redis (before 7.0, or after XDEL), it is counted, up to this many.
LAG_COUNT_CAP = 10_000
#: Entries one trim script call removes at most (it is called again until done).
TRIM_CHUNK = 10_000
#: Entries read per XREVRANGE page by :func:`history`.
HISTORY_PAGE = 1_000
#: Dead-letter IDs handed to one dead_retry.lua call (or one XDEL).
DEAD_CHUNK = 100

_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")

_trim_source = script_source("trim")
_dead_retry_source = script_source("dead_retry")


# -- small helpers ---------------------------------------------------------------------------------


def check_id(text: str) -> str:
    """``text`` if it is a full stream entry ID (``ms-seq``), else raise UsageError."""
    if _ID.fullmatch(text) is None:
        raise UsageError(f"bad entry ID {text!r}: expected <ms>-<seq>, like 1700000000000-0")
    return text


def server_time_ms(client: redis.Redis) -> int:
    """The Redis server's clock in ms: the clock that stream IDs are made of."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(entry_id).partition("-")
    return int(ms), int(seq or 0)


Fields = dict[bytes, bytes]
StreamEntry = tuple[bytes, Fields]


def _entries(reply: Any) -> list[StreamEntry]:
    """XRANGE/XREVRANGE/XREAD entries as bytes, whatever the client's decode_responses."""
    return [
        (_bytes(entry_id), {_bytes(k): _bytes(v) for k, v in (fields or {}).items()})
        for entry_id, fields in reply
    ]


# -- status ----------------------------------------------------------------------------------------


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
    lag_capped: bool  # lag was counted and reached LAG_COUNT_CAP: it is a lower bound
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


def _stream_names(keys: Keys) -> tuple[tuple[str, str], ...]:
    return (("in", keys.input), ("out", keys.output), ("dead", keys.dead))


def status(client: redis.Redis, keys: Keys) -> Status:
    """A snapshot of the namespace: streams, groups, consumers, lag, dead letters, rates.

    Each part is read separately (not one atomic snapshot); that is what an
    operator's view needs, and it never blocks Redis for long.
    """
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.meta, "graph_version")
    for _, key in _stream_names(keys):
        pipe.exists(key)
        pipe.xlen(key)
        pipe.xrange(key, count=1)
        pipe.xrevrange(key, count=1)
    version, *replies = pipe.execute()
    streams: dict[str, StreamStatus] = {}
    for i, (name, key) in enumerate(_stream_names(keys)):
        exists, length, first, last = replies[4 * i : 4 * i + 4]
        streams[name] = StreamStatus(
            key=key,
            length=int(length),
            first_id=_text(first[0][0]) if first else None,
            last_id=_text(last[0][0]) if last else None,
            groups=_groups(client, key) if exists else [],
        )
    now_ms = server_time_ms(client)
    input_entries, input_rate, input_estimated = _rate(client, keys.input, now_ms)
    output_values, output_rate, output_estimated = _rate(client, keys.output, now_ms)
    return Status(
        ns=keys.ns,
        graph_version=_text(version) if version else "0",
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
        name = _text(info["name"])
        last = _text(info["last-delivered-id"])
        lag = info.get("lag")
        capped = False
        if lag is None:
            lag, capped = count_after(client, key, last)
        consumers = [
            ConsumerStatus(_text(c["name"]), int(c["pending"]), int(c["idle"]))
            for c in client.xinfo_consumers(key, name)
        ]
        groups.append(GroupStatus(name, int(info["pending"]), last, int(lag), capped, consumers))
    return groups


def count_after(
    client: redis.Redis, key: str, entry_id: str, cap: int = LAG_COUNT_CAP
) -> tuple[int, bool]:
    """(entries after ``entry_id``, whether the count stopped at ``cap``): a group's lag."""
    found = len(read_range(client, key, "(" + entry_id, count=cap))
    return found, found >= cap


def _rate(client: redis.Redis, key: str, now_ms: int) -> tuple[int, float, bool]:
    """(entries in the window, entries per second, estimated) from the stream's IDs."""
    start = max(now_ms - RATE_WINDOW_MS, 0)
    rows = read_range(client, key, f"{start}-0", count=RATE_SAMPLE_CAP, reverse=True)
    if len(rows) < RATE_SAMPLE_CAP:
        return len(rows), len(rows) * 1000 / RATE_WINDOW_MS, False
    span_ms = max(now_ms - id_ms(rows[-1][0]), 1)
    return len(rows), len(rows) * 1000 / span_ms, True


# -- history ---------------------------------------------------------------------------------------


class PastValue(msgspec.Struct, frozen=True):
    """One past value of a node: a reading of ``in`` or a fired value of ``out``."""

    ts: int
    value: Value
    entry_id: str  # the ID of the entry that carries it, in the stream named by `source`
    source: str  # "in" (a reading) or "out" (a fired value)


def _backwards(
    client: redis.Redis, key: str, since_ms: int | None, page: int = HISTORY_PAGE
) -> Iterator[StreamEntry]:
    """Entries of ``key`` newest first, down to ID time ``since_ms``, read in pages."""
    low = f"{since_ms}-0" if since_ms is not None else "-"
    high = "+"
    while True:
        rows = read_range(client, key, low, high, page, reverse=True)
        yield from rows
        if len(rows) < page:
            return
        high = "(" + rows[-1][0].decode()


def _readings(rows: Iterable[StreamEntry], node: str) -> Iterator[PastValue]:
    """Values of ``node`` in input entries that decode (others went to dead letters)."""
    field = node.encode()
    for entry_id, fields in rows:
        if field not in fields:
            continue
        flat = [part for pair in fields.items() for part in pair]
        try:
            entry = decode_entry(entry_id, flat)
        except EntryError:
            continue
        value = dict(entry.readings)[node]
        yield PastValue(entry.ts, value, entry.id, "in")


def _fired(rows: Iterable[StreamEntry], node: str) -> Iterator[PastValue]:
    """Values of ``node`` in output entries."""
    field = node.encode()
    for entry_id, fields in rows:
        if field not in fields:
            continue
        output = _output_or_none(fields)
        if output is not None and output.node == node:
            yield PastValue(output.ts, output.value, entry_id.decode(), "out")


def history(
    client: redis.Redis,
    keys: Keys,
    node: str,
    *,
    since_ms: int | None = None,
    limit: int | None = 100,
) -> list[PastValue]:
    """Past values of ``node``, newest first: readings from ``in``, fired values from ``out``.

    Both streams are read backwards from their ends in pages and merged by
    entry ID, stopping at the first entry written before ``since_ms`` (an
    absolute time, ms since the epoch, by the entries' IDs) or after ``limit``
    values. Readings of entries that went to dead letters are left out.
    """
    readings = _readings(_backwards(client, keys.input, since_ms), node)
    fired = _fired(_backwards(client, keys.output, since_ms), node)
    merged = heapq.merge(readings, fired, key=lambda v: _id_key(v.entry_id), reverse=True)
    found: list[PastValue] = []
    for value in merged:
        if limit is not None and len(found) >= limit:
            break
        found.append(value)
    return found


# -- tail ------------------------------------------------------------------------------------------


def _output_or_none(fields: Fields) -> OutputValue | None:
    """The output value of an entry, or None for an entry that is not one (written by hand)."""
    try:
        return decode_output(fields)
    except (KeyError, ValueError, StopIteration):
        return None


def tail(
    client: redis.Redis,
    keys: Keys,
    *,
    start: str = "$",
    block_ms: int = 1000,
    stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[str, OutputValue]]:
    """Follow ``out``: yield (entry ID, value) for every output entry after ``start``.

    ``start`` is ``$`` (values emitted from now on; resolved to the current last
    ID before this function returns, so nothing written after the call is
    missed), ``0`` (everything still in the stream) or an entry ID (after it).
    Between reads (every ``block_ms`` at most) ``stop()`` is asked whether to end.
    """
    if start == "$":
        last = read_range(client, keys.output, count=1, reverse=True)
        after = last[0][0].decode() if last else "0-0"
    elif start == "0":
        after = "0-0"
    else:
        after = check_id(start)
    if block_ms < 1:
        raise UsageError("block_ms must be at least 1")
    return _follow(client, keys.output, after, block_ms, stop)


def _follow(
    client: redis.Redis,
    key: str,
    after: str,
    block_ms: int,
    stop: Callable[[], bool] | None,
) -> Iterator[tuple[str, OutputValue]]:
    while stop is None or not stop():
        reply: Any = client.xread({key: after}, count=1000, block=block_ms)
        if not reply:
            continue
        for entry_id, fields in _entries(reply[0][1]):
            after = entry_id.decode()
            output = _output_or_none(fields)
            if output is not None:
                yield after, output


# -- dead letters ----------------------------------------------------------------------------------


class DeadLetter(msgspec.Struct, frozen=True):
    """One dead letter: why, which entry, and the entry's original fields."""

    id: str  # the dead letter's own ID in sc:{NS}:dead
    error: str
    src: str  # ID of the input entry it came from
    node: str | None  # the node whose function failed; None for a bad entry
    fields: dict[str, str]  # the original entry's fields, as a retry re-queues them


_LETTER_FIELDS = frozenset({b"@error", b"@src", b"@node", b"@deliveries"})


def _dead_letter(entry_id: bytes, fields: Fields) -> DeadLetter:
    original = {
        ("@src" if name == b"@in_src" else _text(name)): _text(value)
        for name, value in fields.items()
        if name not in _LETTER_FIELDS
    }
    node = fields.get(b"@node")
    return DeadLetter(
        id=entry_id.decode(),
        error=_text(fields.get(b"@error", b"")),
        src=_text(fields.get(b"@src", b"")),
        node=_text(node) if node is not None else None,
        fields=original,
    )


def dead_list(
    client: redis.Redis, keys: Keys, count: int | None = 100, start: str = "-"
) -> list[DeadLetter]:
    """Up to ``count`` dead letters (None: all), oldest first, from ``start`` (inclusive)."""
    if start != "-":
        check_id(start)
    return [
        _dead_letter(entry_id, fields)
        for entry_id, fields in read_range(client, keys.dead, start, count=count)
    ]


def _dead_ids_until_now(client: redis.Redis, keys: Keys) -> Iterator[str]:
    """IDs of the dead letters that exist now (letters added meanwhile are not included)."""
    newest = read_range(client, keys.dead, count=1, reverse=True)
    if not newest:
        return
    end = newest[0][0].decode()
    start = "-"
    while True:
        rows = read_range(client, keys.dead, start, end, DEAD_CHUNK)
        for entry_id, _ in rows:
            yield entry_id.decode()
        if len(rows) < DEAD_CHUNK:
            return
        start = "(" + rows[-1][0].decode()


def _chunks(ids: Iterable[str], size: int = DEAD_CHUNK) -> Iterator[list[str]]:
    chunk: list[str] = []
    for entry_id in ids:
        chunk.append(entry_id)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def dead_retry(client: redis.Redis, keys: Keys, ids: Sequence[str] | None) -> int:
    """Re-queue dead letters (``ids``, or every current letter when None); returns how many.

    Each letter's original fields become a new input entry and the letter is
    deleted, atomically (dead_retry.lua). Unknown IDs and letters without
    original fields are skipped. ``None`` retries the letters that exist when
    the call starts, so a retried entry that fails again is not retried again.
    """
    selected = _dead_ids_until_now(client, keys) if ids is None else [check_id(i) for i in ids]
    script = client.register_script(_dead_retry_source)
    retried = 0
    for chunk in _chunks(selected):
        reply = script(keys=[keys.dead, keys.input], args=chunk)
        retried += int(reply[0])
    return retried


def dead_purge(
    client: redis.Redis,
    keys: Keys,
    ids: Sequence[str] | None = None,
    *,
    older_than_ms: int | None = None,
    now_ms: int | None = None,
) -> int:
    """Delete dead letters; returns how many went.

    With ``ids``: those letters. Else with ``older_than_ms``: every letter
    written more than that long before ``now_ms`` (default: the server's clock).
    With neither: every letter (consumer groups on the stream, if any, stay).
    """
    if ids is not None:
        checked = [check_id(i) for i in ids]
        return sum(int(client.xdel(keys.dead, *chunk)) for chunk in _chunks(checked))
    if older_than_ms is not None:
        now = server_time_ms(client) if now_ms is None else now_ms
        cutoff = now - older_than_ms
        if cutoff <= 0:
            return 0
        return int(client.xtrim(keys.dead, minid=f"{cutoff}-0", approximate=False))
    return int(client.xtrim(keys.dead, maxlen=0, approximate=False))


# -- trim ------------------------------------------------------------------------------------------


class StreamTrim(msgspec.Struct, frozen=True):
    """What a trim did (or, dry run, would do) to one stream."""

    key: str
    removed: int
    length: int  # entries left (dry run: that would be left)
    floor: str | None  # lowest ID some group still needs ("0-0": no group yet); None: no group


class TrimResult(msgspec.Struct, frozen=True):
    """The result of :func:`trim`; ``streams`` has the keys ``in``, ``out`` and ``dead``."""

    dry_run: bool
    streams: dict[str, StreamTrim]

    @property
    def removed(self) -> int:
        """Entries removed from all three streams."""
        return sum(s.removed for s in self.streams.values())


def trim(
    client: redis.Redis,
    keys: Keys,
    *,
    max_age_ms: int | None = None,
    max_len: int | None = None,
    dry_run: bool = False,
    now_ms: int | None = None,
    chunk: int = TRIM_CHUNK,
) -> TrimResult:
    """Drop old entries of ``in``, ``out`` and ``dead``, never one a consumer group still needs.

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
    if max_age_ms is None and max_len is None:
        raise UsageError("trim needs a maximum age or a maximum length (or both)")
    if (max_age_ms is not None and max_age_ms < 0) or (max_len is not None and max_len < 0):
        raise UsageError("maximum age and maximum length must not be negative")
    if chunk < 1:
        raise UsageError("chunk must be at least 1")
    age_cutoff = ""
    if max_age_ms is not None:
        now = server_time_ms(client) if now_ms is None else now_ms
        age_cutoff = f"{max(now - max_age_ms, 0)}-0"
    script = client.register_script(_trim_source)
    streams: dict[str, StreamTrim] = {}
    for name, key in _stream_names(keys):
        need_group = "1" if name == "in" else "0"
        removed = 0
        after = ""
        floor = ""
        while True:
            args = [
                need_group,
                age_cutoff,
                "" if max_len is None else max_len,
                chunk,
                "1" if dry_run else "0",
                after if dry_run else "",
                removed if dry_run else 0,
            ]
            n, more, floor_raw, last = script(keys=[key], args=args)
            removed += int(n)
            floor = _text(floor_raw)
            if last:
                after = _text(last)
            if not int(more):
                break
        length = int(client.xlen(key)) - (removed if dry_run else 0)
        streams[name] = StreamTrim(key, removed, length, floor or None)
    return TrimResult(dry_run, streams)
