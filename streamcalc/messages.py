"""Entry formats (docs/streams.md): raw stream entries in, decoded readings out, and back to fields.

Data flows one way: entry bytes -> :class:`Entry` (validated readings) -> wave ->
output fields. Anything that cannot be decoded raises :class:`EntryError` with a
one-line reason, and the entry goes whole to the dead-letter stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from streamcalc.errors import EntryError
from streamcalc.graph import valid_node_name
from streamcalc.keys import valid_key
from streamcalc.values import Value, decode_value

#: Most fields one entry may carry (readings plus ``@`` fields).
MAX_FIELDS = 1024
#: Largest JSON text of one value, in bytes.
MAX_VALUE_BYTES = 64 * 1024
#: Longest vector.
MAX_VECTOR_LEN = 4096
#: Largest ``@ts``: every ts stays an exact double (JSON, Lua, Prometheus).
MAX_TS = 2**53 - 1
#: Default of ``--max-future``: how far an ``@ts`` may lie ahead of its entry's ID time.
DEFAULT_MAX_FUTURE_MS = 5 * 60_000
_INT_LIMIT = 2**63
_json_decode = msgspec.json.Decoder().decode
# Valid node names seen so far (bytes -> str), so each is checked once; bounded,
# so that an entry stream of random names cannot grow it without limit.
_known_names: dict[bytes, str] = {}
_KNOWN_NAMES_LIMIT = 100_000
# Valid keys seen so far (bytes -> str), bounded the same way: a device sends many entries.
_known_keys: dict[bytes, str] = {}
_TS_FIELD = b"@ts"
_SRC_FIELD = b"@src"
_KEY_FIELD = b"@key"


class Entry(msgspec.Struct, frozen=True, gc=False):
    """One decoded input entry: its readings share one ``ts``."""

    id: str
    ts: int
    readings: tuple[tuple[str, Value], ...]
    src: str | None = None
    key: str = ""
    """The entry's ``@key``; the empty key is the namespace's unkeyed state."""


def id_ms(entry_id: bytes | str) -> int:
    """The millisecond part of a stream entry ID."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def decode_entry(
    entry_id: bytes, fields: Sequence[bytes] | None, max_future_ms: int = DEFAULT_MAX_FUTURE_MS
) -> Entry:
    """Decode one raw entry (``fields`` as the flat list Redis returns) or raise EntryError.

    An ``@ts`` more than ``max_future_ms`` ahead of the entry ID's time is refused
    (0: no limit): a unit mistake (microseconds) would otherwise freeze its nodes.
    """
    if fields is None:
        raise EntryError("entry was deleted from the stream before it was processed")
    if len(fields) > 2 * MAX_FIELDS:
        raise EntryError(f"too many fields: {len(fields) // 2} (limit {MAX_FIELDS})")
    reserved = _Reserved()
    readings: dict[str, Value] = {}
    names = _known_names
    decode = _json_decode
    ts: int | None = None
    for i in range(0, len(fields) - 1, 2):
        field, raw = fields[i], fields[i + 1]
        name = names.get(field)
        if name is None:
            if field == _TS_FIELD and ts is None:  # the common reserved field, inline
                ts = _decode_ts(raw)
                continue
            if field.startswith(b"@"):
                reserved.take(field, raw, ts is not None)
                continue
            name = _decode_name(field)
        if name in readings:
            raise EntryError(f"field {_show(field)} appears twice")
        # Fast path: msgspec yields only finite floats, so a float or a plain int is done.
        try:
            value = decode(raw) if len(raw) <= MAX_VALUE_BYTES else None
        except (msgspec.DecodeError, RecursionError):
            value = None
        kind = type(value)
        if kind is float or (kind is int and -_INT_LIMIT < value < _INT_LIMIT):  # type: ignore[operator]
            readings[name] = value  # type: ignore[assignment]
        else:
            readings[name] = _decode_reading(field, raw)
    if not readings:
        raise EntryError("entry carries no readings")
    text_id = entry_id.decode()
    arrived = int(entry_id.partition(b"-")[0])
    if ts is not None and max_future_ms and ts - arrived > max_future_ms:
        raise EntryError(
            f"@ts {ts} lies {(ts - arrived) / 1000:.0f} s ahead of the entry's time "
            f"(limit {max_future_ms / 1000:g} s; milliseconds since the epoch expected)"
        )
    return Entry(
        text_id,
        arrived if ts is None else ts,
        tuple(readings.items()),
        reserved.src,
        reserved.key,
    )


