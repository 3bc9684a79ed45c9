"""One partition in the hands of one worker: its lease, its engine, and reading it in order.

A worker holds a :class:`Tenure` for every partition it owns. Taking the
partition means taking its lease, loading its graph with an empty state cache,
claiming every entry still pending for anyone (the previous owner can no longer
commit them: its lease is gone) and processing those in stream order before
anything new (one owner, stream order). Every read and claim goes through ``fetch.lua``, fenced by
the lease like every commit, so a worker that lost the lease gets nothing more.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, cast

import redis

from streamcalc import faults, metrics
from streamcalc.cluster import slot_owner
from streamcalc.engine import Batch, Engine
from streamcalc.errors import GraphUnrunnable, RedisStateError
from streamcalc.keys import Keys
from streamcalc.scripts import LeaseToken, RawEntry
from streamcalc.settings import Settings

#: The connection name of a worker: its consumer name and the id of its process.
CLIENT_NAME = "streamcalc-worker:{consumer}:{instance}"


def client_name(consumer: str, instance: str) -> str:
    """The CLIENT SETNAME of a worker's connections (no spaces or odd characters)."""
    return CLIENT_NAME.format(
        consumer=re.sub(r"[^A-Za-z0-9_.:-]", "_", consumer), instance=instance
    )


def instance_connected(client: redis.Redis, instance: str) -> bool:
    """True while some connection of worker process ``instance`` is open on this Redis."""
    listing = cast(bytes, client.execute_command("CLIENT", "LIST", "TYPE", "normal"))  # type: ignore[no-untyped-call]
    suffix = f":{instance} ".encode()
    return any(
        b" name=streamcalc-worker:" in line and suffix in line + b" "
        for line in listing.splitlines()
    )


def _nothing() -> None:
    """No commit of another partition to settle."""


