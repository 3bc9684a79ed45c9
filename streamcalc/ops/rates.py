"""Input and output rates of a namespace, counted from its streams' entry IDs.

An entry ID starts with the millisecond its stream took it in, so the number
of entries a stream took in over the last ``W`` seconds is the number of its
entries whose ID lies in that window: an exact count, not a decaying average
of counters. A window with more entries than a status call should read
(:data:`READ_BUDGET`, over every stream) is shortened to the span the entries
read cover in every stream, and the shorter window is what is reported, so a
rate is always "so many entries in the last so many seconds". Bursts do not
distort it: a thousand values in one millisecond, a minute ago, are a thousand
values in the last minute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
import redis

from streamcalc.keys import Keys
from streamcalc.ops.streams import id_key

#: Rates are counted over this window, ending at the Redis server's clock.
RATE_WINDOW_MS = 60_000
#: At most this many entries (over all streams) are read to count them.
READ_BUDGET = 100_000
#: The first read takes this many of each stream's newest entries; busier streams read more.
FIRST_PAGE = 1_000
#: A window never shrinks below this: past it, the counts are lower bounds.
MIN_WINDOW_MS = 1_000


class Rates(msgspec.Struct, frozen=True):
    """Input entries and output values per second over the last ``window_s`` seconds.

    ``window_s`` is 60 unless the window held more entries than a status reads;
    then it is the (shorter) span whose entries were all counted. ``estimated``:
    even the shortest window held more than could be read, so the rates are
    lower bounds. ``input_idle_s``/``output_idle_s``: seconds since the newest
    entry of any partition's ``in``/``out`` (None: the streams are empty).
    """

    window_s: float
    input_per_s: float
    output_per_s: float
    input_entries: int  # entries of every partition's `in` in the window
    output_values: int  # entries of every partition's `out` in the window
    estimated: bool
    input_idle_s: float | None = None
    output_idle_s: float | None = None


@dataclass
class _Count:
    """What was read of one stream, newest first, down to the window's start."""

    stream: str
    done: bool = False  # every entry of the window was read
    times: list[int] = field(default_factory=list)  # ID milliseconds, newest first
    after: str = "+"  # where the next read continues (exclusive)


def rates(client: redis.Redis, partitions: Sequence[Keys], now_ms: int) -> Rates:
    """Entries per second of every partition's ``in`` and ``out`` (not a routing stream's).

    The streams are read newest first down to the window's start, all in one
    pipeline a round; a stream that reaches it is done, the others read on
    with a larger page while the budget lasts.
    """
    counts = [_Count(stream) for keys in partitions for stream in (keys.input, keys.output)]
    start = max(now_ms - RATE_WINDOW_MS, 0)
    budget, page = READ_BUDGET, FIRST_PAGE
    while budget > 0 and (busy := [c for c in counts if not c.done]):
        page = min(page, max(budget // len(busy), 1))
        pipe = client.pipeline(transaction=False)
        for count in busy:
            pipe.xrevrange(count.stream, count.after, f"{start}-0", count=page)
        for count, rows in zip(busy, pipe.execute(), strict=True):
            count.times += [id_key(entry_id)[0] for entry_id, _ in rows]
            budget -= len(rows)
            if len(rows) < page:
                count.done = True
            else:
                count.after = f"({rows[-1][0].decode()}"
        page *= 4
    return _rates(counts, now_ms)


def _rates(counts: Sequence[_Count], now_ms: int) -> Rates:
    """The window every stream was counted over in full, and the counts within it."""
    cut = max((c.times[-1] for c in counts if not c.done and c.times), default=None)
    low = now_ms - RATE_WINDOW_MS  # entries at or after `low` count
    estimated = False
    if cut is not None:
        # The stream that read least far back may hold more entries of its oldest
        # millisecond: count only the milliseconds after it, read in full everywhere.
        low = cut + 1
        if now_ms - low < MIN_WINDOW_MS:
            low, estimated = now_ms - MIN_WINDOW_MS, True
    window_ms = max(now_ms - low, 1)
    within = [sum(1 for t in c.times if t >= low) for c in counts]
    ins, outs = sum(within[0::2]), sum(within[1::2])
    return Rates(
        window_s=round(window_ms / 1000, 3),
        input_per_s=ins * 1000 / window_ms,
        output_per_s=outs * 1000 / window_ms,
        input_entries=ins,
        output_values=outs,
        estimated=estimated,
    )


def idle_s(last_id: str | None, now_ms: int) -> float | None:
    """Seconds since a stream's newest entry (by its ID), None for an empty stream."""
    return None if last_id is None else max(now_ms - id_key(last_id)[0], 0) / 1000
