"""Every Redis key streamcalc uses is built here, and only here.

A namespace ``NS`` with one partition lives under ``sc:{NS}:``. With ``P > 1``
partitions, partition ``p`` lives under ``sc:{NS:p}:`` (its own streams, graph
copy, state and consumer group) and ``sc:{NS}:`` keeps what belongs to the whole
namespace: ``meta`` (``partitions``), the graph as loaded, the routing stream
``in`` for producers that do not know the partitions, its ``dead`` stream, and
the membership of the workers. Every key of one partition shares one hash tag,
so each partition is one Redis Cluster slot and every Lua script can declare
all of its keys.

Hash fields of keyed state: the empty key's fields are the node names, as
in an unkeyed namespace; key ``k`` has one field ``k|`` holding all of its
nodes' state (``|`` occurs in neither a key nor a node name, so no field of
one key is another key's or a node's).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from streamcalc.errors import UsageError

_NS_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")

#: Separates a key from a node name in the fields of keyed state.
KEY_SEPARATOR = "|"


def valid_namespace(ns: str) -> bool:
    """True when ``ns`` may be used as a namespace (no braces, colons or spaces)."""
    return _NS_PATTERN.fullmatch(ns) is not None


def valid_key(key: str) -> bool:
    """True when ``key`` may be an entry's ``@key``: 1-128 of ``A-Z a-z 0-9 _ . : / -``."""
    return _KEY_PATTERN.fullmatch(key) is not None


def check_key(key: str) -> str:
    """``key`` if it may be an entry's ``@key``, else a UsageError saying what a key is."""
    if not valid_key(key):
        raise UsageError(f"bad key {key!r}: 1 to 128 characters of A-Z a-z 0-9 _ . : / -")
    return key


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: zlib's CRC-32 of its UTF-8 bytes, modulo ``partitions``."""
    return zlib.crc32(key.encode()) % partitions if partitions > 1 else 0


def state_field(key: str, node: str) -> str:
    """``key|node`` (the node name itself for the empty key): the name of ``node``'s
    state for ``key``. The empty key's is its hash field in ``slots`` and ``latest``."""
    return f"{key}{KEY_SEPARATOR}{node}" if key else node


def key_field(key: str) -> str:
    """The hash field of a non-empty key's whole state in ``slots`` and in ``latest``."""
    return f"{key}{KEY_SEPARATOR}"


class _Key:
    """A key of a partition: its prefix and a fixed suffix, read as an attribute."""

    def __init__(self, suffix: str, *, doc: str) -> None:
        self.suffix = suffix
        self.__doc__ = doc

    def __get__(self, keys: Keys, owner: type[Keys]) -> str:
        return keys.prefix + self.suffix


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one partition (``partition`` None: the namespace's own ``sc:{NS}:``)."""

    ns: str
    partition: int | None = None

    @property
    def tag(self) -> str:
        """The hash tag: ``NS`` or ``NS:p``."""
        return self.ns if self.partition is None else f"{self.ns}:{self.partition}"

    @property
    def prefix(self) -> str:
        """``sc:{NS}:`` or ``sc:{NS:p}:``, the prefix of every key of the partition."""
        return f"sc:{{{self.tag}}}:"

    @property
    def label(self) -> str:
        """The partition's name in metrics, logs and ``status``: its number, or ``-``."""
        return "-" if self.partition is None else str(self.partition)

    input = _Key("in", doc="Stream of input entries; producers XADD here.")
    output = _Key("out", doc="Stream of derived values, one entry per fired value.")
    dead = _Key("dead", doc="Stream of dead letters.")
    graph = _Key("graph", doc="Hash: node name -> canonical JSON definition of a derived node.")
    meta = _Key("meta", doc="Hash: graph version, hash, load time; ``partitions`` in the root's.")
    slots = _Key(
        "slots",
        doc="Hash: the empty key's derived node -> its argument slots; ``k|`` -> key k's slots.",
    )
    latest = _Key(
        "latest",
        doc="Hash: the empty key's node -> ``\"<ts> <json>\"``; ``k|`` -> key k's latest values.",
    )
    fresh = _Key(
        "fresh", doc="Hash: derived node -> newest ts of its values over the non-empty keys."
    )
    key_index = _Key("keys", doc="Sorted set: key -> newest ts of its values (search, stalest).")
    unknown = _Key(
        "unknown",
        doc="Sorted set: the most frequent names read that are not nodes -> how often (bounded).",
    )

    def lease(self, group: str) -> str:
        """String: ``"<consumer> <epoch>"`` of the worker of ``group`` that owns the partition."""
        return f"{self.prefix}lease:{group}"

    def all(self) -> tuple[str, ...]:
        """Every fixed key of the partition, for tests and clean-up (leases not included)."""
        return (
            self.input,
            self.output,
            self.dead,
            self.graph,
            self.meta,
            self.slots,
            self.latest,
            self.fresh,
            self.key_index,
            self.unknown,
        )


@dataclass(frozen=True, slots=True)
class Namespace:
    """The keys of a namespace as a whole and of each of its partitions."""

    ns: str

    @property
    def root(self) -> Keys:
        """``sc:{NS}:``: meta (``partitions``), the loaded graph, the routing stream."""
        return Keys(self.ns)

    def members(self, group: str) -> str:
        """Sorted set: live worker of ``group`` -> when its membership expires (Redis ms)."""
        return f"sc:{{{self.ns}}}:workers:{group}"

    def partitions(self, count: int) -> list[Keys]:
        """The keys of each of ``count`` partitions (just the root for one partition)."""
        if count <= 1:
            return [self.root]
        return [Keys(self.ns, p) for p in range(count)]

    def partition(self, p: int, count: int) -> Keys:
        """The keys of partition ``p`` of ``count``."""
        return self.root if count <= 1 else Keys(self.ns, p)

    def of_key(self, key: str, count: int) -> Keys:
        """The keys of the partition that ``key`` belongs to."""
        return self.partition(partition_of(key, count), count)
