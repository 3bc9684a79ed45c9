"""The worker: one member of the group, from owning partitions to keeping itself healthy.

Every tick it renews its membership, works out which partitions are its own
(:mod:`streamcalc.ownership`), gives back the ones that are not and takes the
free ones that are (:class:`~streamcalc.partition.Tenure`). Between ticks it
processes its partitions in turn, and when none has anything it waits on all
of them at once. It rides out lost connections, refreshes the gauges read from
Redis, trims history when asked (``--retain``) and hands everything over on stop.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, cast

import msgspec
import redis
import structlog

from streamcalc import metrics
from streamcalc.cluster import refresh
from streamcalc.engine import Engine
from streamcalc.errors import GraphError, LeaseLost, RedisStateError, RedisUnavailable
from streamcalc.graph import Graph
from streamcalc.graph.plugins import blocked_call
from streamcalc.keys import Keys, Namespace
from streamcalc.ownership import LeaseKeeper, Membership, assignment, tick_seconds
from streamcalc.partition import Tenure, client_name
from streamcalc.redis_errors import classify, describe
from streamcalc.router import Router
from streamcalc.settings import Settings
from streamcalc.store import (
    connect,
    fetch_graph,
    graph_version,
    latest_values,
    partition_count,
    ping,
)
from streamcalc.values import Value

#: A worker without a graph says so at once, then again this often.
NO_GRAPH_LOG_S = 60.0

#: How a heartbeat file starts when a plugin blocks its worker (the supervisor replaces it).
BLOCKED_PREFIX = "blocked: "


def _transient(exc: redis.RedisError) -> bool:
    """True for an error that says "not now" rather than "never" (see :func:`classify`)."""
    return classify(exc) is not None


#: What the worker logs (once) when Redis has each kind of passing trouble.
_TROUBLE = {
    "connection": "redis unreachable; retrying",
    "down": "redis cluster down; waiting until it is back",
    "moved": "cluster slot moved; following it",
    "migrating": "cluster slot being migrated; waiting",
    "busy": "redis refuses writes for now; retrying",
}


#: The young generation's collection threshold of a worker process (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a worker process (its entry point calls it).

    A batch allocates thousands of short-lived, acyclic containers (slot lists,
    value tuples), so at CPython's default threshold the young generation is
    collected every few hundred entries, and the older ones, which hold the state
    cache of every recently used key, are walked again and again. Everything alive
    once the worker is set up (modules, clients, metrics) is frozen out of collection.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def default_consumer_name() -> str:
    """``<hostname>-<pid>``: unique per process, recognisable in ``status``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _raw(response: Any, **_: Any) -> Any:
    return response


