"""The typed requests and replies of the Lua scripts, and the layout of a dead letter.

Each script's arguments are built and its reply parsed here, and only here:
the engine, the router, the operations and the tests all use these types (the
script side of each layout is the header of its ``.lua`` file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streamcalc.messages import MAX_VALUE_BYTES

ScriptArg = str | bytes | int | float

#: Fields a dead letter adds to the original entry's fields (docs/streams.md).
DEAD_ERROR = b"@error"
DEAD_SRC = b"@src"
DEAD_NODE = b"@node"
DEAD_DELIVERIES = b"@deliveries"
#: An original field named like a letter's own (``@src``, ``@error``, ...) or starting
#: with ``@in_`` is kept as ``@in_<name>``: ``@src`` as ``@in_src``.
DEAD_ESCAPE = b"@in_"
#: Set on a dead letter that keeps only a prefix of its entry: it cannot be retried.
DEAD_TRUNCATED = b"@truncated"
#: Dead letters keep at most this many of an entry's fields (Lua's argument limit).
DEAD_FIELDS_LIMIT = 2000
#: ... and at most this many bytes of field values; a longer value keeps a prefix.
DEAD_BYTES_LIMIT = 1024 * 1024
#: The prefix an oversized value keeps (one over the entry limit, or past the budget).
DEAD_VALUE_PREFIX = 256
DEAD_LETTER_FIELDS = frozenset({DEAD_ERROR, DEAD_SRC, DEAD_NODE, DEAD_DELIVERIES, DEAD_TRUNCATED})

_msgpack_encode = msgspec.msgpack.Encoder().encode


@dataclass(slots=True)
class DeadLetter:
    """A dead letter the commit adds: the original entry's fields and why it failed."""

    src: str
    error: str
    node: str = ""
    fields: Sequence[bytes] = ()
    deliveries: int | None = None
    """For a poison entry: how often it was delivered."""
    cut: Sequence[tuple[bytes, int]] = ()
    """Values already cut before ``fields`` came here (a poison entry, cut by fetch.lua):
    (field name, original length) of each."""
    total_fields: int | None = None
    """How many fields the entry had, when ``fields`` holds fewer (cut by fetch.lua)."""


