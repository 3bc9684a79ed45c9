"""What every operator function needs of a namespace's streams: their names, entry IDs, text."""

from __future__ import annotations

import re

from streamcalc.errors import UsageError
from streamcalc.keys import Keys

_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def stream_keys(keys: Keys) -> tuple[tuple[str, str], ...]:
    """(name, key) of the namespace's streams: ``in``, ``out`` and ``dead``, in that order."""
    return (("in", keys.input), ("out", keys.output), ("dead", keys.dead))


def check_id(text: str) -> str:
    """``text`` if it is a full stream entry ID (``ms-seq``), else raise UsageError."""
    if _ID.fullmatch(text) is None:
        raise UsageError(f"bad entry ID {text!r}: expected <ms>-<seq>, like 1700000000000-0")
    return text


def as_text(raw: bytes | str) -> str:
    """A Redis reply as text, whatever the client's decode_responses; bad UTF-8 escaped."""
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
