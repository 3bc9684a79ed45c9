"""The batch engine of one partition: waves evaluated in Python, committed with one commit.lua.

A batch is prepared (entries decoded, waves run one at a time in stream order,
each against its key's view of the cached slot state, the commit request
built) and then committed: ``commit.lua`` checks the graph version and that
this worker still holds the partition's lease, and only then writes slot
state, derived values, latest values and dead letters and XACKs the entries.
A failed check writes nothing: after a graph change the engine reloads and
prepares the batch again; a lost lease (:class:`LeaseLost`) ends its tenure.

For throughput the worker overlaps the two halves: while Redis runs the commit
of one batch (:meth:`Engine.send`), Python already evaluates the next batch on
top of the first one's result (``prepare(..., after=batch)``); if the first
commit fails, that speculation is thrown away and redone.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.exceptions import NoScriptError

from streamcalc import faults, metrics
from streamcalc.budget import Budget
from streamcalc.cluster import refresh, slot_of, slot_owner
from streamcalc.errors import EntryError, GraphError, GraphUnrunnable, LeaseLost, RedisStateError
from streamcalc.graph import Graph
from streamcalc.graph.plugins import PluginPolicy
from streamcalc.keys import Keys, key_field, partition_of
from streamcalc.messages import Entry, decode_entry, id_ms
from streamcalc.redis_errors import annotate
from streamcalc.scripts import (
    CommitReply,
    CommitRequest,
    DeadLetter,
    PoisonEntry,
    RawEntry,
    ReadReply,
    Scripts,
)
from streamcalc.settings import Settings
from streamcalc.state import (
    BatchView,
    Latest,
    Missing,
    Slots,
    StateCache,
    TamperedState,
    decode_key_latest,
    decode_key_slots,
    decode_slots,
    encode_slots,
)
from streamcalc.store import fetch_graph, graph_version
from streamcalc.values import value_text
from streamcalc.wave import BatchResult, WavePlan, run_wave

#: A batch adds the counts of at most this many of its unknown names to the partition's set.
UNKNOWN_NAMES_PER_BATCH = 50
#: At most this many state fields whose stored latest ts an engine remembers (then it forgets).
STORED_TS_LIMIT = 200_000


def poison_reason(delivered: int, limit: int) -> str:
    """Why an entry delivered more than ``--max-deliveries`` times is a dead letter."""
    return f"delivered {delivered} times (limit {limit}); poison entry"


@dataclass(slots=True)
class Batch:
    """A batch of raw entries and, once prepared, its waves and commit request."""

    raw: Sequence[RawEntry]
    deliveries: Mapping[bytes, int]
    started: float = field(default_factory=time.perf_counter)
    gone: set[str] = field(default_factory=set)
    good: list[Entry] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    deliveries_of_poison: dict[str, int] = field(default_factory=dict)
    poison: PoisonEntry | None = None
    """A poison entry fetch.lua gave up on before reading it (its fields already cut)."""
    unknown_dead: Counter[str] = field(default_factory=Counter)
    """Names not in the graph that made entries dead letters (``unknown = "dead"``)."""
    decoded: Sequence[RawEntry] | None = None
    """The raw entries ``good`` and ``bad`` were decoded from (None: decode again)."""
    prefetch: Missing | None = None
    """State whose HMGETs were pipelined ahead of the commit in flight."""
    view: BatchView | None = None
    result: BatchResult = field(default_factory=BatchResult)
    request: CommitRequest | None = None
    work: float = 0.0
    """CPU seconds spent decoding and evaluating the batch (what the budget learns)."""
    latest_known: dict[str, int] = field(default_factory=dict)
    """State field -> ts of each latest value the request writes without comparing."""
    latest_asked: dict[str, int] = field(default_factory=dict)
    """State field -> ts of each latest value commit.lua compares with the stored one."""


class Engine:
    """The state cache of one partition for one consumer, and the preparing and committing."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        settings: Settings,
        consumer: str,
        log: Any,
        *,
        partitions: int = 1,
        instance: str = "-",
    ) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        self.consumer = consumer
        self.log = log
        self.partitions = partitions
        self.instance = instance
        """The id of this worker process (leases name it, see lease.lua)."""
        self.scripts = Scripts(client, keys)
        self.token = ""
        """The lease token under which this engine commits (set by the partition's owner)."""
        self.graph: Graph | None = None
        self.graph_version = "0"
        self._plan: WavePlan | None = None
        self._gens: dict[str, str] = {}
        """Derived node -> the generation of its definition, as stored in a key's slots."""
        self._empty: dict[str, Slots] = {}
        """Derived node -> never filled slots (shared: a batch copies slots before it writes)."""
        self._arities: dict[str, int] = {}
        self.unrunnable = ""
        """Why the stored graph cannot run here ("" when it can)."""
        self.cache = StateCache(settings.cache_keys)
        self.plugins = PluginPolicy(settings.plugins, True, settings.function_timeout_s)
        self._conn: Any = None  # a dedicated connection for pipelined commits
        self._pool: Any = None  # the pool it came from: its slot owner's
        self.budget = Budget(settings.batch)
        """How many entries to read at a time (see :class:`~streamcalc.budget.Budget`)."""
        self._stored_ts: dict[str, int] = {}
        """State field -> the ts of the latest value stored there, where this engine knows it
        exactly: it committed that value under its lease, and no commit of it has been in
        doubt since (only a partition's lease holder writes latest values). A newer value of
        such a field is written without reading the stored one; an older one not at all."""
        self._stored_token = ""

    def reload_graph(self) -> None:
        """Fetch the stored graph; drop all cached slot state (it may belong to the old graph).

        A stored graph this worker cannot run leaves the engine without one and
        ``unrunnable`` saying why (never an older graph in its place).
        """
        try:
            version, graph = fetch_graph(self.client, self.keys, self.plugins)
        except GraphError as exc:
            self.graph, self._plan, self.unrunnable = None, None, str(exc)
            self.graph_version = graph_version(self.client, self.keys)
            self.cache.clear()
            return
        self.unrunnable = ""
        if self.graph is not None and graph is None:
            raise RedisStateError(
                f"the graph vanished from Redis at {self.settings.safe_url} "
                "(restarted empty, or keys deleted): load it again"
            )
        self.graph, self.graph_version = graph, version
        self._plan = WavePlan(graph) if graph is not None else None
        if self._plan is not None:
            self._gens = {n: g.decode() for n, g in self._plan.generations.items()}
            self._arities = {n: len(d.args) for n, d in self._plan.graph.nodes.items()}
            self._empty = {n: [None] * arity for n, arity in self._arities.items()}
        self.cache.clear()
        self._stored_ts.clear()

    def batch_size(self) -> int:
        """Entries to read next (the budget's say)."""
        return self.budget.size()

    # -- reading (fenced by the lease) ---------------------------------------------------------

    def read(self, count: int, start: str = ">") -> ReadReply:
        """Read new (``>``) or own pending (``0``) entries; raises LeaseLost when fenced.

        Reading own pending entries, one delivered more than ``--max-deliveries``
        times comes alone as the reply's ``poison``, never read whole (see fetch.lua).
        """
        s = self.settings
        limit = s.max_deliveries if start == "0" else None
        reply = self.scripts.read(s.group, self.consumer, self.token, count, start, limit)
        if reply.fenced:
            raise LeaseLost(self.keys.label, reply.holder)
        self.budget.weigh(reply.entries)
        return reply

    def claim_all(self) -> int:
        """Make this consumer the owner of every pending entry of the partition."""
        cursor, claimed, s = "0-0", 0, self.settings
        while True:
            reply = self.scripts.claim(
                s.group, self.consumer, self.token, max(s.batch, 100), cursor
            )
            if reply.fenced:
                raise LeaseLost(self.keys.label, reply.holder)
            claimed += reply.claimed
            cursor = reply.cursor
            if cursor == "0-0":
                return claimed

    # -- one batch, synchronously --------------------------------------------------------------

    def process(
        self, raw: Sequence[RawEntry], deliveries: Mapping[bytes, int] | None = None
    ) -> None:
        """Process one batch to completion: waves, then one atomic commit."""
        self.commit(self.prepare(Batch(raw, deliveries or {})))

    def commit(self, batch: Batch) -> None:
        """Commit a prepared batch, preparing it again after every failed check."""
        while True:
            faults.reached("before_commit")
            assert batch.request is not None
            if self._settle(batch, self.scripts.commit(batch.request)):
                return
            self.prepare(batch)

    def give_up(self, poison: PoisonEntry) -> None:
        """Commit a poison entry as a dead letter (with its delivery count), and ack it."""
        batch = Batch([(poison.id, poison.fields)], {poison.id: poison.deliveries})
        batch.poison = poison
        self.commit(self.prepare(batch))

    # -- pipelined: commit one batch while the next one is evaluated ---------------------------

    def send(self, batch: Batch, read_ahead: int, upcoming: Batch | None = None) -> None:
        """Send the commit of ``batch`` (and a fenced read of up to ``read_ahead`` new entries).

        With ``upcoming`` (the batch to be prepared while this commit runs), decode it
        and send the read of the slot state its waves need but the cache lacks first:
        Redis answers that at once, instead of after the commit. (A commit writes only
        slots its batch read, and those are cached, so the read sees what it would see
        after the commit.) :meth:`prepare` of ``upcoming`` then takes that reply.
        """
        faults.reached("before_commit")
        assert batch.request is not None
        pool = slot_owner(self.client, self.keys.input).connection_pool
        if self._conn is not None and self._pool is not pool:  # the slot moved to another node
            self.drop_connection()
        if self._conn is None:
            self._conn, self._pool = pool.get_connection(), pool
        commands: list[tuple[Any, ...]] = []
        if upcoming is not None and self._plan is not None and not self.unrunnable:
            started = time.thread_time()
            self._decode_batch(upcoming)
            try:
                missing = self.cache.missing(self._plan.graph, upcoming.good)
            except BaseException:
                self.cache.clear()
                raise
            if missing:
                upcoming.prefetch = missing
                commands += self._reads(missing)
            upcoming.work += time.thread_time() - started
        commands.append(self.scripts.commit_command(batch.request))
        if read_ahead:
            s = self.settings
            commands.append(
                self.scripts.read_command(s.group, self.consumer, self.token, read_ahead)
            )
        try:
            self._conn.send_packed_command(self._conn.pack_commands(commands))
        except redis.ConnectionError as exc:
            raise self._lost(exc) from None

    def _take_prefetched(self, batch: Batch) -> None:
        """Fill the cache from the reply of the slot read :meth:`send` pipelined for ``batch``."""
        missing, batch.prefetch = batch.prefetch, None
        assert missing is not None
        try:
            replies = [self._conn.read_response() for _ in self._reads(missing)]
            self._fill(missing, replies)
        except redis.ConnectionError as exc:
            self.cache.clear()
            raise self._lost(exc) from None
        except redis.ResponseError as exc:  # the commit's replies follow, unread: start afresh
            self.cache.clear()
            located = self._located(exc)
            self.drop_connection()
            raise located from None
        except BaseException:
            self.cache.clear()  # the cache must not claim to cover what it failed to load
            raise

    def receive(self, batch: Batch, read_ahead: int) -> tuple[bool, list[RawEntry]]:
        """The replies to :meth:`send`: (committed?, entries read ahead)."""
        conn = self._conn
        errors: list[redis.ResponseError] = []
        replies: list[Any] = []
        try:
            for _ in range(2 if read_ahead else 1):
                try:  # every reply must be read, whatever the one before
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(None)
                    errors.append(exc)
        except redis.ConnectionError as exc:
            raise self._lost(exc) from None
        if errors and not all(isinstance(error, NoScriptError) for error in errors):
            raise self._located(next(e for e in errors if not isinstance(e, NoScriptError)))
        # A NOSCRIPT read delivered nothing: the next read gets those entries.
        entries: list[RawEntry] = []
        if read_ahead and replies[1] is not None:
            fetched = ReadReply.parse(replies[1])
            if fetched.fenced:
                raise LeaseLost(self.keys.label, fetched.holder)
            entries = fetched.entries
            self.budget.weigh(entries)
        if replies[0] is None:  # the script cache was flushed: commit through the loading path
            self.commit(batch)
            return True, entries
        return self._settle(batch, replies[0]), entries

    def close(self) -> None:
        """Give the dedicated connection back."""
        if self._conn is not None:
            self._pool.release(self._conn)
            self._conn = self._pool = None

    def drop_connection(self) -> None:
        """Close the dedicated connection (a reply on it is unread or was cut short).

        A commit sent on it may or may not have happened: the stored latest ts this
        engine knew are forgotten too."""
        if self._conn is not None:
            self._conn.disconnect()
        self._stored_ts.clear()
        self.close()

    def _lost(self, exc: redis.ConnectionError) -> redis.RedisError:
        """The dedicated connection failed: close it, look the slot owner up again."""
        located = self._located(exc)
        self.drop_connection()
        refresh(self.client)
        return located

    def _located(self, exc: redis.RedisError) -> redis.RedisError:
        """``exc`` naming the node and slot of this partition (for the worker's log)."""
        pool = self._pool or slot_owner(self.client, self.keys.input).connection_pool
        kw = pool.connection_kwargs
        annotate(exc, (str(kw.get("host", "")), int(kw.get("port", 0))), slot_of(self.keys.input))
        return exc

    # -- preparing -----------------------------------------------------------------------------

    def prepare(self, batch: Batch, after: Batch | None = None) -> Batch:
        """Decode and evaluate ``batch`` and build its commit request.

        With ``after``, evaluate on top of that batch's result, as if its commit
        (not yet known) had succeeded.
        """
        faults.reached("after_read")
        if self.unrunnable:
            raise GraphUnrunnable(self.unrunnable)
        if self.graph is None or self._plan is None:
            raise RedisStateError("no graph loaded")
        started = time.thread_time()
        raw = self._decode_batch(batch)
        if batch.prefetch is not None:
            self._take_prefetched(batch)
        self._prefetch(self.graph, batch.good)
        view = batch.view = BatchView(self.cache, after.view if after is not None else None)
        result = batch.result = BatchResult()
        plan = self._plan
        scope = view.scope
        for entry in batch.good:
            run_wave(plan, entry, scope(entry.key), result)
        faults.reached("after_eval")
        batch.request = self._request(batch, raw, after)
        view.detach()
        batch.work += time.thread_time() - started
        return batch

    def _decode_batch(self, batch: Batch) -> Sequence[RawEntry]:
        """Decode the batch's entries (but those finished by another consumer), unless done."""
        if batch.decoded is None:
            raw = batch.raw
            if batch.gone:
                raw = [e for e in raw if e[0].decode() not in batch.gone]
            batch.unknown_dead.clear()
            batch.good, batch.bad, batch.deliveries_of_poison = self._decode(raw, batch.deliveries)
            if self.graph is not None and self.graph.unknown == "dead":
                self._refuse_unknown(batch)
            batch.decoded = raw
        return batch.decoded

    def _decode(
        self, raw: Iterable[RawEntry], deliveries: Mapping[bytes, int]
    ) -> tuple[list[Entry], list[tuple[str, str]], dict[str, int]]:
        good: list[Entry] = []
        bad: list[tuple[str, str]] = []
        poison: dict[str, int] = {}
        limit = self.settings.max_deliveries
        partitions, max_future = self.partitions, self.settings.max_future_ms
        cached = self.cache  # holds only keys of good entries of this partition
        for entry_id, fields in raw:
            delivered = deliveries.get(entry_id, 0)
            if delivered > limit:
                bad.append((entry_id.decode(), poison_reason(delivered, limit)))
                poison[entry_id.decode()] = delivered
                continue
            try:
                entry = decode_entry(entry_id, fields, max_future)
            except EntryError as exc:
                bad.append((entry_id.decode(), str(exc)))
                continue
            if (
                partitions > 1
                and entry.key not in cached
                and (home := partition_of(entry.key, partitions)) != self.keys.partition
            ):
                error = (
                    f"key {entry.key!r} belongs to partition {home}, "
                    f"not {self.keys.partition} (wrong partition)"
                )
                bad.append((entry.id, error))
                continue
            good.append(entry)
        return good, bad, poison

    def _refuse_unknown(self, batch: Batch) -> None:
        """``unknown = "dead"``: an entry reading a name that is not a node is a dead letter."""
        assert self._plan is not None
        known = self._plan.known
        good: list[Entry] = []
        for entry in batch.good:
            stray = [name for name, _ in entry.readings if name not in known]
            if not stray:
                good.append(entry)
                continue
            batch.unknown_dead.update(stray)
            more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
            batch.bad.append(
                (entry.id, f'{stray[0]!r}{more} is not a node of the graph (unknown = "dead")')
            )
        batch.good = good

    def _prefetch(self, graph: Graph, entries: Iterable[Entry]) -> None:
        """Make sure the cache holds all the state the batch's waves may touch."""
        cache = self.cache
        try:
            missing = cache.missing(graph, entries)
            if missing:
                pipe = self.client.pipeline(transaction=False)
                for command in self._reads(missing):
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                self._fill(missing, cast(list[list[bytes | None]], pipe.execute()))
        except BaseException:
            cache.clear()  # the cache must not claim to cover what it failed to load
            raise
        cache.evict(keep=len({entry.key for entry in entries}))

    def _reads(self, missing: Missing) -> list[tuple[str, ...]]:
        """The HMGETs of the state ``missing``: the empty key's slots node by node, then
        the whole slots and latest values of each non-empty key (one field each)."""
        reads: list[tuple[str, ...]] = []
        if missing.nodes:
            reads.append(("HMGET", self.keys.slots, *missing.nodes))
        if missing.keys:
            fields = [key_field(key) for key in missing.keys]
            reads.append(("HMGET", self.keys.slots, *fields))
            reads.append(("HMGET", self.keys.latest, *fields))
        return reads

    def _fill(self, missing: Missing, replies: Sequence[Sequence[bytes | None]]) -> None:
        """Cache what the HMGETs of :meth:`_reads` replied."""
        assert self._plan is not None
        cache, gens, arities = self.cache, self._plan.generations, self._arities
        replies = list(replies)
        if missing.nodes:
            for node, blob in zip(missing.nodes, replies.pop(0), strict=True):
                cache.fill(node, self._node_slots(node, blob, arities[node], gens[node]))
        if missing.keys:
            slot_blobs, latest_blobs = replies
            for key, slots_blob, latest_blob in zip(
                missing.keys, slot_blobs, latest_blobs, strict=True
            ):
                cache.fill_key(key, *self._key_state(key, slots_blob, latest_blob))

    def _node_slots(self, node: str, blob: bytes | None, arity: int, gen: bytes) -> Slots:
        try:
            return decode_slots(blob, arity, gen)
        except TamperedState as exc:
            self.log.error("tampered slot state ignored", key="", node=node, error=str(exc))
            return [None] * arity

    def _key_state(
        self,
        key: str,
        slots_blob: bytes | None,
        latest_blob: bytes | None,
    ) -> tuple[dict[str, Slots], Latest]:
        """A non-empty key's whole state from its stored form; what does not decode, empty."""
        slots = dict(self._empty)
        try:
            slots.update(decode_key_slots(slots_blob, self._arities, self._gens))
        except TamperedState as exc:
            self.log.error("tampered slot state ignored", key=key, error=str(exc))
        try:
            latest = decode_key_latest(latest_blob)
        except TamperedState as exc:
            self.log.error("tampered latest values ignored", key=key, error=str(exc))
            latest = {}
        return slots, latest

    def _request(self, batch: Batch, raw: Sequence[RawEntry], after: Batch | None) -> CommitRequest:
        """The commit request of a prepared batch (``after``: the batch in flight before it)."""
        assert batch.view is not None and self._plan is not None
        s = self.settings
        request = CommitRequest(s.group, self.consumer, self.graph_version, self.token)
        request.ids = [entry_id.decode() for entry_id, _ in raw]
        gens = self._plan.generations
        writes = request.writes
        for state, node, slots in batch.view.fields():
            writes += (state, encode_slots(slots, gens[node]).decode())
        fired = request.fired
        for node, value, ts, src, key in batch.result.fired:
            fired += (node, value_text(value), str(ts), src, key)
        self._latest(batch, request, after)
        fresh: dict[str, int] = {}
        batch.view.commit_whole(
            self._gens, self._empty, writes, request.stored, request.key_ts, fresh
        )
        derived = self._plan.graph.nodes  # the staleness gauge's nodes: inputs it skips
        for node, ts in fresh.items():
            if node in derived:
                request.fresh += (node, str(ts))
        if batch.bad or batch.result.function_errors:
            request.dead = self._dead_letters(batch)
        return request

    def _latest(self, batch: Batch, request: CommitRequest, after: Batch | None) -> None:
        """The empty key's latest values (a non-empty key's are written whole: see
        :meth:`~streamcalc.state.BatchView.commit_whole`; the staleness gauge reads the
        empty key's ts from its latest values).

        A field whose stored ts is known goes to ``latest_known`` when this value is newer,
        and nowhere when it is older; any other is compared by commit.lua. Known: in
        ``_stored_ts``, or written without comparing by ``after`` (the batch whose commit
        is in flight: if it fails, this batch is prepared again), unless ``after`` has
        commit.lua compare it (its outcome is not known)."""
        assert batch.view is not None
        if self._stored_token != self.token:  # a new lease: what was stored is not known
            self._stored_ts.clear()
            self._stored_token = self.token
        sent_known = batch.latest_known = {}
        sent_asked = batch.latest_asked = {}
        scope = batch.view.keys.get("")
        if scope is None:
            return
        stored = self._stored_ts
        before = after.latest_known if after is not None else {}
        doubtful = after.latest_asked if after is not None else {}
        latest, known = request.latest, request.latest_known
        last_ts, ts_text = -1, ""
        for node, (ts, value) in scope.latest.items():
            if ts != last_ts:  # the values of a wave share their ts, mostly
                last_ts, ts_text = ts, str(ts)
            was = before.get(node)
            if was is None:
                was = None if node in doubtful else stored.get(node)
            if was is None:
                latest += (node, ts_text, value_text(value))
                sent_asked[node] = ts
            elif ts >= was:
                known += (node, ts_text, value_text(value))
                sent_known[node] = ts

    @staticmethod
    def _dead_letters(batch: Batch) -> list[DeadLetter]:
        fields_of = {entry_id.decode(): fields for entry_id, fields in batch.raw}
        letters: list[DeadLetter] = []
        poison = batch.poison
        for entry_id, error in batch.bad:
            fields = fields_of.get(entry_id) or ()
            deliveries = batch.deliveries_of_poison.get(entry_id)
            letter = DeadLetter(entry_id, error, "", fields, deliveries)
            if poison is not None and poison.id.decode() == entry_id:
                letter.cut, letter.total_fields = poison.cut, poison.total_fields
            letters.append(letter)
        for entry, node, error in batch.result.function_errors:
            letters.append(DeadLetter(entry.id, error, node, fields_of.get(entry.id) or ()))
        return letters

    # -- settling a commit's reply -------------------------------------------------------------

    def _settle(self, batch: Batch, raw_reply: Any) -> bool:
        """Apply a commit reply: True when committed; else prepare for another try and say False."""
        reply = raw_reply if isinstance(raw_reply, CommitReply) else CommitReply.parse(raw_reply)
        if reply.outcome == "ok":
            faults.reached("after_commit")
            self._committed(batch, reply.kept)
            return True
        metrics.CONFLICTS.inc()
        batch.decoded = None
        if reply.outcome == "fenced":
            raise LeaseLost(self.keys.label, reply.holder)
        if reply.outcome == "graph":
            self.log.info("graph changed; reloading", version=reply.graph_version)
            self.reload_graph()
        else:
            batch.gone |= reply.gone
            self.log.info("entries finished by another consumer", count=len(reply.gone))
        return False

    def _count_unknown(self, batch: Batch) -> None:
        """Count the batch's readings of names that are not nodes: the metric, and the
        partition's bounded set of the most frequent ones (``status`` shows them)."""
        assert self._plan is not None
        metrics.UNKNOWN_READINGS.inc(batch.result.unknown)
        names = Counter(batch.unknown_dead)
        if batch.result.unknown:
            known = self._plan.known
            names.update(n for e in batch.good for n, _ in e.readings if n not in known)
        try:
            self.scripts.count_unknown(names.most_common(UNKNOWN_NAMES_PER_BATCH))
        except redis.RedisError as exc:  # a statistic: the batch is committed all the same
            self.log.warning("unknown names not counted", error=str(exc))

    def _committed(self, batch: Batch, kept: frozenset[str]) -> None:
        assert batch.view is not None
        stored = self._stored_ts
        if len(stored) + len(batch.latest_known) + len(batch.latest_asked) > STORED_TS_LIMIT:
            stored.clear()
        stored.update(batch.latest_known)
        stored.update(batch.latest_asked)
        for state in kept:  # a newer value stayed: its ts is not known
            del stored[state]
        result = batch.result
        self.budget.fired(len(result.fired), len(batch.good))
        self.budget.took(batch.work, len(batch.raw))
        self.cache.update(batch.view)
        metrics.ENTRIES.labels("ok").inc(len(batch.good))
        if batch.bad:
            metrics.ENTRIES.labels("dead").inc(len(batch.bad))
            for entry_id, error in batch.bad:
                self.log.warning("dead letter", src=entry_id, error=error)
        metrics.READINGS.inc(result.readings)
        metrics.DERIVED.inc(len(result.fired))
        metrics.LATE_READINGS.inc(result.late)
        if result.unknown or batch.unknown_dead:
            self._count_unknown(batch)
        metrics.EXPIRED_ARGS.inc(result.expired)
        if result.function_errors:
            metrics.FUNCTION_ERRORS.inc(len(result.function_errors))
            for entry, node, error in result.function_errors:
                self.log.warning("function error", src=entry.id, node=node, error=error)
        now_ms = time.time() * 1000
        latencies = [max(now_ms - id_ms(entry.id), 0.0) / 1000 for entry in batch.good]
        metrics.observe_many(metrics.EVENT_LATENCY, latencies)
        elapsed = time.perf_counter() - batch.started
        metrics.BATCH_SECONDS.observe(elapsed)
        self.log.debug(
            "batch committed",
            partition=self.keys.label,
            entries=len(batch.good),
            dead=len(batch.bad),
            derived=len(result.fired),
            seconds=round(elapsed, 6),
        )