@dataclass(slots=True)
class CommitRequest:
    """The arguments of commit.lua (its header documents the layout).

    The flat lists are filled by the engine; ``ids`` are in stream order.
    """

    group: str
    consumer: str
    graph_version: str
    token: str
    ids: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    """state field, encoded slots, ..."""
    fired: list[str] = field(default_factory=list)
    """node, value, ts, src, key, ..."""
    latest: list[str] = field(default_factory=list)
    """state field, ts, value, ..."""
    fresh: list[str] = field(default_factory=list)
    """node, ts, ..."""
    key_ts: list[str] = field(default_factory=list)
    """key, ts, ..."""
    latest_known: list[str] = field(default_factory=list)
    """state field, ts, value, ... of fields whose stored ts the worker knows is not newer:
    written without reading it (``latest`` holds the others)."""
    stored: list[str] = field(default_factory=list)
    """state field, whole latest values of a non-empty key, ... (written as they are;
    text: Redis's MessagePack in Lua reads no binary strings)"""
    dead: list[DeadLetter] = field(default_factory=list)

    def args(self) -> list[ScriptArg]:
        """ARGV of commit.lua."""
        ids = [self.ids[0], self.ids[-1], *self.ids] if self.ids else []
        payload = _msgpack_encode(
            (
                ids,
                self.writes,
                self.fired,
                self.latest,
                self.fresh,
                self.key_ts,
                self.latest_known,
                self.stored,
            )
        )
        args: list[ScriptArg] = [self.group, self.consumer, self.graph_version, self.token]
        args += [payload, len(self.dead)]
        for letter in self.dead:
            kept, notes = _bounded(letter.fields, letter.cut, letter.total_fields)
            error = letter.error + (f" (dead letter keeps {'; '.join(notes)})" if notes else "")
            deliveries = "" if letter.deliveries is None else str(letter.deliveries)
            truncated = "1" if notes else ""
            args += [letter.src, error, letter.node, deliveries, truncated, len(kept) // 2, *kept]
        return args


def _bounded(
    fields: Sequence[bytes],
    cut_before: Sequence[tuple[bytes, int]] = (),
    total_fields: int | None = None,
) -> tuple[list[bytes], list[str]]:
    """An entry's fields cut to a dead letter's limits, and what was cut, in words.

    At most DEAD_FIELDS_LIMIT fields and DEAD_BYTES_LIMIT bytes of values; a
    value over the entry limit, or past the budget, keeps its first
    DEAD_VALUE_PREFIX bytes. fetch.lua cuts a poison entry the same way (see
    :data:`BOUNDS`) and says what it cut: ``cut_before`` and ``total_fields``.
    """
    flat = list(fields)
    kept: list[bytes] = []
    notes: list[str] = []
    total = max(total_fields or 0, len(flat) // 2)
    if total > DEAD_FIELDS_LIMIT:
        notes.append(f"the first {DEAD_FIELDS_LIMIT} of {total} fields")
        flat = flat[: 2 * DEAD_FIELDS_LIMIT]
    budget = DEAD_BYTES_LIMIT
    cut = list(cut_before)
    for i in range(0, len(flat) - 1, 2):
        name, value = flat[i], flat[i + 1]
        if len(value) > MAX_VALUE_BYTES or len(value) > budget:
            cut.append((name, len(value)))
            value = value[:DEAD_VALUE_PREFIX]
        budget = max(budget - len(value), 0)
        kept += [name, value]
    if cut:
        said = ", ".join(f"{name.decode('latin-1')[:40]!r} ({n} bytes)" for name, n in cut[:5])
        notes.append(f"the first {DEAD_VALUE_PREFIX} bytes of {said}")
    return kept, notes


#: ARGV[8..11] of a fetch.lua read of own pending entries: how it cuts a poison entry.
BOUNDS: tuple[int, int, int, int] = (
    DEAD_FIELDS_LIMIT,
    DEAD_BYTES_LIMIT,
    MAX_VALUE_BYTES,
    DEAD_VALUE_PREFIX,
)


@dataclass(frozen=True, slots=True)
class PoisonEntry:
    """An own pending entry delivered too often, as fetch.lua hands it over: already cut."""

    id: bytes
    deliveries: int
    """Counting the read that gave it up."""
    fields: list[bytes] | None
    """The fields a dead letter keeps (None: the entry was deleted)."""
    cut: list[tuple[bytes, int]]
    total_fields: int

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> PoisonEntry:
        """Parse fetch.lua's poison part."""
        if len(reply) < 5:
            return cls(reply[0], int(reply[1]), None, [], 0)
        flat_cut = reply[4]
        cut = [(flat_cut[i], int(flat_cut[i + 1])) for i in range(0, len(flat_cut) - 1, 2)]
        return cls(reply[0], int(reply[1]), list(reply[3]), cut, int(reply[2]))


def original_fields(letter: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The fields of the entry a dead letter keeps, as the entry had them.

    A letter's own fields (``DEAD_LETTER_FIELDS``) are left out, and an original
    field stored as ``@in_<name>`` (because it collided with them) gets its name back.
    """
    return dict(original_pairs([part for pair in letter.items() for part in pair]))


def original_pairs(letter: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """:func:`original_fields` of a letter's flat fields, in order: a name the entry
    carried twice (XADD allows it) is there twice."""
    return [
        (b"@" + name[4:] if name.startswith(DEAD_ESCAPE) else name, value)
        for name, value in zip(letter[0::2], letter[1::2], strict=True)
        if name not in DEAD_LETTER_FIELDS
    ]


@dataclass(frozen=True, slots=True)
class CommitReply:
    """What commit.lua answered: ``ok``, or the check that failed."""

    outcome: str
    """``ok``, ``graph`` (the graph changed), ``fenced`` (the lease is not ours), ``gone``."""
    graph_version: str = ""
    holder: str = ""
    gone: frozenset[str] = frozenset()
    kept: frozenset[str] = frozenset()
    """``ok``: the fields of ``latest`` whose stored value was newer and stayed."""

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> CommitReply:
        """Parse the raw reply."""
        outcome = reply_text(reply[0])
        if outcome == "graph":
            return cls(outcome, graph_version=reply_text(reply[1]))
        if outcome == "fenced":
            return cls(outcome, holder=reply_text(reply[1]))
        if outcome == "gone":
            return cls(outcome, gone=frozenset(reply_text(r) for r in reply[1:]))
        return cls(outcome, kept=frozenset(reply_text(r) for r in reply[1:]))


RawEntry = tuple[bytes, list[bytes] | None]


@dataclass(frozen=True, slots=True)
class LeaseToken:
    """A lease's value, ``"<consumer> <epoch> <instance>"`` (see lease.lua), taken apart."""

    consumer: str
    epoch: int
    instance: str

    @classmethod
    def parse(cls, token: str) -> LeaseToken | None:
        """The parts of ``token``; None for a value that is no lease token."""
        head, _, instance = token.rpartition(" ")
        consumer, _, epoch = head.rpartition(" ")
        if not consumer or not epoch.isdigit() or not instance:
            return None
        return cls(consumer, int(epoch), instance)


@dataclass(frozen=True, slots=True)
class LeaseReply:
    """What a take of a lease answered: the new token, or who holds the lease."""

    token: str | None
    holder: str

    def held_by(self) -> LeaseToken | None:
        """Who holds the lease, when the take was refused."""
        return LeaseToken.parse(self.holder)


@dataclass(frozen=True, slots=True)
class ReadReply:
    """What fetch.lua answered."""

    fenced: bool
    holder: str = ""
    entries: list[RawEntry] = field(default_factory=list)
    """read: the entries, in stream order (fields None: deleted before processing)."""
    newest: str = ""
    """read, when nothing new: the stream's newest ID, to wait for entries after it."""
    cursor: str = "0-0"
    """claim: where the next claim continues (``0-0``: done)."""
    claimed: int = 0
    poison: PoisonEntry | None = None
    """read of own pending entries: the first of them, delivered too often (then no entries)."""

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> ReadReply:
        """Parse the raw reply of a read or a claim."""
        if reply_text(reply[0]) == "fenced":
            return cls(True, holder=reply_text(reply[1]))
        if isinstance(reply[1], list):
            if len(reply) > 3:
                return cls(False, poison=PoisonEntry.parse(reply[3]))
            entries = [(entry[0], entry[1] or None) for entry in reply[1]]
            return cls(False, entries=entries, newest=reply_text(reply[2]))
        return cls(False, cursor=reply_text(reply[1]), claimed=int(reply[2]))


@dataclass(frozen=True, slots=True)
class TrimRequest:
    """The arguments of one trim.lua call (its header documents each)."""

    need_group: bool
    """Without any consumer group nothing may go (the input stream)."""
    age_cutoff: str = ""
    """Stream ID; entries below it are old enough to go ("" = no age limit)."""
    max_len: int | None = None
    limit: int = 10_000
    dry_run: bool = False
    after: str = ""
    """Dry runs: entries up to this ID were counted by earlier calls."""
    counted: int = 0
    """Dry runs: how many entries those earlier calls counted."""

    def args(self) -> list[ScriptArg]:
        """ARGV of trim.lua."""
        return [
            "1" if self.need_group else "0",
            self.age_cutoff,
            "" if self.max_len is None else self.max_len,
            self.limit,
            "1" if self.dry_run else "0",
            self.after if self.dry_run else "",
            self.counted if self.dry_run else 0,
        ]


@dataclass(frozen=True, slots=True)
class TrimReply:
    """What one trim.lua call did (dry run: would do)."""

    removed: int
    more: bool
    """The call stopped at its limit: call again."""
    floor: str | None
    """The lowest ID some group still needs ("0-0": nothing may go); None: no group restricts."""
    last: str
    """ID of the last entry removed or counted ("" = none)."""

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> TrimReply:
        """Parse the raw reply."""
        removed, more, floor, last = reply
        return cls(int(removed), bool(int(more)), reply_text(floor) or None, reply_text(last))


@dataclass(frozen=True, slots=True)
class DeadRetryReply:
    """What dead_retry.lua did with the IDs it was given."""

    retried: int
    missing: int
    """IDs with no such letter (already retried or purged)."""
    empty: int
    """Letters without original fields, left in place."""

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> DeadRetryReply:
        """Parse the raw reply."""
        retried, missing, empty = (int(n) for n in reply)
        return cls(retried, missing, empty)


def reply_text(raw: bytes | str | int) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
