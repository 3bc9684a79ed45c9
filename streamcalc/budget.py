"""How many entries a worker reads at a time: ``--batch``, or fewer when entries are heavy.

Two budgets bound a batch whatever the graph and the entries: one commit
carries about COMMIT_VALUES_BUDGET derived values (a commit never holds Redis
for more than a few milliseconds, so every other client goes on), and one read
brings about READ_BYTES_BUDGET bytes (a worker's memory for entry data stays
bounded: the batch in hand and the one read ahead). Both are learnt from what
recent batches fired and weighed; reads start at one entry and grow fourfold,
so a backlog of huge entries is never read hundreds at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamcalc.scripts.protocol import RawEntry

#: Derived values one commit may carry: at most about 5 ms of Redis (on a 1,000-node
#: fan-out, Redis spent 7.6 ms of CPU a commit of 2,000 values, 5.2-5.6 ms of 1,000).
COMMIT_VALUES_BUDGET = 1_500
#: Bytes of entries one read may bring, about.
READ_BYTES_BUDGET = 16 * 1024 * 1024


class Budget:
    """The read size of one partition's engine."""

    __slots__ = ("_batch", "_bytes_per_entry", "_ramp", "_values_per_entry")

    def __init__(self, batch: int) -> None:
        self._batch = batch
        self._values_per_entry = 0.0
        self._bytes_per_entry = 0.0
        self._ramp = 1

    def size(self) -> int:
        """Entries to read next."""
        size = min(self._batch, self._ramp)
        if self._values_per_entry:
            size = min(size, int(COMMIT_VALUES_BUDGET / self._values_per_entry))
        if self._bytes_per_entry:
            size = min(size, int(READ_BYTES_BUDGET / self._bytes_per_entry))
        return max(size, 1)

    def weigh(self, entries: Sequence[RawEntry]) -> None:
        """Learn what entries weigh from a read (a sample: every 8th, the first included)."""
        if not entries:
            return
        sample = [sum(map(len, fields)) for _, fields in entries[::8] if fields]
        if sample:
            self._bytes_per_entry = _follow(self._bytes_per_entry, sum(sample) / len(sample))
        self._ramp = min(self._ramp * 4, 1 << 20)

    def fired(self, values: int, entries: int) -> None:
        """Learn what entries fire from a committed batch."""
        if entries:
            self._values_per_entry = _follow(self._values_per_entry, values / entries)


def _follow(known: float, seen: float) -> float:
    """Up at once when entries get heavier, down slowly when they get lighter."""
    return max(seen, 0.7 * known + 0.3 * seen)