class _Reserved:
    """The ``@`` fields of one entry as they are decoded; unknown or repeated ones raise."""

    __slots__ = ("key", "seen", "src")

    def __init__(self) -> None:
        self.src: str | None = None
        self.key = ""
        self.seen: set[bytes] = set()

    def take(self, field: bytes, raw: bytes, ts_seen: bool) -> None:
        """Take ``@src`` or ``@key`` (``@ts`` is decoded inline; ``ts_seen``: it was)."""
        if field not in (_TS_FIELD, _SRC_FIELD, _KEY_FIELD):
            raise EntryError(f"unknown reserved field {_show(field)}")
        if field in self.seen or (field == _TS_FIELD and ts_seen):
            raise EntryError(f"field {_show(field)} appears twice")
        self.seen.add(field)
        if field == _SRC_FIELD:
            self.src = raw.decode("utf-8", "backslashreplace")
        else:
            self.key = decode_key(raw)


def decode_key(raw: bytes) -> str:
    """An ``@key`` value, or EntryError for a bad one."""
    known = _known_keys.get(raw)
    if known is not None:
        return known
    try:
        key = raw.decode("ascii")
    except UnicodeDecodeError:
        key = ""
    if not valid_key(key):
        raise EntryError(f"bad @key {_show(raw)}: 1 to 128 characters of A-Z a-z 0-9 _ . : / -")
    if len(_known_keys) < _KNOWN_NAMES_LIMIT:
        _known_keys[raw] = key
    return key


def _decode_ts(raw: bytes) -> int:
    # bytes.isdigit: ASCII digits only, and not empty
    if len(raw) > 16 or not raw.isdigit() or (ts := int(raw)) > MAX_TS:
        raise EntryError(
            f"@ts {_show(raw)} is not a non-negative integer of milliseconds (at most 2^53 - 1)"
        )
    return ts


def _decode_name(field: bytes) -> str:
    try:
        name = field.decode("ascii")
    except UnicodeDecodeError:
        raise EntryError(f"bad node name {_show(field)}") from None
    if not valid_node_name(name):
        raise EntryError(f"bad node name {_show(field)}")
    if len(_known_names) < _KNOWN_NAMES_LIMIT:
        _known_names[field] = name
    return name


def _decode_reading(field: bytes, raw: bytes) -> Value:
    if len(raw) > MAX_VALUE_BYTES:
        raise EntryError(f"value of {_show(field)} is {len(raw)} bytes (limit {MAX_VALUE_BYTES})")
    try:
        value = decode_value(raw)
    except ValueError as exc:
        raise EntryError(f"bad value for {_show(field)}: {exc}") from None
    if isinstance(value, tuple) and len(value) > MAX_VECTOR_LEN:
        raise EntryError(
            f"vector {_show(field)} has {len(value)} elements (limit {MAX_VECTOR_LEN})"
        )
    return value


def _show(raw: bytes, limit: int = 40) -> str:
    """A short printable quotation of raw bytes for one-line error messages."""
    # latin-1 maps every byte to one character, and repr escapes the unprintable ones.
    return repr(raw[:limit].decode("latin-1") + ("..." if len(raw) > limit else ""))


class OutputValue(msgspec.Struct, frozen=True):
    """One entry of ``sc:{NS}:out``: a fired value of a derived node."""

    node: str
    value: Value
    ts: int
    src: str
    key: str = ""


def decode_output(fields: Mapping[bytes, bytes]) -> OutputValue:
    """Decode the fields of an output entry (NODE, ``@ts``, ``@src`` and ``@key`` if keyed)."""
    node = next(name for name in fields if not name.startswith(b"@"))
    key = fields.get(_KEY_FIELD)
    return OutputValue(
        node.decode(),
        decode_value(fields[node]),
        int(fields[_TS_FIELD]),
        fields[_SRC_FIELD].decode(),
        key.decode() if key is not None else "",
    )
