"""What every operator function needs of a namespace's streams: where they are, entry IDs, text.

A namespace has one partition (everything under ``sc:{NS}:``) or ``P > 1`` of
them, each with its own ``in``, ``out`` and ``dead`` streams, plus the root's
routing stream and its dead letters. :class:`Layout` names them all, so that
every operator command reads or acts on every partition the same way; and the
readers here (:func:`pages`, :func:`read_new`) are the only places that read a
stream for them, one stream (one hash slot) per call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from streamcalc.errors import UsageError
from streamcalc.keys import Keys, Namespace
from streamcalc.store import FlatEntry, StreamEntry, partition_count, read_flat, read_range

_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def stream_keys(keys: Keys) -> tuple[tuple[str, str], ...]:
    """(name, key) of a partition's streams: ``in``, ``out`` and ``dead``, in that order."""
    return (("in", keys.input), ("out", keys.output), ("dead", keys.dead))


def check_id(text: str) -> str:
    """``text`` if it is a full stream entry ID (``ms-seq``), else raise UsageError."""
    if _ID.fullmatch(text) is None:
        raise UsageError(f"bad entry ID {text!r}: expected <ms>-<seq>, like 1700000000000-0")
    return text


def as_text(raw: bytes | str) -> str:
    """A Redis reply as text, whatever the client's decode_responses; bad UTF-8 escaped."""
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    """An entry ID as a sortable (ms, seq): IDs of every stream of one Redis share its clock."""
    ms, _, seq = as_text(entry_id).partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Layout:
    """The partitions of a namespace, as operator commands see them."""

    ns: str
    count: int

    @property
    def root(self) -> Keys:
        """``sc:{NS}:``: the only partition, or (``P > 1``) the routing stream's."""
        return Namespace(self.ns).root

    @property
    def partitions(self) -> list[Keys]:
        """Each partition's keys, in partition order (just the root for one partition)."""
        return Namespace(self.ns).partitions(self.count)

    @property
    def routed(self) -> bool:
        """True when the root's ``in`` is a routing stream (``P > 1``)."""
        return self.count > 1

    def everything(self) -> list[Keys]:
        """Every partition, then the root when it has streams of its own (``P > 1``)."""
        return [*self.partitions, self.root] if self.routed else self.partitions

    def number(self, keys: Keys) -> int | None:
        """The partition number of ``keys``: 0 for the only one, None for a routing root."""
        if keys.partition is None:
            return None if self.routed else 0
        return keys.partition

    def of_key(self, key: str) -> Keys:
        """The partition that ``key`` belongs to (the empty key: partition 0)."""
        return Namespace(self.ns).of_key(key, self.count)

    def readers(self, key: str | None) -> list[Keys]:
        """The partitions that may hold entries of ``key`` (None: of any key)."""
        return self.partitions if key is None else [self.of_key(key)]


def layout(client: redis.Redis, ns: str) -> Layout:
    """The namespace's layout, as stored in its meta hash."""
    return Layout(ns, partition_count(client, ns))


def page_size(total: int, streams: int, least: int = 16) -> int:
    """Entries read per page from each of ``streams`` streams when ``total`` would do for one.

    Reading many partitions costs about what one costs: the budget is shared.
    """
    return max(total // max(streams, 1), least)


def pages(
    client: redis.Redis,
    key: str,
    low: str = "-",
    high: str = "+",
    page: int = 1000,
    *,
    reverse: bool = False,
) -> Iterator[StreamEntry]:
    """Entries of ``key`` between ``low`` and ``high`` (inclusive), read lazily in pages."""
    return _paged(read_range, client, key, low, high, page, reverse)


def flat_pages(
    client: redis.Redis,
    key: str,
    low: str = "-",
    high: str = "+",
    page: int = 1000,
    *,
    reverse: bool = False,
) -> Iterator[FlatEntry]:
    """:func:`pages` with every field of an entry kept, in order (a name may repeat)."""
    return _paged(read_flat, client, key, low, high, page, reverse)


_Row = TypeVar("_Row", StreamEntry, FlatEntry)


def _paged(
    reader: Callable[..., list[_Row]],
    client: redis.Redis,
    key: str,
    low: str,
    high: str,
    page: int,
    reverse: bool,
) -> Iterator[_Row]:
    while True:
        rows = reader(client, key, low, high, page, reverse=reverse)
        yield from rows
        if len(rows) < page:
            return
        if reverse:
            high = "(" + rows[-1][0].decode()
        else:
            low = "(" + rows[-1][0].decode()


def _bytes(raw: bytes | str) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


def read_new(
    client: redis.Redis, after: Mapping[str, str], count: int, block_ms: int
) -> list[tuple[str, list[StreamEntry]]]:
    """(stream, entries) of what was added after each stream's ID, waiting up to ``block_ms``.

    One XREAD over every stream: on one Redis that is one call; a cluster
    will need one call per node, which is why this is the only place to read
    new entries of several streams.
    """
    reply: Any = client.xread(dict(after), count=count, block=block_ms)  # type: ignore[arg-type]
    return [
        (
            as_text(stream),
            [
                (_bytes(entry_id), {_bytes(k): _bytes(v) for k, v in (fields or {}).items()})
                for entry_id, fields in rows
            ],
        )
        for stream, rows in reply or []
    ]
