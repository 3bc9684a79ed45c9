"""``streamcalc history`` and ``tail``: a node's past values, and derived values as they come.

Both read every partition (or, for one key, the key's partition) and merge
what they read by entry ID, which is time order: every stream of one Redis
takes its IDs from the same clock. With ``P > 1`` partitions the routing
stream is not read: its entries are read once they reach their partition.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import NamedTuple

import msgspec
import redis

from streamcalc.errors import EntryError, UsageError
from streamcalc.keys import Keys
from streamcalc.messages import OutputValue, decode_entry, decode_output
from streamcalc.ops.streams import Layout, check_id, flat_pages, id_key, page_size, read_new
from streamcalc.store import FlatEntry, read_range
from streamcalc.values import Value

#: Entries read per XREVRANGE page by :func:`history` (shared by all the streams it reads).
HISTORY_PAGE = 1_000
#: Entries one :func:`tail` read takes at most (shared by all the streams it follows).
TAIL_COUNT = 1_000


class PastValue(msgspec.Struct, frozen=True):
    """One past value of a node: a reading of ``in`` or a fired value of ``out``."""

    ts: int
    value: Value
    entry_id: str  # the ID of the entry that carries it, in the stream named by `source`
    source: str  # "in" (a reading) or "out" (a fired value)
    key: str = ""  # the entry's @key ("" = the empty key)
    partition: int = 0  # the partition whose stream holds the entry


class Emitted(NamedTuple):
    """One value :func:`tail` saw: its entry ID, the value, and the partition it came from."""

    id: str
    output: OutputValue
    partition: int


def _backwards(
    client: redis.Redis, key: str, since_ms: int | None, page: int = HISTORY_PAGE
) -> Iterator[FlatEntry]:
    """Entries of ``key`` newest first, down to ID time ``since_ms``, read in pages; their
    fields as Redis holds them (a field written twice is seen twice)."""
    low = f"{since_ms}-0" if since_ms is not None else "-"
    return flat_pages(client, key, low, "+", page, reverse=True)


def _reading(entry_id: bytes, fields: list[bytes], node: str) -> PastValue | None:
    """The value of ``node`` in an input entry; None when the entry does not decode (dead:
    a field written twice, too)."""
    try:
        entry = decode_entry(entry_id, fields)
    except EntryError:
        return None
    return PastValue(entry.ts, dict(entry.readings)[node], entry.id, "in", entry.key)


def _fired(entry_id: bytes, fields: list[bytes], node: str) -> PastValue | None:
    """The value of ``node`` in an output entry; None for another node's or a foreign entry
    (one with a field written twice is no output entry)."""
    mapping = dict(zip(fields[0::2], fields[1::2], strict=True))
    if len(mapping) * 2 != len(fields):
        return None
    output = output_or_none(mapping)
    if output is None or output.node != node:
        return None
    return PastValue(output.ts, output.value, entry_id.decode(), "out", output.key)


def _values(
    rows: Iterable[FlatEntry],
    decode: Callable[[bytes, list[bytes], str], PastValue | None],
    node: str,
    key: str | None,
    partition: int,
) -> Iterator[PastValue]:
    """The values of ``node`` (of ``key``, None: any) that ``decode`` finds in ``rows``."""
    field = node.encode()
    for entry_id, fields in rows:
        if field not in fields[0::2]:
            continue
        value = decode(entry_id, fields, node)
        if value is not None and (key is None or value.key == key):
            yield msgspec.structs.replace(value, partition=partition)


def history(
    client: redis.Redis,
    where: Keys | Layout,
    node: str,
    *,
    key: str | None = None,
    since_ms: int | None = None,
    limit: int | None = 100,
) -> list[PastValue]:
    """Past values of ``node``, newest first: readings from ``in``, fired values from ``out``.

    ``where`` is one partition or a namespace's :class:`Layout` (then every
    partition, or with ``key`` the key's own). The streams are read backwards
    from their ends in pages and merged by entry ID, stopping at the first
    entry written before ``since_ms`` (an absolute time, ms since the epoch, by
    the entries' IDs) or after ``limit`` values. ``key`` keeps only that key's
    values (None: every key's). Readings of entries that went to dead letters
    are left out.
    """
    if isinstance(where, Layout):
        readers = [(k, where.number(k) or 0) for k in where.readers(key)]
    else:
        readers = [(where, where.partition or 0)]
    page = page_size(HISTORY_PAGE, 2 * len(readers))
    found: list[Iterator[PastValue]] = []
    for keys, number in readers:
        for stream, decode in ((keys.input, _reading), (keys.output, _fired)):
            rows = _backwards(client, stream, since_ms, page)
            found.append(_values(rows, decode, node, key, number))
    merged = heapq.merge(*found, key=lambda v: (id_key(v.entry_id), v.partition), reverse=True)
    values: list[PastValue] = []
    for value in merged:
        if limit is not None and len(values) >= limit:
            break
        values.append(value)
    return values


def output_or_none(fields: Mapping[bytes, bytes]) -> OutputValue | None:
    """The output value of an entry, or None for an entry that is not one (written by hand)."""
    try:
        return decode_output(fields)
    except (KeyError, ValueError, StopIteration):
        return None


def tail(
    client: redis.Redis,
    where: Keys | Layout,
    *,
    start: str = "$",
    node: str | Collection[str] | None = None,
    key: str | None = None,
    block_ms: int = 1000,
    stop: Callable[[], bool] | None = None,
) -> Follow:
    """Follow ``out`` of every partition (or ``key``'s): yield each output entry after ``start``.

    ``start`` is ``$`` (values emitted from now on; resolved to each stream's
    current last ID before this function returns, so nothing written after the
    call is missed), ``0`` (everything still in the streams) or an entry ID
    (after it, in every stream). ``node`` and ``key`` keep only that node's or
    that key's values (``node`` may be several names: values of any of them).
    What one read returns from several streams is yielded in entry-ID order.
    Between reads (every ``block_ms`` at most) ``stop()`` is asked whether to end.
    """
    if start not in ("$", "0"):
        check_id(start)
    if isinstance(where, Layout):
        readers = {k.output: where.number(k) or 0 for k in where.readers(key)}
    else:
        readers = {where.output: where.partition or 0}
    after = {stream: start_after(client, stream, start) for stream in readers}
    nodes = None if node is None else frozenset([node] if isinstance(node, str) else node)
    keys = None if key is None else frozenset([key])
    return Follow(client, after, readers, block_ms=block_ms, stop=stop, nodes=nodes, keys=keys)


def start_after(client: redis.Redis, stream: str, start: str) -> str:
    """The ID to read ``stream`` after: ``$`` is its last entry now, ``0`` its beginning."""
    if start == "$":
        last = read_range(client, stream, count=1, reverse=True)
        return last[0][0].decode() if last else "0-0"
    return "0-0" if start == "0" else start


class Follow(Iterator[Emitted]):
    """Output entries of several streams as they are written, in entry-ID order.

    ``after`` maps each stream to the ID to read it after; it moves on with
    every entry read (wanted or not). :attr:`position` says where to resume
    without missing or repeating a value, however many were read ahead.
    ``partitions`` maps each stream to its partition. ``nodes`` and ``keys``
    keep only those nodes' and keys' values (None: all).
    """

    def __init__(
        self,
        client: redis.Redis,
        after: dict[str, str],
        partitions: Mapping[str, int],
        *,
        block_ms: int = 1000,
        stop: Callable[[], bool] | None = None,
        nodes: frozenset[str] | None = None,
        keys: frozenset[str] | None = None,
    ) -> None:
        if block_ms < 1:
            raise UsageError("block_ms must be at least 1")
        self.client = client
        self.after = after
        self.partitions = partitions
        self.block_ms = block_ms
        self.stop = stop
        self.nodes = nodes
        self.keys = keys
        self._count = page_size(TAIL_COUNT, len(after), least=10)
        self._ready: deque[tuple[str, Emitted]] = deque()
        self._yielded = dict(after)  # per stream: the last entry handed out (or the start)

    @property
    def position(self) -> dict[str, str]:
        """stream -> the ID to resume after: every entry up to it was yielded or filtered out."""
        waiting = {stream for stream, _ in self._ready}
        return {
            stream: self._yielded[stream] if stream in waiting else last
            for stream, last in self.after.items()
        }

    def __next__(self) -> Emitted:
        while not self._ready:
            if self.stop is not None and self.stop():
                raise StopIteration
            self._read()
        stream, emitted = self._ready.popleft()
        self._yielded[stream] = emitted.id
        return emitted

    def _read(self) -> None:
        seen: list[tuple[str, Emitted]] = []
        for stream, rows in read_new(self.client, self.after, self._count, self.block_ms):
            for entry_id, fields in rows:
                self.after[stream] = entry_id.decode()
                output = output_or_none(fields)
                if output is None or (self.nodes is not None and output.node not in self.nodes):
                    continue
                if self.keys is None or output.key in self.keys:
                    emitted = Emitted(entry_id.decode(), output, self.partitions[stream])
                    seen.append((stream, emitted))
        seen.sort(key=lambda pair: (id_key(pair[1].id), pair[1].partition))
        self._ready.extend(seen)
