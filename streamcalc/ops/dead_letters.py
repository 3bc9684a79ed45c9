"""``streamcalc dead``: list, re-queue (``dead_retry.lua``) and purge dead letters.

Each function works on one partition's dead letters (a :class:`Keys`, or a
``(keys, number)`` pair, number None for the routing stream's) or on a whole
namespace (its :class:`Layout`: every partition's dead stream, and with ``P > 1``
partitions the routing stream's). Dead-letter IDs are IDs of their own stream:
two partitions may hold the same one, so an ID given for a whole namespace that
more than one dead stream holds is refused (:class:`AmbiguousDeadLetter`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence

import msgspec
import redis

from streamcalc.errors import StreamcalcError
from streamcalc.keys import Keys
from streamcalc.ops.streams import Layout, as_text, check_id, flat_pages, id_key, page_size, pages
from streamcalc.scripts import DEAD_ERROR, DEAD_NODE, DEAD_SRC, Scripts, original_pairs
from streamcalc.store import FlatEntry, read_flat, read_range, server_time_ms

#: Dead-letter IDs handed to one dead_retry.lua call (or one XDEL).
DEAD_CHUNK = 100


class DeadLetter(msgspec.Struct, frozen=True):
    """One dead letter: why, which entry, and the entry's original fields."""

    id: str  # the dead letter's own ID in its partition's dead stream
    error: str
    src: str  # ID of the input entry it came from
    node: str | None  # the node whose function failed; None for a bad entry
    fields: dict[str, str]  # the original entry's fields (of a name written twice: the last)
    partition: int | None = 0  # its partition; None: the routing stream's (P > 1)
    pairs: list[tuple[str, str]] = msgspec.field(default_factory=list)
    """Every original field in order, as a retry re-queues them: a name written twice
    (XADD allows it) is there twice."""


def _dead_letter(entry_id: bytes, flat: list[bytes], partition: int | None) -> DeadLetter:
    pairs = [(as_text(name), as_text(value)) for name, value in original_pairs(flat)]
    fields = dict(zip(flat[0::2], flat[1::2], strict=True))
    node = fields.get(DEAD_NODE)
    return DeadLetter(
        id=entry_id.decode(),
        error=as_text(fields.get(DEAD_ERROR, b"")),
        src=as_text(fields.get(DEAD_SRC, b"")),
        node=as_text(node) if node is not None else None,
        fields=dict(pairs),
        partition=partition,
        pairs=pairs,
    )


def _letters(rows: Iterable[FlatEntry], partition: int | None) -> Iterator[DeadLetter]:
    for entry_id, fields in rows:
        yield _dead_letter(entry_id, fields, partition)


#: Where dead letters are: one partition's keys, (keys, its number; None: the routing
#: stream's), or a whole namespace.
Where = Keys | tuple[Keys, int | None] | Layout


class AmbiguousDeadLetter(StreamcalcError):
    """A dead-letter ID held by more than one dead stream of a namespace."""


def _streams(where: Where) -> list[tuple[Keys, int | None]]:
    """(keys, partition number) of every dead stream of ``where``."""
    if isinstance(where, Layout):
        return [(k, where.number(k)) for k in where.everything()]
    if isinstance(where, tuple):
        return [where]
    return [(where, where.partition or 0)]


def _label(number: int | None) -> str:
    return "the routing stream" if number is None else f"partition {number}"


def _unambiguous(
    client: redis.Redis, streams: list[tuple[Keys, int | None]], ids: Sequence[str]
) -> None:
    """Refuse, before anything is done, an ID that more than one of ``streams`` holds."""
    if len(streams) < 2 or not ids:
        return
    pipe = client.pipeline(transaction=False)  # one round trip for every (ID, stream)
    for entry_id in ids:
        for keys, _ in streams:
            pipe.xrange(keys.dead, entry_id, entry_id, 1)
    found = iter(pipe.execute())
    for entry_id in ids:
        holders = [n for _, n in streams if next(found)]
        if len(holders) > 1:
            raise AmbiguousDeadLetter(
                f"dead-letter ID {entry_id} is in the dead letters of "
                f"{' and '.join(map(_label, holders))}: name one with --partition"
            )


