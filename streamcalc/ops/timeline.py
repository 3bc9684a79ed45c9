"""``streamcalc history`` and ``tail``: a node's past values, and derived values as they come."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
import redis

from streamcalc.errors import EntryError, UsageError
from streamcalc.keys import Keys
from streamcalc.messages import OutputValue, decode_entry, decode_output
from streamcalc.ops.streams import as_text, check_id
from streamcalc.store import StreamEntry, read_range
from streamcalc.values import Value

#: Entries read per XREVRANGE page by :func:`history`.
HISTORY_PAGE = 1_000


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = as_text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


def _entries(reply: Any) -> list[StreamEntry]:
    """XRANGE/XREVRANGE/XREAD entries as bytes, whatever the client's decode_responses."""
    return [
        (_bytes(entry_id), {_bytes(k): _bytes(v) for k, v in (fields or {}).items()})
        for entry_id, fields in reply
    ]


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


def _output_or_none(fields: dict[bytes, bytes]) -> OutputValue | None:
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
