"""``streamcalc trim`` and ``worker --retain``: drop processed history, never what a group needs."""

from __future__ import annotations

import msgspec
import redis

from streamcalc.errors import UsageError
from streamcalc.keys import Keys
from streamcalc.ops.streams import as_text, stream_keys
from streamcalc.scripts import script_source
from streamcalc.store import server_time_ms

#: Entries one trim script call removes at most (it is called again until done).
TRIM_CHUNK = 10_000

_trim_source = script_source("trim")


class StreamTrim(msgspec.Struct, frozen=True):
    """What a trim did (or, dry run, would do) to one stream."""

    key: str
    removed: int
    length: int  # entries left (dry run: that would be left)
    floor: str | None  # lowest ID some group still needs ("0-0": no group yet); None: no group


class TrimResult(msgspec.Struct, frozen=True):
    """The result of :func:`trim`; ``streams`` has the keys ``in``, ``out`` and ``dead``."""

    dry_run: bool
    streams: dict[str, StreamTrim]

    @property
    def removed(self) -> int:
        """Entries removed from all three streams."""
        return sum(s.removed for s in self.streams.values())


def trim(
    client: redis.Redis,
    keys: Keys,
    *,
    max_age_ms: int | None = None,
    max_len: int | None = None,
    dry_run: bool = False,
    now_ms: int | None = None,
    chunk: int = TRIM_CHUNK,
) -> TrimResult:
    """Drop old entries of ``in``, ``out`` and ``dead``, never one a consumer group still needs.

    An entry goes when it is older than ``max_age_ms`` (by its ID, against
    ``now_ms``, default the server's clock) or when more than ``max_len``
    newer entries follow it, and only when it lies below the stream's floor:
    the oldest entry that any group of that stream has pending or not yet
    delivered (trim.lua computes the floor and trims atomically). ``in``
    without any group keeps everything: nothing was acknowledged. ``out`` and
    ``dead`` have no groups of streamcalc's own, but a downstream consumer's
    group on them is respected the same way.

    Work is done in script calls of at most ``chunk`` entries, so Redis is never
    blocked for long; safe to run while workers run, and from several places.
    """
    if max_age_ms is None and max_len is None:
        raise UsageError("trim needs a maximum age or a maximum length (or both)")
    if (max_age_ms is not None and max_age_ms < 0) or (max_len is not None and max_len < 0):
        raise UsageError("maximum age and maximum length must not be negative")
    if chunk < 1:
        raise UsageError("chunk must be at least 1")
    age_cutoff = ""
    if max_age_ms is not None:
        now = server_time_ms(client) if now_ms is None else now_ms
        age_cutoff = f"{max(now - max_age_ms, 0)}-0"
    script = client.register_script(_trim_source)
    streams: dict[str, StreamTrim] = {}
    for name, key in stream_keys(keys):
        need_group = "1" if name == "in" else "0"
        removed = 0
        after = ""
        floor = ""
        while True:
            args = [
                need_group,
                age_cutoff,
                "" if max_len is None else max_len,
                chunk,
                "1" if dry_run else "0",
                after if dry_run else "",
                removed if dry_run else 0,
            ]
            n, more, floor_raw, last = script(keys=[key], args=args)
            removed += int(n)
            floor = as_text(floor_raw)
            if last:
                after = as_text(last)
            if not int(more):
                break
        length = int(client.xlen(key)) - (removed if dry_run else 0)
        streams[name] = StreamTrim(key, removed, length, floor or None)
    return TrimResult(dry_run, streams)
