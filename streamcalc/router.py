"""Moving entries from ``sc:{NS}:in`` of a partitioned namespace to their key's partition.

Producers that know the key XADD to their partition's stream; for those that
do not, one worker at a time (the owner of partition 0, under a lease of the
routing stream) reads ``sc:{NS}:in`` through the group in stream order and
moves each entry to ``partition_of(@key)`` with ``route.lua``, then acknowledges
it. A move is idempotent (each partition remembers the newest routing ID it
took in), so a router killed between moving and acknowledging, and the one
that takes over and moves the same entries again, lose nothing and move
nothing twice. An entry without ``@ts`` gets its routing ID's time as ``@ts``,
so its event time does not change on the way. An entry whose ``@key`` is bad
becomes a dead letter of ``sc:{NS}:dead``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streamcalc import faults, metrics
from streamcalc.engine import Engine, poison_reason
from streamcalc.errors import EntryError, LeaseLost, RedisStateError
from streamcalc.keys import Namespace, partition_of
from streamcalc.messages import decode_key, id_ms
from streamcalc.partition import Tenure
from streamcalc.scripts import CommitRequest, DeadLetter, PoisonEntry, RawEntry, Scripts
from streamcalc.store import graph_version

_KEY = b"@key"
_TS = b"@ts"


def route_target(fields: list[bytes], partitions: int) -> int:
    """The partition an entry's ``@key`` belongs to; EntryError for a bad or repeated one."""
    keys = [fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i] == _KEY]
    if len(keys) > 1:
        raise EntryError("field '@key' appears twice")
    return partition_of(decode_key(keys[0]), partitions) if keys else 0


class Router(Tenure):
    """The routing stream in the hands of the worker that owns partition 0."""

    def __init__(self, engine: Engine, partitions: int) -> None:
        super().__init__(engine)
        self.partitions = partitions
        layout = Namespace(self.settings.ns).partitions(partitions)
        self.targets = [Scripts(self.client, keys) for keys in layout]

    def _load_graph(self) -> None:
        """The router evaluates nothing: it needs only the graph version its commits check."""
        self.engine.graph_version = graph_version(self.client, self.keys)

    def step(
        self,
        budget_s: float,
        stopping: Callable[[], bool],
        settle_previous: Callable[[], None] | None = None,
    ) -> int:
        """Move what waits in the routing stream; returns the entries moved.

        Nothing is left in flight (the caller settles the previous partition's commit).
        """
        moved = 0
        start = "0" if self.recovering else ">"
        deadline = time.monotonic() + budget_s  # the worker's own partitions get their turn
        while not stopping() and time.monotonic() < deadline:
            reply = self.engine.read(self.settings.batch, start)
            if reply.poison is not None:  # delivered too often: a dead letter, never read whole
                self._give_up(reply.poison)
                continue
            if not reply.entries:
                if start == "0":
                    self.recovering, start = False, ">"
                    continue
                self.newest = reply.newest or "0-0"
                break
            self.move(reply.entries)
            moved += len(reply.entries)
        return moved

    def move(self, entries: list[RawEntry]) -> None:
        """Move ``entries`` (in stream order) to their partitions, then acknowledge them."""
        by_target: dict[int, list[tuple[str, list[bytes]]]] = {}
        dead: list[DeadLetter] = []
        for entry_id, fields in entries:
            text_id = entry_id.decode()
            if fields is None:
                continue  # deleted before it was routed: nothing to move
            try:
                target = route_target(fields, self.partitions)
            except EntryError as exc:
                dead.append(DeadLetter(text_id, str(exc), "", fields))
                continue
            if _TS not in fields[0::2]:
                fields = [*fields, _TS, str(id_ms(text_id)).encode()]
            by_target.setdefault(target, []).append((text_id, fields))
        for i, (target, moving) in enumerate(sorted(by_target.items())):
            if i:
                faults.reached("mid_route")
            self.targets[target].route(moving)
        faults.reached("after_route")
        self._finish([entry_id.decode() for entry_id, _ in entries], dead)

    def _give_up(self, poison: PoisonEntry) -> None:
        """A routing entry delivered too often: a dead letter (fetch.lua cut its fields), acked."""
        entry_id = poison.id.decode()
        reason = poison_reason(poison.deliveries, self.settings.max_deliveries)
        fields = poison.fields or ()
        cut, total = poison.cut, poison.total_fields
        self._finish(
            [entry_id], [DeadLetter(entry_id, reason, "", fields, poison.deliveries, cut, total)]
        )

    def _finish(self, ids: list[str], letters: list[DeadLetter]) -> None:
        """Dead-letter the unroutable entries and acknowledge all, if still the router.

        Through commit.lua, like any batch: fenced by the routing lease, with the
        one dead-letter layout.
        """
        s = self.settings
        for _ in range(3):
            request = CommitRequest(s.group, self.consumer, self.engine.graph_version, self.token)
            request.ids, request.dead = ids, letters
            reply = self.engine.scripts.commit(request)
            if reply.outcome == "fenced":
                raise LeaseLost("router", reply.holder)
            if reply.outcome == "graph":
                self.engine.graph_version = reply.graph_version
                continue
            if reply.outcome == "gone":  # another router finished these after moving them itself
                ids = [i for i in ids if i not in reply.gone]
                letters = [letter for letter in letters if letter.src not in reply.gone]
                continue
            for letter in letters:
                self.log.warning("dead letter", src=letter.src, error=letter.error)
            if letters:
                metrics.ENTRIES.labels("dead").inc(len(letters))
            return
        raise RedisStateError("the routing stream's graph version keeps changing")
