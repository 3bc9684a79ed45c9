"""Who works on which partition: membership of the group's workers, and the assignment.

Every worker renews its membership (a sorted set scored by expiry in Redis
time) every tick and reads the live members back. All of them compute the same
assignment from the same list, so no coordinator is needed (:func:`deal`):
every worker gets ``P // n`` or ``P // n + 1`` partitions, and the assignment
is sticky, as a rendezvous hash makes it: a worker that joins takes partitions
mostly from the others' surplus, and one that leaves hands out only its own,
instead of every partition being dealt anew. A worker then gives back what is
no longer its own and takes what is, each partition through its lease (see
``lease.lua``): a partition changes hands only once its old owner gave it back
or stopped renewing it, and ``commit.lua`` refuses any commit from a worker
whose lease is gone, so two owners never both emit a wave.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import cast

import redis

from streamcalc.keys import Namespace
from streamcalc.scripts import members_script


def assignment(members: Sequence[str], partitions: int, consumer: str) -> set[int]:
    """The partitions ``consumer`` should own when ``members`` are alive (empty if not one)."""
    owners = deal(tuple(sorted(set(members))), partitions)
    return {p for p, owner in enumerate(owners) if owner == consumer}


@functools.lru_cache(maxsize=16)  # every tick asks; the members seldom change
def deal(members: tuple[str, ...], partitions: int) -> tuple[str, ...]:
    """Each partition's owner among ``members`` (sorted, distinct): the same for every caller.

    Every (partition, member) pair has a score, a hash of both; pairs are taken
    best score first, each partition going to the first member with room left.
    A member has room for ``P // n`` partitions, ``P // n + 1`` for the ``P % n``
    members whose own score is best. As scores do not depend on who else is
    there, a partition keeps its owner through a join or a leave unless the
    owner's room shrank or a newcomer outscores it: a join moves about
    ``P / (n + 1)`` partitions (dealing them round-robin anew moved most of
    them), a leave mostly just the leaver's.
    """
    if not members:
        return ()
    base, extra = divmod(partitions, len(members))
    by_rank = sorted(members, key=lambda m: (_score("room", m), m), reverse=True)
    room = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_rank)}
    pairs = sorted(
        ((_score(str(p), m), p, m) for p in range(partitions) for m in members), reverse=True
    )
    owners: dict[int, str] = {}
    for _, p, m in pairs:
        if p not in owners and room[m]:
            owners[p] = m
            room[m] -= 1
    return tuple(owners[p] for p in range(partitions))


def _score(what: str, member: str) -> int:
    digest = hashlib.blake2b(f"{what}\0{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


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
