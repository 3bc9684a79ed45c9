"""The value domain: finite numbers and vectors of finite numbers, and their JSON text."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeAlias

import msgspec

from streamcalc.errors import RedisStateError

Number: TypeAlias = int | float
Vector: TypeAlias = tuple[Number, ...]
Value: TypeAlias = Number | Vector

# Ints are kept exactly below this magnitude. A reading beyond it is refused (it would
# silently lose digits as a float); a function result beyond it becomes a float.
_INT_LIMIT = 2**63

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def normalize(value: object, *, exact: bool = False) -> Value:
    """Return ``value`` as a Value, or raise ValueError saying why it is not one.

    Accepts ints and floats (not bools) that are finite, and non-empty lists or
    tuples of those. Ints of magnitude 2^63 and more become floats (an int too
    large for a float is not finite), or with ``exact`` (a reading) are refused.
    """
    if isinstance(value, bool):
        raise ValueError("booleans are not numbers")
    if isinstance(value, int):
        if -_INT_LIMIT < value < _INT_LIMIT:
            return value
        if exact:
            raise ValueError(
                "integer beyond +-(2^63 - 1) would lose digits "
                "(write it as a float, e.g. 1.8e19, to mean one)"
            )
        try:
            return _finite(float(value))
        except OverflowError:
            raise ValueError("number is not finite") from None
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("empty vector")
        items: list[Number] = []
        for item in value:
            if isinstance(item, list | tuple):
                raise ValueError("nested vectors are not allowed")
            scalar = normalize(item, exact=exact)
            assert not isinstance(scalar, tuple)
            items.append(scalar)
        return tuple(items)
    raise ValueError(f"not a number or vector: {type(value).__name__}")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("number is not finite")
    return value


def decode_value(text: bytes | str) -> Value:
    """Parse a reading's JSON text into a Value, or raise ValueError (integers must be exact)."""
    try:
        raw = _json_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return normalize(raw, exact=True)


def encode_value(value: Value) -> bytes:
    """Return the JSON text of a Value (vectors as arrays)."""
    return _json_encoder.encode(value)


def value_text(value: Value) -> str:
    """The JSON text of a Value as a str (the hot path of every emitted value)."""
    kind = type(value)
    if kind is float:
        return repr(value)  # finite floats: Python's shortest repr is valid JSON
    if kind is int:
        return str(value)
    return _json_encoder.encode(value).decode()


def decode_latest(
    items: Iterable[tuple[str, bytes | None]], where: str
) -> dict[str, tuple[int, Value]]:
    """(ts, value) of each node's latest-value text ``"<ts> <json>"`` (None: no value yet).

    Text that streamcalc did not write is a RedisStateError naming ``where``.
    """
    result: dict[str, tuple[int, Value]] = {}
    for node, text in items:
        if text is not None:
            ts, _, value = text.partition(b" ")
            try:
                result[node] = (int(ts), decode_value(value))
            except ValueError:
                raise RedisStateError(
                    f"the latest value of {node!r} in {where} was not written by "
                    f"streamcalc: {text[:40]!r}"
                ) from None
    return result
