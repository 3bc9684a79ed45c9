"""What a Redis error means: "not now" (and which kind of not now), or "never".

One place classifies every error a worker may meet, on a single Redis or a
cluster: redis-py's own exception classes (``MovedError``, ``TryAgainError``,
``ClusterDownError``, ``MasterDownError``...: their text lacks the code), the
code at the start of an error reply (Redis 7, Valkey) and the codes Redis 6.2
embeds in a script's error (``... -TRYAGAIN ...``). The worker waits out what
:func:`classify` calls transient and logs :func:`describe`'s one line, which
names the node and slot a :class:`~streamcalc.cluster.SlotRouter` noted on the
error (:func:`annotate`).
"""

from __future__ import annotations

from typing import Literal

import redis
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)

Address = tuple[str, int]

#: What kind of "not now" an error is (None from :func:`classify`: not transient).
Trouble = Literal["moved", "migrating", "down", "busy", "connection"]

#: Error codes by the trouble they mean; Redis 6.2 wraps a script's errors ("... -OOM ...").
_CODES: dict[str, Trouble] = {
    "MOVED": "moved",
    "ASK": "moved",
    "TRYAGAIN": "migrating",
    "CLUSTERDOWN": "down",
    "MASTERDOWN": "down",
    "OOM": "busy",
    "BUSY": "busy",
    "LOADING": "connection",  # not there yet: like a restart still under way
    "READONLY": "moved",  # a master turned replica under us: the slot is elsewhere now
}

#: redis-py's own classes, whose text lacks the code (checked in this order: subclasses first).
_CLASSES: tuple[tuple[type[BaseException], Trouble], ...] = (
    (MasterDownError, "down"),
    (ClusterDownError, "down"),
    (MovedError, "moved"),
    (AskError, "moved"),
    (TryAgainError, "migrating"),
    (ReadOnlyError, "moved"),
    (OutOfMemoryError, "busy"),
    (BusyLoadingError, "connection"),
    (redis.ConnectionError, "connection"),
    (redis.TimeoutError, "connection"),
)


def classify(exc: BaseException) -> Trouble | None:
    """What kind of passing trouble ``exc`` is, or None when waiting would not help.

    Knows redis-py's exception classes (``MovedError``, ``TryAgainError``,
    ``ClusterDownError``, ``MasterDownError``...: their text lacks the code),
    the codes at the start of an error reply (Redis 7, Valkey) and the codes
    Redis 6.2 embeds in a script's error (``... -TRYAGAIN ...``). A blocked
    read cut short because its node became a replica (``UNBLOCKED ... instance
    state changed``) is a move.
    """
    for cls, trouble in _CLASSES:
        if isinstance(exc, cls):
            return trouble
    if not isinstance(exc, redis.ResponseError):
        return None
    text = str(exc)
    code = text.split(" ", 1)[0]
    if code in _CODES:
        return _CODES[code]
    if code == "UNBLOCKED" and "state changed" in text:
        return "moved"
    for code, trouble in _CODES.items():
        if f"-{code} " in text:
            return trouble
    return None


def where(exc: BaseException) -> str:
    """``node 127.0.0.1:30001 slot 5718`` for an error a :class:`SlotRouter` annotated, else ""."""
    node, slot = getattr(exc, "streamcalc_node", None), getattr(exc, "streamcalc_slot", None)
    if isinstance(exc, AskError):  # the redirection names the node that has the slot now
        node = node or f"{exc.host}:{exc.port}"
        slot = exc.slot_id if slot is None else slot
    parts = ([f"node {node}"] if node else []) + ([f"slot {slot}"] if slot is not None else [])
    return " ".join(parts)


def describe(exc: BaseException) -> str:
    """One line for a log: the error's code (redis-py drops it) and text, and :func:`where`."""
    code = _code_of(exc)
    text = str(exc)
    head = text if not code or text.startswith(code) else f"{code} {text}"
    place = where(exc)
    return f"{head} ({place})" if place else head


def _code_of(exc: BaseException) -> str:
    names = {
        MasterDownError: "MASTERDOWN",
        ClusterDownError: "CLUSTERDOWN",
        MovedError: "MOVED",
        AskError: "ASK",
        TryAgainError: "TRYAGAIN",
    }
    for cls, code in names.items():
        if type(exc) is cls:
            return code
    return ""


def annotate(exc: BaseException, node: Address | None, slot: int | None) -> None:
    """Remember on ``exc`` which node and slot it came from (see :func:`where`)."""
    if node is not None and getattr(exc, "streamcalc_node", None) is None:
        exc.streamcalc_node = f"{node[0]}:{node[1]}"  # type: ignore[attr-defined]
    if slot is not None and getattr(exc, "streamcalc_slot", None) is None:
        exc.streamcalc_slot = slot  # type: ignore[attr-defined]
