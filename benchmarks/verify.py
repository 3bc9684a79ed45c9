"""Verification: every derived value a run wrote, checked against the reference model.

The output streams are read whole (:func:`read_out`, once per stream: a keyed namespace has
one ``out`` per partition) into :class:`OutRows`, one row per value with its input entry, key,
node, value and ``@ts``. :func:`verify` replays the input entries through the reference model
of the semantics (:mod:`benchmarks.reference`), one model per key made by a factory, in stream
order, and compares value by value.

The stream order is the serial order with any number of workers: each partition is processed by
one worker at a time, and a key's entries are all in its partition, in order.
The entries are replayed in the workload's order, which is every partition's stream order, so
every key's model sees that key's entries in the order its partition holds them.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from benchmarks.reference import Fired, wave
from benchmarks.workloads import Entry

READ_CHUNK = 20_000

#: Makes an empty model of the graph: one is made for each key the entries carry.
ModelFactory = Callable[[], Any]
#: An entry's values as the engine wrote them: node -> (value, ts, key).
Actual = dict[str, tuple[float, int, str]]


@dataclass(slots=True)
class Check:
    """Derived values compared with the model (see :func:`verify`)."""

    order: str
    expected: int = 0
    produced: int = 0
    lost: int = 0  # the model has it, out does not
    wrong: int = 0  # both have it, value or ts differ
    unexpected: int = 0  # out has it, the model does not
    duplicates: int = 0  # a second out entry for the same (@src, node)
    late_readings: int = 0  # readings the model found late in that serial order
    expected_stream_order: int | None = None  # what one worker in stream order would produce
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Keep a few examples of what went wrong."""
        if len(self.examples) < 5:
            self.examples.append(text)

    @property
    def bad(self) -> int:
        """Wrong + unexpected + duplicated values."""
        return self.wrong + self.unexpected + self.duplicates

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON output."""
        return {
            "order": self.order,
            "expected": self.expected,
            "produced": self.produced,
            "lost": self.lost,
            "wrong": self.wrong,
            "unexpected": self.unexpected,
            "duplicates": self.duplicates,
            "late_readings": self.late_readings,
            "expected_stream_order": self.expected_stream_order,
            "examples": self.examples[:5],
        }


class OutRows:
    """Output stream entries in compact columns, in stream (= commit) order."""

    def __init__(self) -> None:
        self.src = array("q")  # input entry index, -1 when @src is unknown
        self.key = array("l")  # index into keys ("" = no @key)
        self.node = array("l")  # index into names
        self.value = array("d")
        self.ts = array("q")
        self.names: list[str] = []
        self.keys: list[str] = []
        self._ids: dict[bytes, int] = {}
        self._key_ids: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self.src)

    def add(self, src: int, key: bytes, node: bytes, value: float, ts: int) -> None:
        """Append one row."""
        self.src.append(src)
        self.key.append(_intern(key, self._key_ids, self.keys))
        self.node.append(_intern(node, self._ids, self.names))
        self.value.append(value)
        self.ts.append(ts)


def _intern(name: bytes, ids: dict[bytes, int], names: list[str]) -> int:
    nid = ids.get(name)
    if nid is None:
        nid = ids[name] = len(names)
        names.append(name.decode())
    return nid


def read_out(
    client: redis.Redis, key: str, index_of: dict[bytes, int], rows: OutRows | None = None
) -> OutRows:
    """Every entry of the output stream ``key`` appended to ``rows`` (a new one when None);
    ``@src`` is mapped to entry indices through ``index_of``."""
    rows = OutRows() if rows is None else rows
    start = b"-"
    while True:
        chunk: Any = client.execute_command("XRANGE", key, start, "+", "COUNT", READ_CHUNK)
        if not chunk:
            return rows
        for _id, flat in chunk:
            node = value = ts = src = None
            wave_key = b""
            for i in range(0, len(flat), 2):
                name = flat[i]
                if name == b"@src":
                    src = flat[i + 1]
                elif name == b"@ts":
                    ts = flat[i + 1]
                elif name == b"@key":
                    wave_key = flat[i + 1]
                else:
                    node, value = name, flat[i + 1]
            try:
                number = float(value) if value is not None else math.nan
            except ValueError:
                number = math.nan
            index = index_of.get(src, -1) if src else -1
            rows.add(index, wave_key, node or b"?", number, int(ts or -1))
        start = b"(" + chunk[-1][0]
        if len(chunk) < READ_CHUNK:
            return rows


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _ranges(rows: OutRows) -> dict[int, list[tuple[int, int]]]:
    """Entry index -> the [lo, hi) row ranges of its output, in out order (several = split)."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    srcs = rows.src
    i = 0
    total = len(srcs)
    while i < total:
        j = i
        src = srcs[i]
        while j < total and srcs[j] == src:
            j += 1
        ranges.setdefault(src, []).append((i, j))
        i = j
    return ranges