class Tenure:
    """A partition owned by this worker: the engine that processes it under the lease."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.client: redis.Redis = engine.client
        self.keys: Keys = engine.keys
        self.settings: Settings = engine.settings
        self.consumer: str = engine.consumer
        self.log: Any = engine.log
        self.newest = "0-0"
        """The newest ID of the partition's input seen when it had nothing new: wait after it."""
        self.recovering = True
        self.ahead: list[RawEntry] = []
        """Entries read ahead (pending for this consumer): the first batch of the next turn."""
        self.in_flight: tuple[Batch, int] | None = None
        """A batch whose commit (and a read of so many entries) was sent; see :meth:`settle`."""
        self._retry_at = 0.0

    @property
    def token(self) -> str:
        """The lease token, empty when not held."""
        return self.engine.token

    def take(self) -> bool:
        """Take the lease if it is free; then load the graph and claim what is pending.

        A lease held under this consumer's name by another instance (this worker
        restarted) is taken at once when no connection of that instance is left.
        """
        s, scripts, instance = self.settings, self.engine.scripts, self.engine.instance
        reply = scripts.take_lease(s.group, self.consumer, s.lease_ms, instance)
        held = reply.held_by()
        if reply.token is None and held is not None and self._predecessor_gone(held):
            reply = scripts.take_lease(s.group, self.consumer, s.lease_ms, instance, held.instance)
        if reply.token is None:
            return False
        token = reply.token
        self.engine.token = token
        faults.reached("after_take")
        self._ensure_group()
        self._load_graph()
        claimed = self.engine.claim_all()
        faults.reached("after_claim")
        if claimed:
            metrics.CLAIMED.inc(claimed)
        self.recover()
        self.log.info("partition taken", token=token, claimed=claimed)
        return True

    def _predecessor_gone(self, held: LeaseToken) -> bool:
        """True when a lease's holder is this consumer's own dead process (not this one)."""
        if held.consumer != self.consumer or held.instance == self.engine.instance:
            return False
        # the holder's connections are open on the node that serves the partition
        node = slot_owner(self.client, self.keys.lease(self.settings.group))
        return not instance_connected(node, held.instance)

    def _load_graph(self) -> None:
        """Load the partition's graph, with an empty state cache."""
        self.engine.reload_graph()
        if self.engine.unrunnable:
            self.log.error("graph cannot run here; partition paused", error=self.engine.unrunnable)
        elif self.engine.graph is None:  # the worker saw a graph before it took any partition
            raise RedisStateError(
                f"Redis at {self.settings.safe_url} has no graph for partition "
                f"{self.keys.label} (restarted without persistence, or keys deleted): "
                "load the graph again"
            )

    def renew(self) -> bool:
        """Extend the lease; False when it was lost (expired and taken, or deleted)."""
        s = self.settings
        return self.engine.scripts.renew_lease(s.group, self.token, s.lease_ms)

    def release(self) -> None:
        """Give the lease back (after the last commit) and leave the partition's group.

        Entries read ahead stay pending: the next owner claims them first.
        """
        s = self.settings
        self.settle()
        self.ahead = []
        self.engine.close()
        if self.token:
            faults.reached("before_release")
            self.engine.scripts.release_lease(s.group, self.token)
            self.log.info("partition handed over")
        self.engine.token = ""
        try:
            self.engine.scripts.leave(s.group, self.consumer)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise

    def lost(self) -> None:
        """Forget the partition after the lease was found gone (nothing to give back)."""
        self.recover()
        self.engine.close()
        self.engine.token = ""

    def recover(self) -> None:
        """Start again from what Redis holds: re-read our pending entries before anything new.

        What was read ahead is pending and will be read again; a commit in flight may or
        may not have happened, so its connection (with the unread reply) and the state
        cache are dropped.
        """
        self.recovering = True
        self.ahead = []
        self.in_flight = None
        self.engine.drop_connection()  # it may hold replies never read
        self.engine.cache.clear()

    def _ensure_group(self) -> None:
        """Create the consumer group at ID 0 (and the stream) unless it exists."""
        try:
            self.client.xgroup_create(self.keys.input, self.settings.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def group_lost(self) -> None:
        """The group or stream vanished: recreate it, then re-read what is ours."""
        self.recover()
        self._ensure_group()

    # -- reading -------------------------------------------------------------------------------

    def step(
        self,
        budget_s: float,
        stopping: Callable[[], bool],
        settle_previous: Callable[[], None] = _nothing,
    ) -> int:
        """Process what is there for up to about ``budget_s``; returns the entries processed.

        ``settle_previous`` ends the commit another partition left in flight; it is
        called once this partition's first batch is evaluated, so that Python works
        while Redis commits (the caller calls it itself when it was not). A turn that
        runs out of time leaves its last commit in flight (:meth:`settle`).

        While the stored graph cannot run here, nothing is read (nothing is lost
        either: entries wait in the stream, or pending for this consumer).
        """
        if self.engine.unrunnable and not self._resume():
            return 0
        try:
            return self._step(budget_s, stopping, settle_previous)
        except GraphUnrunnable as exc:  # a graph load arrived mid-pump
            self._paused(exc)
            return 0

    def settle(self) -> None:
        """Read the reply of the commit left in flight; commit again at once if it was refused."""
        if self.in_flight is None:
            return
        batch, read_ahead = self.in_flight
        self.in_flight = None
        engine = self.engine
        try:
            committed, fetched = engine.receive(batch, read_ahead)
            if not committed:
                engine.commit(engine.prepare(batch))
        except GraphUnrunnable as exc:
            self._paused(exc)
            return
        if fetched:
            self.ahead = fetched

    def _paused(self, exc: GraphUnrunnable) -> None:
        self.log.error("graph cannot run here; partition paused", error=str(exc))
        self.recover()

    def _resume(self) -> bool:
        """Try the stored graph again (at most once a second); True when it runs now."""
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + 1.0
        self.engine.reload_graph()
        if self.engine.unrunnable:
            return False
        self.log.info("graph runs again; partition resumed")
        self.recover()
        return True

    def _step(
        self, budget_s: float, stopping: Callable[[], bool], settle_previous: Callable[[], None]
    ) -> int:
        processed = 0
        if self.recovering:
            settle_previous()
            processed += self.drain_own_pending(stopping, budget_s)
            if self.recovering:  # out of time: the rest of it next turn
                return processed
        first, self.ahead = self.ahead, []
        behind = True  # entries read ahead in the turn before: there may be more
        if not first:
            count = self.engine.batch_size()
            reply = self.engine.read(count)
            if not reply.entries:
                self.newest = reply.newest or "0-0"
                return processed
            first = reply.entries
            behind = self.engine.budget.behind(len(first), count)
        return processed + self.pump(first, budget_s, stopping, settle_previous, behind)

    def drain_own_pending(self, stopping: Callable[[], bool], budget_s: float = 60.0) -> int:
        """Process the entries this consumer owns (read before a crash, or claimed) in order.

        Clears ``recovering`` once none is left; stops early after about ``budget_s``.
        """
        processed = 0
        deadline = time.monotonic() + budget_s
        while not stopping() and time.monotonic() < deadline:
            reply = self.engine.read(self.engine.batch_size(), "0")
            if reply.poison is not None:  # delivered too often: a dead letter, never read whole
                self.engine.give_up(reply.poison)
                processed += 1
                continue
            if not reply.entries:
                self.recovering = False
                break
            self.engine.process(reply.entries)
            processed += len(reply.entries)
        return processed

    def pump(
        self,
        first: list[RawEntry],
        budget_s: float,
        stopping: Callable[[], bool],
        settle_previous: Callable[[], None] = _nothing,
        behind: bool = True,
    ) -> int:
        """Process batches back to back while entries keep coming, for about ``budget_s``.

        Behind (see :meth:`~streamcalc.budget.Budget.behind`), each commit is
        sent together with a read of the next entries, and while Redis runs it,
        the batch read before is evaluated on top of it: Redis and Python work at
        the same time. Keeping up, a batch is committed before the next one is
        read, so an entry waits for one commit, not for two. Out of time, the
        last commit is left in flight and what was read ahead kept for the next
        turn, so that the next partition's first batch is evaluated while Redis
        commits this one's.
        """
        engine = self.engine
        current: Batch | None = engine.prepare(Batch(first, {}))
        settle_previous()
        ahead = engine.read(engine.batch_size()).entries if behind else []
        processed = len(first)
        deadline = time.monotonic() + budget_s
        while current is not None:
            upcoming = Batch(ahead, {}) if ahead else None
            size = engine.batch_size() if upcoming is None or behind else 0
            engine.send(current, read_ahead=size, upcoming=upcoming)
            if upcoming is not None:
                engine.prepare(upcoming, after=current)
            committed, fetched = engine.receive(current, read_ahead=size)
            if size:
                behind = engine.budget.behind(len(fetched), size)
            if not committed:
                engine.commit(engine.prepare(current))
                upcoming = engine.prepare(Batch(ahead, {})) if ahead else None
            processed += len(ahead)
            if upcoming is None and fetched:  # nothing was waiting, but the read brought some
                upcoming, fetched = engine.prepare(Batch(fetched, {})), []
                processed += len(upcoming.raw)
                if behind:  # a backlog: read the batch after it now, to evaluate meanwhile
                    fetched = engine.read(engine.batch_size()).entries
            current, ahead = upcoming, fetched
            if current is not None and stopping():
                engine.commit(current)  # finish what was read before leaving the loop
                if ahead:
                    engine.process(ahead)
                break
            if current is not None and time.monotonic() > deadline:
                read_ahead = 0 if ahead else engine.batch_size()
                engine.send(current, read_ahead)
                self.in_flight, self.ahead = (current, read_ahead), ahead
                break
        return processed