class Worker:
    """One member of the group. Not thread-safe; :meth:`stop` may be called from anywhere."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = settings.consumer or default_consumer_name()
        self.namespace = Namespace(settings.ns)
        self.keys = self.namespace.root
        self.instance = secrets.token_hex(4)
        """This process among workers that share a consumer name (a restart, say)."""
        # A blocking read must not look like a dead socket.
        self.client = connect(
            settings.redis_url,
            cluster=settings.cluster,
            timeout=max(10.0, settings.block_ms / 1000 + 5),
            name=client_name(self.consumer, self.instance),
        )
        # Entries are parsed from Redis's flat field lists: a dict would hide repeated fields.
        for command in ("XREAD", "XREADGROUP", "XAUTOCLAIM", "XCLAIM"):
            self.client.set_response_callback(command, _raw)
        self.log = structlog.get_logger("streamcalc.worker").bind(
            ns=settings.ns, group=settings.group, consumer=self.consumer
        )
        self.membership = Membership(
            self.client, settings.ns, settings.group, self.consumer, settings.lease_ms
        )
        self.partitions = 0
        self.owned: dict[int, Tenure] = {}
        self.router: Router | None = None
        self._stopping = threading.Event()
        self._tick = tick_seconds(settings.lease_ms)
        self._next_tick = 0.0
        self._next_observe = 0.0
        self._next_trim = 0.0
        self.last_progress = time.monotonic()
        self._last_heartbeat = 0.0
        self._blocked_reported = False
        self._parent = os.getppid()
        self.redis_ok = False
        self._redis_trouble = "redis unreachable"
        self.waiting_for_graph = False
        self._in_flight: Tenure | None = None
        """The partition whose last commit is in flight, settled in the next one's turn."""
        self._held: tuple[Tenure, ...] = ()
        """What the lease keeper renews: replaced whole (never mutated) by the main loop."""
        self._keeper = LeaseKeeper(self._renew_held, self._tick, self._making_progress)

    # -- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to finish its current batch and return from :meth:`run`."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping.is_set()

    def health(self) -> tuple[bool, str]:
        """(healthy, reason) for ``/healthz``: Redis reachable and the loop making progress."""
        if not self.redis_ok:
            return False, self._redis_trouble
        blocked = blocked_call()
        if blocked:
            return False, blocked
        if self.waiting_for_graph:
            return False, f"no graph loaded in namespace {self.settings.ns!r}"
        paused = [t for t in self._held if t.engine.unrunnable]
        if paused:
            return False, f"graph cannot run: {paused[0].engine.unrunnable}"
        stuck_after = self.settings.stuck_after
        idle = time.monotonic() - self.last_progress
        if idle > stuck_after:
            return False, f"stuck: no progress for {idle:.0f}s"
        return True, "ok"

    def start(self) -> None:
        """Reach Redis (waiting up to ``--wait``) and wait until a graph is loaded.

        Both waits are logged at once, so a silent worker is never a puzzle;
        the wait for a graph again every :data:`NO_GRAPH_LOG_S` seconds.
        """
        if not self._reach_redis():
            return
        self.redis_ok = True
        next_log = 0.0
        while not self.stopping:
            try:
                if fetch_graph(self.client, self.keys)[1] is not None:
                    break
            except GraphError:
                break  # a graph is stored; each partition pauses until one that runs is loaded
            self.waiting_for_graph = True
            if time.monotonic() >= next_log:
                self.log.warning("no graph loaded; waiting for 'streamcalc graph load'")
                next_log = time.monotonic() + NO_GRAPH_LOG_S
            self._stopping.wait(1.0)
        self.waiting_for_graph = False
        self.last_progress = time.monotonic()

    def _reach_redis(self) -> bool:
        """Ping until Redis answers (True), ``--wait`` runs out (RedisUnavailable) or we stop.

        A refused password is not worth waiting for: it raises at once.
        """
        deadline = time.monotonic() + self.settings.wait_s
        delay = 0.05
        while True:
            try:
                self.client.ping()
            except redis.AuthenticationError:
                ping(self.client, self.settings.redis_url)  # raises its one-line error
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                reason = f"cannot reach Redis at {self.settings.safe_url}: {exc}"
                if time.monotonic() + delay > deadline:
                    raise RedisUnavailable(reason) from None
                if delay == 0.05:  # the first failure: say what we wait for, at once
                    wait_s = self.settings.wait_s
                    self.log.warning(f"waiting up to {wait_s:g}s for Redis", error=reason)
                if self._stopping.wait(delay):
                    return False
                delay = min(delay * 2, 2.0)
                continue
            if delay > 0.05:
                self.log.info("redis reached")
            return True

    def run(self) -> None:
        """Run until :meth:`stop`: take partitions, process them, hand them over at the end."""
        self.start()
        if not self.stopping:
            self.log.info("worker started")
        self._keeper.start()
        try:
            try:
                while not self.stopping:
                    self._resilient(self.step)
            finally:
                self._keeper.stop()
            self._resilient(self.leave)
            self.log.info("worker stopped")
        finally:
            self.client.close()  # its sockets now, not whenever the collector comes by

    def _resilient(self, action: Any) -> None:
        """Run ``action``, riding out lost connections with backoff until it succeeds or we stop.

        Also what a cluster does for a while: a slot moving (MOVED, ASK,
        TRYAGAIN), a failover, the cluster down; and what Redis refuses for
        now (out of memory, busy, loading). Nothing is lost meanwhile: an
        unfinished batch was not committed and is read again.
        """
        delay = 0.1
        failing = ""
        while True:
            try:
                action()
                if failing:
                    self.client.ping()  # back when Redis answers, not when a round needed none
                    self.log.warning("redis is back", after=failing)
                self.redis_ok = True
                return
            except redis.RedisError as exc:
                trouble = classify(exc)
                if trouble is None:
                    if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                        raise
                    # The group is gone, or the stream was deleted while we waited.
                    self.log.warning("consumer group or stream vanished; recreating it")
                    self._resilient(self._groups_lost)
                elif trouble != failing:  # once per outage (and per kind of it)
                    self.log.warning(_TROUBLE[trouble], error=describe(exc))
                if trouble is not None:
                    failing = trouble
                    if trouble in ("connection", "down"):
                        self.redis_ok = False
                        self._redis_trouble = (
                            "redis cluster down" if trouble == "down" else "redis unreachable"
                        )
                    refresh(self.client)
                    self._recover_all()
                    if trouble in ("moved", "migrating", "down"):
                        self._await_partitions()
                    if trouble == "moved":  # the slot table is read again: retry at once
                        delay = min(delay, 0.02)
            self._check_supervisor()  # also while Redis is away: no progress is made then
            if self.stopping and failing:
                return
            self._stopping.wait(delay)
            delay = min(delay * 2, 2.0)

    def _await_partitions(self) -> None:
        """Wait until a commit could run on every partition held (a slot that moves, a
        failover, the cluster down), before their pending entries are read again.

        Each read of a consumer's own pending entries counts as a delivery: re-read every
        time a commit is refused, a valid entry would end as a poison dead letter during a
        long slot migration.
        """
        delay = 0.02
        for tenure in self._tenures():
            while not self.stopping:
                try:
                    tenure.engine.scripts.ready(self.settings.group)
                    break
                except redis.RedisError as exc:
                    if classify(exc) is None:
                        raise
                    refresh(self.client)
                self._stopping.wait(delay)
                delay = min(delay * 2, 1.0)

    def _recover_all(self) -> None:
        """A batch may have been cut short: re-read what each partition left pending for us."""
        self._in_flight = None
        for tenure in self._tenures():
            tenure.recover()  # drops its connection too: the slot's node may have changed

    def _groups_lost(self) -> None:
        self._in_flight = None
        for tenure in self._tenures():
            tenure.group_lost()
        self._next_tick = 0.0

    def _tenures(self) -> list[Tenure]:
        routing: list[Tenure] = [self.router] if self.router is not None else []
        return [*routing, *self.owned.values()]

    def _renew_held(self) -> None:
        """The lease keeper's tick (its own thread): renew membership and every lease held."""
        self.membership.renew()
        for tenure in self._held:
            if tenure.token:
                tenure.renew()

    def _making_progress(self) -> bool:
        """The lease keeper's question (its thread): renew? Not while a plugin call is
        blocked past its timeout (the partitions go to a live worker), nor when stuck."""
        blocked = blocked_call()
        if blocked:
            self._report_blocked(blocked)
            return False
        return time.monotonic() - self.last_progress <= self.settings.stuck_after

    def _report_blocked(self, blocked: str) -> None:
        """Say once that a plugin blocks this worker: a log line, and for a supervisor
        (``--processes``) the heartbeat file, which then reads ``blocked: ...``."""
        if self._blocked_reported:
            return
        self._blocked_reported = True
        self.log.error("worker blocked; its leases are left to expire", error=blocked)
        if self.settings.heartbeat_file:
            with contextlib.suppress(OSError):
                Path(self.settings.heartbeat_file).write_text(f"{BLOCKED_PREFIX}{blocked}")

    def leave(self) -> None:
        """Hand every partition over and end the membership: the others take over at once."""
        self._settle_in_flight()
        for tenure in self._tenures():
            tenure.release()
        self.owned.clear()
        self.router = None
        self._held = ()
        self.membership.leave()
        metrics.PARTITIONS_OWNED.set(0)

    # -- ownership -----------------------------------------------------------------------------

    def rebalance(self) -> None:
        """Renew membership and leases; give back what is no longer ours, take what is."""
        count = partition_count(self.client, self.settings.ns)
        if count != self.partitions:
            self.leave()
            self.partitions = count
        members = self.membership.renew()
        target = assignment(members, self.partitions, self.consumer)
        changed = False
        for p in sorted(set(self.owned) - target):
            self.owned.pop(p).release()
            changed = True
        for p, tenure in list(self.owned.items()):
            if not tenure.renew():
                self.log.warning("partition lease lost", partition=tenure.keys.label)
                self.owned.pop(p).lost()
                changed = True
        for p in sorted(target - set(self.owned)):
            tenure = Tenure(self._engine(self.namespace.partition(p, count), count))
            if self._take(tenure):
                self.owned[p] = tenure
                changed = True
        self._rebalance_router()
        self._held = tuple(self._tenures())
        if changed:
            metrics.REBALANCES.inc()
            self.log.info("partitions owned", partitions=sorted(self.owned), members=len(members))
        metrics.PARTITIONS_OWNED.set(len(self.owned))

    def _rebalance_router(self) -> None:
        """The owner of partition 0 of a partitioned namespace also routes ``sc:{NS}:in``."""
        routes = self.partitions > 1 and 0 in self.owned
        if self.router is not None and not routes:
            self.router.release()
            self.router = None
        elif self.router is not None and not self.router.renew():
            self.router.lost()
            self.router = None
        if routes and self.router is None:
            router = Router(self._engine(self.keys, 1, "router"), self.partitions)
            if self._take(router):
                self.router = router

    def _take(self, tenure: Tenure) -> bool:
        """Take a partition; False also when its lease was lost again before the claim."""
        try:
            return tenure.take()
        except LeaseLost as exc:  # we paused past the new lease: someone else has it now
            self.log.warning("partition lost while taking it", error=str(exc))
            tenure.lost()
            return False

    def _engine(self, keys: Keys, partitions: int, label: str = "") -> Engine:
        log = self.log.bind(partition=label or keys.label)
        return Engine(
            self.client,
            keys,
            self.settings,
            self.consumer,
            log,
            partitions=partitions,
            instance=self.instance,
        )

    # -- processing ----------------------------------------------------------------------------

    def step(self) -> int:
        """One round: tick when due, process every owned partition, wait if all were idle."""
        now = time.monotonic()
        if now >= self._next_tick:
            self.rebalance()
            self._next_tick = now + self._tick
        if now >= self._next_observe:
            self.observe_group()
            self._next_observe = now + 5.0
        retaining = self.settings.retain_ms is not None or self.settings.retain_len is not None
        if retaining and now >= self._next_trim:
            self.retain()
            self._next_trim = now + random.uniform(8.0, 12.0)  # workers spread out
        processed = 0
        tenures = self._tenures()
        for i, tenure in enumerate(tenures):
            # an equal share of the time to the next tick; what an idle one leaves, the next gets
            share = (self._next_tick - time.monotonic()) / (len(tenures) - i)
            processed += self._step_one(tenure, share)
        self._settle_in_flight()
        self._progress()
        if not processed and not self.stopping:
            self._wait()
        return processed

    def _step_one(self, tenure: Tenure, share: float) -> int:
        """One partition's turn; the commit the turn before left in flight is settled in it."""
        budget = max(share, 0.01)
        try:
            processed = tenure.step(budget, lambda: self.stopping, self._settle_in_flight)
        except LeaseLost as exc:
            self._lose(tenure, exc)
            processed = 0
        self._settle_in_flight()  # the turn did not need to (idle, paused or lost)
        if tenure.in_flight is not None:
            self._in_flight = tenure
        return processed

    def _settle_in_flight(self) -> None:
        """End the commit a partition's turn left in flight (see :meth:`Tenure.step`)."""
        tenure, self._in_flight = self._in_flight, None
        if tenure is None:
            return
        try:
            tenure.settle()
        except LeaseLost as exc:
            self._lose(tenure, exc)

    def _lose(self, tenure: Tenure, exc: LeaseLost) -> None:
        self.log.warning("partition lease lost", partition=tenure.keys.label, error=str(exc))
        tenure.lost()
        if tenure is self.router:
            self.router = None
        else:
            self.owned = {p: t for p, t in self.owned.items() if t is not tenure}
        self._held = tuple(self._tenures())
        self._next_tick = 0.0

    def _wait(self) -> None:
        """Block until an owned partition has new entries, or the next tick is due."""
        timeout_ms = int(
            min(self.settings.block_ms / 1000, self._next_tick - time.monotonic()) * 1000
        )
        tenures = self._tenures()
        if timeout_ms <= 0:
            return
        if not tenures:
            self._stopping.wait(timeout_ms / 1000)
            return
        streams: dict[str, str] = {t.keys.input: t.newest for t in tenures}
        # A plain XREAD delivers nothing: the fenced read that follows does.
        self.client.xread(streams, count=1, block=timeout_ms)  # type: ignore[arg-type]

    def _progress(self) -> None:
        now = time.monotonic()
        self.last_progress = now
        if self.settings.heartbeat_file and now - self._last_heartbeat > 1.0:
            # The supervisor of ``--processes N`` judges its children's health by this file.
            with contextlib.suppress(OSError):
                Path(self.settings.heartbeat_file).touch()
            self._last_heartbeat = now
            self._check_supervisor()

    def _check_supervisor(self) -> None:
        """Stop when our ``--processes`` supervisor is gone (killed): nobody would restart
        or stop us, so hand the partitions over rather than run on as an orphan."""
        if self.settings.heartbeat_file and os.getppid() != self._parent and not self.stopping:
            self.log.warning("supervisor gone; stopping")
            self.stop()

    def drain(self) -> int:
        """Process until no owned partition has anything left (for tests and tools)."""
        total = 0
        while True:
            self.rebalance()
            processed = sum(self._step_one(t, 1.0) for t in self._tenures())
            self._settle_in_flight()
            total += processed
            if not processed:
                return total

    # -- upkeep --------------------------------------------------------------------------------

    def retain(self) -> None:
        """``--retain``: trim in, out and dead, never below what a group still needs."""
        from streamcalc.ops import trim

        s = self.settings
        for tenure in self._tenures():
            result = trim(self.client, tenure.keys, max_age_ms=s.retain_ms, max_len=s.retain_len)
            self.log.debug("retention", result=msgspec.to_builtins(result))

    def _observed_graph(self, tenure: Tenure) -> Graph | None:
        """The graph the node gauges follow: the stored one, even before an idle engine reloads.

        So a node removed from the graph leaves the gauges within one refresh.
        """
        engine = tenure.engine
        if graph_version(self.client, tenure.keys) == engine.graph_version:
            return engine.graph
        try:
            return fetch_graph(self.client, tenure.keys)[1]
        except GraphError:
            return engine.graph  # the engine reports it when it reloads

    def _newest(self, partitions: list[Keys], derived: list[str]) -> dict[str, int]:
        """The newest ts of each derived node's values over all keys: the keyed values' from
        every partition's fresh hash, the empty key's from its latest values (partition 0).
        Bounded: one field per derived node and partition."""
        newest: dict[str, int] = {}
        reads = [(keys.fresh, False) for keys in partitions] + [(partitions[0].latest, True)]
        for hash_key, latest in reads:
            replies = cast(list[bytes | None], self.client.hmget(hash_key, derived))
            for node, raw in zip(derived, replies, strict=True):
                ts = raw.partition(b" ")[0] if latest and raw is not None else raw
                if ts is not None and ts.isdigit():  # anything else was not written by us
                    newest[node] = max(newest.get(node, 0), int(ts))
        return newest

    def observe_group(self) -> None:
        """Refresh the gauges read from Redis: lag and pending per partition, node staleness."""
        count = max(self.partitions, 1)
        partitions = self.namespace.partitions(count)
        streams = [*partitions, self.namespace.root] if count > 1 else partitions
        for keys in streams:
            label = "router" if keys.partition is None and count > 1 else keys.label
            try:
                groups = self.client.xinfo_groups(keys.input)
            except redis.ResponseError:
                continue  # no stream yet
            for group in groups:
                if group["name"].decode() == self.settings.group:
                    metrics.PENDING.labels(label).set(group["pending"])
                    lag = group.get("lag")
                    if lag is not None:
                        metrics.STREAM_LAG.labels(label).set(lag)
        tenures = list(self.owned.values())
        graph = self._observed_graph(tenures[0]) if tenures else None
        if graph is None:
            return
        derived = list(graph.nodes)
        newest = self._newest(partitions, derived)
        values: dict[str, Value] = {}
        if self.settings.export_values:  # the empty key's values, in partition 0
            named = sorted(graph.inputs | set(derived))
            try:
                found = latest_values(self.client, partitions[0], named)
            except RedisStateError as exc:  # tampered with: report it, keep working
                self.log.error("latest values unreadable", error=str(exc))
                found = {}
            values = {node: value for node, (_, value) in found.items()}
        metrics.observe_nodes(newest, values, int(time.time() * 1000))
