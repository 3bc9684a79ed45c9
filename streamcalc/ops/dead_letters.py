"""``streamcalc dead``: list, re-queue (``scripts/dead_retry.lua``) and purge dead letters."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import msgspec
import redis

from streamcalc.keys import Keys
from streamcalc.ops.streams import as_text, check_id
from streamcalc.scripts import script_source
from streamcalc.store import read_range, server_time_ms

#: Dead-letter IDs handed to one dead_retry.lua call (or one XDEL).
DEAD_CHUNK = 100

_dead_retry_source = script_source("dead_retry")


class DeadLetter(msgspec.Struct, frozen=True):
    """One dead letter: why, which entry, and the entry's original fields."""

    id: str  # the dead letter's own ID in sc:{NS}:dead
    error: str
    src: str  # ID of the input entry it came from
    node: str | None  # the node whose function failed; None for a bad entry
    fields: dict[str, str]  # the original entry's fields, as a retry re-queues them


_LETTER_FIELDS = frozenset({b"@error", b"@src", b"@node", b"@deliveries"})


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    original = {
        ("@src" if name == b"@in_src" else as_text(name)): as_text(value)
        for name, value in fields.items()
        if name not in _LETTER_FIELDS
    }
    node = fields.get(b"@node")
    return DeadLetter(
        id=entry_id.decode(),
        error=as_text(fields.get(b"@error", b"")),
        src=as_text(fields.get(b"@src", b"")),
        node=as_text(node) if node is not None else None,
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