def dead_list(
    client: redis.Redis, where: Where, count: int | None = 100, start: str = "-"
) -> list[DeadLetter]:
    """Up to ``count`` dead letters (None: all), oldest first, from ``start`` (inclusive).

    Over several dead streams the letters are merged by ID (time order) and
    ``count`` bounds them all together.
    """
    if start != "-":
        check_id(start)
    streams = _streams(where)
    page = page_size(count or 1000, len(streams))
    letters = [_letters(flat_pages(client, keys.dead, start, "+", page), n) for keys, n in streams]
    found: list[DeadLetter] = []
    for letter in heapq.merge(*letters, key=lambda d: (id_key(d.id), d.partition or -1)):
        if count is not None and len(found) >= count:
            break
        found.append(letter)
    return found


def _dead_ids_until_now(client: redis.Redis, keys: Keys) -> Iterator[str]:
    """IDs of the dead letters that exist now (letters added meanwhile are not included)."""
    newest = read_range(client, keys.dead, count=1, reverse=True)
    if not newest:
        return
    for entry_id, _ in pages(client, keys.dead, "-", newest[0][0].decode(), DEAD_CHUNK):
        yield entry_id.decode()


def _chunks(ids: Iterable[str], size: int = DEAD_CHUNK) -> Iterator[list[str]]:
    chunk: list[str] = []
    for entry_id in ids:
        chunk.append(entry_id)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def dead_retry(client: redis.Redis, where: Where, ids: Sequence[str] | None) -> int:
    """Re-queue dead letters (``ids``, or every current letter when None); returns how many.

    Each letter's original fields become a new input entry of the letter's own
    partition (a letter of the routing stream goes back to the routing stream)
    and the letter is deleted, atomically (dead_retry.lua). Unknown IDs and
    letters without original fields are skipped. ``None`` retries the letters
    that exist when the call starts, so a retried entry that fails again is
    not retried again.
    """
    checked = None if ids is None else [check_id(i) for i in ids]
    streams = _streams(where)
    if checked is not None:
        _unambiguous(client, streams, checked)
    retried = 0
    for keys, _ in streams:
        selected = _dead_ids_until_now(client, keys) if checked is None else checked
        scripts = Scripts(client, keys)
        for chunk in _chunks(selected):
            retried += scripts.dead_retry(chunk).retried
    return retried


def dead_purge(
    client: redis.Redis,
    where: Where,
    ids: Sequence[str] | None = None,
    *,
    older_than_ms: int | None = None,
    now_ms: int | None = None,
) -> int:
    """Delete dead letters; returns how many went.

    With ``ids``: those letters. Else with ``older_than_ms``: every letter
    written more than that long before ``now_ms`` (default: the server's clock).
    With neither: every letter (consumer groups on the streams, if any, stay).
    """
    checked = None if ids is None else [check_id(i) for i in ids]
    cutoff = None
    if checked is None and older_than_ms is not None:
        now = server_time_ms(client) if now_ms is None else now_ms
        cutoff = now - older_than_ms
        if cutoff <= 0:
            return 0
    streams = _streams(where)
    if checked is not None:
        _unambiguous(client, streams, checked)
    purged = 0
    for keys, _ in streams:
        if checked is not None:
            purged += sum(int(client.xdel(keys.dead, *chunk)) for chunk in _chunks(checked))
        elif cutoff is not None:
            purged += int(client.xtrim(keys.dead, minid=f"{cutoff}-0", approximate=False))
        else:
            purged += int(client.xtrim(keys.dead, maxlen=0, approximate=False))
    return purged


def dead_recent(client: redis.Redis, where: Where, count: int = 20) -> list[DeadLetter]:
    """The newest ``count`` dead letters of every dead stream of ``where``, newest first.

    One read of at most ``count`` entries per dead stream, newest first, whatever
    their length: what a page that refreshes every second can afford.
    """
    letters = [
        _dead_letter(entry_id, fields, number)
        for keys, number in _streams(where)
        for entry_id, fields in read_flat(client, keys.dead, count=count, reverse=True)
    ]
    letters.sort(key=lambda d: (id_key(d.id), d.partition or -1), reverse=True)
    return letters[:count]
