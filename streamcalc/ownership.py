"""Who works on which partition: membership of the group's workers, and the assignment.

Every worker renews its membership (a sorted set scored by expiry in Redis
time) every tick and reads the live members back. All of them compute the same
assignment from the same list, so no coordinator is needed: partitions are
dealt round-robin over the members in name order, which gives every worker
``P // n`` or ``P // n + 1`` of them. A worker then gives back what is no
longer its own and takes what is, each partition through its lease (see
``lease.lua``): a partition changes hands only once its old owner gave it back
or stopped renewing it, and ``commit.lua`` refuses any commit from a worker
whose lease is gone, so two owners never both emit a wave.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import cast

import redis

from streamcalc.keys import Namespace
from streamcalc.scripts import members_script


def assignment(members: Sequence[str], partitions: int, consumer: str) -> set[int]:
    """The partitions ``consumer`` should own when ``members`` are alive (empty if not one)."""
    ordered = sorted(members)
    if consumer not in ordered:
        return set()
    index, count = ordered.index(consumer), len(ordered)
    return {p for p in range(partitions) if p % count == index}


def tick_seconds(lease_ms: int) -> float:
    """How often a worker renews its membership and leases: five times per lease, at most 1 s."""
    return min(max(lease_ms / 5000, 0.02), 1.0)


class Membership:
    """One worker's membership of its group's member set."""

    def __init__(self, client: redis.Redis, ns: str, group: str, consumer: str, lease_ms: int):
        self.key = Namespace(ns).members(group)
        self.consumer = consumer
        self.lease_ms = lease_ms
        self._script = members_script(client)

    def renew(self) -> list[str]:
        """Renew this worker's membership; returns every live member, in name order."""
        live = self._script(keys=[self.key], args=[self.consumer, self.lease_ms])
        return [m.decode() for m in cast(list[bytes], live)]

    def leave(self) -> list[str]:
        """End this worker's membership at once (a clean stop); returns the members left."""
        live = self._script(keys=[self.key], args=[self.consumer, 0])
        return [m.decode() for m in cast(list[bytes], live)]


class LeaseKeeper:
    """Renews a worker's membership and leases from a thread of its own, every tick.

    So a batch that takes longer than a lease (a slow plugin, a huge graph) does
    not lose its partition in the middle, and nobody claims its entries from
    under it. A worker whose loop makes no progress for ``--stuck-after`` is
    not kept alive: ``alive()`` says no, renewals stop, and its partitions move
    to the others within a lease.
    """

    def __init__(self, renew: Callable[[], None], interval: float, alive: Callable[[], bool]):
        self._renew = renew
        self._interval = interval
        self._alive = alive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the worker then hands its leases over itself)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._alive():
                continue
            with contextlib.suppress(redis.RedisError):  # the worker's loop reports Redis trouble
                self._renew()