def _compare(check: Check, index: int, entry: Entry, fired: list[Fired], actual: Actual) -> None:
    """Tally one entry: the model's fired values against the engine's (consumes ``actual``)."""
    check.expected += len(fired)
    for name, value, ts in fired:
        got = actual.pop(name, None)
        if got is None:
            check.lost += 1
            check.note(f"lost {name}={value} of entry {index}")
        elif not _close(got[0], float(value)) or got[1] != ts or got[2] != entry.key:
            check.wrong += 1
            check.note(f"wrong {name} of entry {index}: {got} != {(value, ts, entry.key)}")
    if actual:
        check.unexpected += len(actual)
        check.note(f"unexpected {sorted(actual)[:3]} for entry {index}")


def _actual(check: Check, rows: OutRows, index: int, spans: Sequence[tuple[int, int]]) -> Actual:
    """The values of entry ``index`` in ``rows`` (its row ranges ``spans``), duplicates noted."""
    actual: Actual = {}
    names, keys = rows.names, rows.keys
    for lo, hi in spans:
        for k in range(lo, hi):
            name = names[rows.node[k]]
            if name in actual:
                check.duplicates += 1
                check.note(f"duplicate {name} for entry {index}")
            else:
                actual[name] = (rows.value[k], rows.ts[k], keys[rows.key[k]])
    return actual


class Models:
    """One model per key, made on first use by ``factory``; replays entries one wave each."""

    def __init__(self, factory: ModelFactory) -> None:
        self.factory = factory
        self.by_key: dict[str, Any] = {}

    def wave(self, index: int, entry: Entry) -> list[Fired]:
        """The values the wave of ``entry`` (the ``index``-th input entry) fires."""
        model = self.by_key.get(entry.key)
        if model is None:
            model = self.by_key[entry.key] = self.factory()
        return wave(model, str(index), entry.ts, entry.readings)

    @property
    def late(self) -> int:
        """Values that changed no slot because they were late (S2), over every key."""
        return sum(m.late for m in self.by_key.values())


def verify(
    rows: OutRows,
    entries: Sequence[Entry],
    factory: ModelFactory,
    *,
    stream_expected: int | None,
) -> Check:
    """Compare ``rows`` with the model over ``entries`` (``@src`` index i = ``entries[i]``) in
    stream order (a value out has twice, or in another order's result, is bad)."""
    check = Check(order="stream")
    check.produced = len(rows)
    check.expected_stream_order = stream_expected
    ranges = _ranges(rows)
    for lo, hi in ranges.pop(-1, []):
        check.unexpected += hi - lo
        check.note(f"{hi - lo} out entries with an unknown @src")
    models = Models(factory)
    for index in range(len(entries)):
        actual = _actual(check, rows, index, ranges.pop(index, ()))
        entry = entries[index]
        _compare(check, index, entry, models.wave(index, entry), actual)
    for rest in ranges.values():  # rows for entries beyond n
        check.unexpected += sum(hi - lo for lo, hi in rest)
    check.late_readings = models.late
    return check


def stream_order_count(entries: Sequence[Entry], factory: ModelFactory) -> int:
    """Derived values the model produces for ``entries`` in stream order."""
    models = Models(factory)
    return sum(len(models.wave(i, e)) for i, e in enumerate(entries))
