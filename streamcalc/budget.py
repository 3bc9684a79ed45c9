"""How many entries a worker reads at a time: ``--batch``, or fewer when entries are heavy.

Three budgets bound a batch whatever the graph and the entries: one commit
carries about COMMIT_VALUES_BUDGET derived values (a commit never holds Redis
for more than a few milliseconds, so every other client goes on), one read
brings about READ_BYTES_BUDGET bytes (a worker's memory for entry data stays
bounded: the batch in hand and the one read ahead), and a worker that keeps up
prepares a batch in about BATCH_SECONDS of CPU (an entry waits for the batch it
is in, so small batches are committed at once; a worker that is behind may take
longer batches, which cost less per entry, see BEHIND_SHARE). All are learnt
from what recent batches fired, weighed and took; reads start at one entry and
grow fourfold, so a backlog of huge entries is never read hundreds at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from streamcalc.messages import id_ms
from streamcalc.scripts.protocol import RawEntry

#: Derived values one commit may carry: at most about 5 ms of Redis (on a 1,000-node
#: fan-out, Redis spent 7.6 ms of CPU a commit of 2,000 values, 5.2-5.6 ms of 1,000).
COMMIT_VALUES_BUDGET = 1_500
#: Bytes of entries one read may bring, about.
READ_BYTES_BUDGET = 16 * 1024 * 1024
#: CPU seconds the worker may spend preparing one batch while it keeps up.
BATCH_SECONDS = 0.002
#: A worker behind may spend this share of how long its oldest entry has waited on a
#: batch: a batch adds at most about a quarter to the latency of the entries it carries.
BEHIND_SHARE = 0.25
#: A worker is behind once the oldest entry of a read waited longer than this, or a read
#: brought all it asked for.
BEHIND_S = 0.002


class Budget:
    """The read size of one partition's engine."""

    __slots__ = (
        "_batch",
        "_behind_s",
        "_bytes_per_entry",
        "_ramp",
        "_seconds_per_entry",
        "_values_per_entry",
    )

    def __init__(self, batch: int) -> None:
        self._batch = batch
        self._values_per_entry = 0.0
        self._bytes_per_entry = 0.0
        self._seconds_per_entry = 0.0
        self._behind_s = 0.0
        self._ramp = 1

    def size(self) -> int:
        """Entries to read next."""
        size = min(self._batch, self._ramp)
        if self._values_per_entry:
            size = min(size, int(COMMIT_VALUES_BUDGET / self._values_per_entry))
        if self._bytes_per_entry:
            size = min(size, int(READ_BYTES_BUDGET / self._bytes_per_entry))
        if self._seconds_per_entry:
            seconds = max(BATCH_SECONDS, BEHIND_SHARE * self._behind_s)
            size = min(size, int(seconds / self._seconds_per_entry))
        return max(size, 1)

    def weigh(self, entries: Sequence[RawEntry], now: float | None = None) -> None:
        """Learn what entries weigh from a read (a sample: every 8th, the first included),
        and how long the oldest of them has waited (its ID's time against ``now``)."""
        if not entries:
            return
        sample = [sum(map(len, fields)) for _, fields in entries[::8] if fields]
        if sample:
            self._bytes_per_entry = _follow(self._bytes_per_entry, sum(sample) / len(sample))
        self._ramp = min(self._ramp * 4, 1 << 20)
        waited = (time.time() if now is None else now) - id_ms(entries[0][0]) / 1000
        self._behind_s = max(waited, 0.0)  # a Redis clock ahead of ours: not behind

    def behind(self, read: int, asked: int) -> bool:
        """True when the worker is behind, after a read of ``read`` entries of ``asked``."""
        return read >= asked or self._behind_s > BEHIND_S

    def fired(self, values: int, entries: int) -> None:
        """Learn what entries fire from a committed batch."""
        if entries:
            self._values_per_entry = _follow(self._values_per_entry, values / entries)

    def took(self, seconds: float, entries: int) -> None:
        """Learn what entries cost to prepare from a committed batch (CPU seconds)."""
        if entries:
            self._seconds_per_entry = _follow(self._seconds_per_entry, seconds / entries)


def _follow(known: float, seen: float) -> float:
    """Up at once when entries get heavier, down slowly when they get lighter."""
    return max(seen, 0.7 * known + 0.3 * seen)
