"""The batch engine: waves of a batch evaluated in Python, committed with one call of commit.lua.

A batch is prepared (entries decoded, waves run one at a time in stream order
against a copy-on-write view of the cached slot state, commit arguments built)
and then committed: ``commit.lua`` checks the graph version, that every entry
is still pending for this consumer and the version of every slot state the
batch read, and only then writes slot state, derived values, latest values and
dead letters and XACKs the entries. A failed check writes nothing: the engine
refreshes what moved and prepares the batch again. So waves are serializable
across consumers and output is effectively-once.

For throughput the worker overlaps the two halves: while Redis runs the commit
of one batch (:meth:`Engine.send`), Python already evaluates the next batch on
top of the first one's result (``prepare(..., after=batch)``); if the first
commit fails, that speculation is thrown away and redone.
"""

from __future__ import annotations

import time
from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis
from redis.exceptions import NoScriptError

from streamcalc import faults, metrics
from streamcalc.errors import EntryError, RedisStateError
from streamcalc.graph import Graph
from streamcalc.keys import Keys
from streamcalc.messages import Entry, decode_entry, id_ms
from streamcalc.scripts import ScriptArg, Scripts
from streamcalc.settings import Settings
from streamcalc.store import fetch_graph
from streamcalc.values import value_text
from streamcalc.wave import (
    BatchResult,
    BatchView,
    Slots,
    WavePlan,
    decode_slots,
    encode_slots,
    run_wave,
)

#: Dead letters keep at most this many of an entry's fields (Lua's argument limit).
DEAD_FIELDS_LIMIT = 2000

RawEntry = tuple[bytes, list[bytes] | None]

_msgpack_encode = msgspec.msgpack.Encoder().encode


def read_entries(reply: Any) -> list[RawEntry]:
    """The entries of a raw XREADGROUP reply on one stream (None: no entries)."""
    return [(entry[0], entry[1]) for entry in reply[0][1]] if reply else []


@dataclass(slots=True)
class Batch:
    """A batch of raw entries and, once prepared, its waves and commit arguments."""

    raw: Sequence[RawEntry]
    deliveries: Mapping[bytes, int]
    started: float = field(default_factory=time.perf_counter)
    gone: set[str] = field(default_factory=set)
    good: list[Entry] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    deliveries_of_poison: dict[str, int] = field(default_factory=dict)
    view: BatchView = field(default_factory=lambda: BatchView({}))
    result: BatchResult = field(default_factory=BatchResult)
    args: list[ScriptArg] = field(default_factory=list)


class Engine:
    """The slot-state cache of one consumer, and the preparing and committing of batches."""

    def __init__(
        self, client: redis.Redis, keys: Keys, settings: Settings, consumer: str, log: Any
    ) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        self.consumer = consumer
        self.log = log
        self.scripts = Scripts(client, keys)
        self.graph: Graph | None = None
        self.graph_version = "0"
        self._plan: WavePlan | None = None
        self._cache: dict[str, Slots] = {}
        self._versions: dict[str, int] = {}
        self._covered: set[str] = set()
        self._conn: Any = None  # a dedicated connection for pipelined commits

    def reload_graph(self) -> None:
        """Fetch the stored graph; drop all cached slot state (it may belong to the old graph)."""
        version, graph = fetch_graph(self.client, self.keys, self.settings.function_timeout_s)
        if self.graph is not None and graph is None:
            raise RedisStateError(
                f"the graph vanished from Redis at {self.settings.safe_url} "
                "(restarted empty, or keys deleted): load it again"
            )
        self.graph, self.graph_version = graph, version
        self._plan = WavePlan(graph) if graph is not None else None
        self._cache.clear()
        self._versions.clear()
        self._covered.clear()

    # -- one batch, synchronously --------------------------------------------------------------

    def process(
        self, raw: Sequence[RawEntry], deliveries: Mapping[bytes, int] | None = None
    ) -> None:
        """Process one batch to completion: waves, then one atomic commit (retried on conflict)."""
        self.commit(self.prepare(Batch(raw, deliveries or {})))

    def commit(self, batch: Batch) -> None:
        """Commit a prepared batch, preparing it again after every failed check."""
        attempt = 0
        while True:
            faults.reached("before_commit")
            if self._settle(batch, self.scripts.commit(batch.args)):
                return
            attempt += 1
            if attempt > 3:
                # Several workers fight over the same nodes: let the other commit first.
                time.sleep(min(0.001 * 2**attempt, 0.1))
            self.prepare(batch)

    # -- pipelined: commit one batch while the next one is evaluated ---------------------------

    def send(self, batch: Batch, read_ahead: int) -> None:
        """Send the commit of ``batch`` (and a read of up to ``read_ahead`` new entries)."""
        faults.reached("before_commit")
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
        commands: list[tuple[Any, ...]] = [self.scripts.commit_command(batch.args)]
        if read_ahead:
            commands.append(
                ("XREADGROUP", "GROUP", self.settings.group, self.consumer,
                 "COUNT", read_ahead, "STREAMS", self.keys.input, ">")
            )  # fmt: skip
        try:
            self._conn.send_packed_command(self._conn.pack_commands(commands))
        except redis.ConnectionError:
            self._drop_connection()
            raise

    def receive(self, batch: Batch, read_ahead: int) -> tuple[bool, list[RawEntry]]:
        """The replies to :meth:`send`: (committed?, entries read ahead)."""
        conn = self._conn
        error: redis.ResponseError | None = None
        try:
            try:
                reply: Any = conn.read_response()
            except redis.ResponseError as exc:  # both replies must be read, whatever the first
                reply, error = None, exc
            fetched = conn.read_response() if read_ahead else None
        except redis.ConnectionError:
            self._drop_connection()
            raise
        entries = read_entries(fetched)
        if isinstance(error, NoScriptError):  # the script cache was flushed: reload it
            self.commit(batch)
            return True, entries
        if error is not None:
            raise error
        return self._settle(batch, reply), entries

    def close(self) -> None:
        """Give the dedicated connection back."""
        if self._conn is not None:
            self.client.connection_pool.release(self._conn)
            self._conn = None

    def _drop_connection(self) -> None:
        self._conn.disconnect()
        self.close()

    # -- preparing -----------------------------------------------------------------------------

    def prepare(self, batch: Batch, after: Batch | None = None) -> Batch:
        """Decode and evaluate ``batch`` and build its commit arguments.

        With ``after``, evaluate on top of that batch's result, as if its commit
        (not yet known) had succeeded.
        """
        faults.reached("after_read")
        if self.graph is None or self._plan is None:
            raise RedisStateError("no graph loaded")
        raw = [e for e in batch.raw if e[0].decode() not in batch.gone] if batch.gone else batch.raw
        batch.good, batch.bad, batch.deliveries_of_poison = self._decode(raw, batch.deliveries)
        self._prefetch(self.graph, batch.good)
        base: Mapping[str, Slots] = self._cache
        bump: set[str] = set()
        if after is not None:
            base = ChainMap(after.view.read, self._cache)
            bump = after.view.changed
        batch.view = BatchView(base)
        batch.result = BatchResult()
        plan = self._plan
        for entry in batch.good:
            run_wave(plan, entry, batch.view, batch.result)
        faults.reached("after_eval")
        batch.args = self._commit_args(batch, bump)
        return batch

    def _decode(
        self, raw: Iterable[RawEntry], deliveries: Mapping[bytes, int]
    ) -> tuple[list[Entry], list[tuple[str, str]], dict[str, int]]:
        good: list[Entry] = []
        bad: list[tuple[str, str]] = []
        poison: dict[str, int] = {}
        limit = self.settings.max_deliveries
        for entry_id, fields in raw:
            delivered = deliveries.get(entry_id, 0)
            if delivered > limit:
                error = f"delivered {delivered} times (limit {limit}); poison entry"
                bad.append((entry_id.decode(), error))
                poison[entry_id.decode()] = delivered
                continue
            try:
                good.append(decode_entry(entry_id, fields))
            except EntryError as exc:
                bad.append((entry_id.decode(), str(exc)))
        return good, bad, poison

    def _prefetch(self, graph: Graph, entries: Iterable[Entry]) -> None:
        """Make sure the cache holds every derived node the batch's waves may touch."""
        needed: set[str] = set()
        covered = self._covered
        for entry in entries:
            for node, _ in entry.readings:
                if node not in covered:
                    covered.add(node)
                    needed |= graph.downstream(node)
        missing = [node for node in needed if node not in self._cache]
        if not missing:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(self.keys.slots, missing)
        pipe.hmget(self.keys.versions, missing)
        blobs, versions = pipe.execute()
        for node, blob, version in zip(missing, blobs, versions, strict=True):
            self._cache[node] = decode_slots(blob, len(graph.nodes[node].args))
            self._versions[node] = int(version or 0)

    def _commit_args(self, batch: Batch, bump: set[str]) -> list[ScriptArg]:
        view, result, versions = batch.view, batch.result, self._versions
        ids = [entry.id for entry in batch.good] + [entry_id for entry_id, _ in batch.bad]
        if ids:
            # Redis returns entries in ID order: the batch's range is its first and last.
            ids[:0] = (batch.raw[0][0].decode(), batch.raw[-1][0].decode())
        checks: list[str] = []
        for node in view.read:
            checks += (node, str(versions.get(node, 0) + (node in bump)))
        writes: list[str] = []
        for node in view.changed:
            writes += (node, encode_slots(view.read[node]).decode())
        fired: list[str] = []
        for node, value, ts, src in result.fired:
            fired += (node, value_text(value), str(ts), src)
        latest: list[str] = []
        for node, (ts, value) in result.latest.items():
            latest += (node, str(ts), value_text(value))
        payload = _msgpack_encode((ids, checks, writes, fired, latest))
        s = self.settings
        args: list[ScriptArg] = [s.group, self.consumer, self.graph_version, payload]
        args.append(len(batch.bad) + len(result.function_errors))
        if not batch.bad and not result.function_errors:
            return args
        fields_of = {entry_id.decode(): fields for entry_id, fields in batch.raw}
        for entry_id, error in batch.bad:
            fields = list(fields_of.get(entry_id) or [])
            if entry_id in batch.deliveries_of_poison:
                fields += [b"@deliveries", str(batch.deliveries_of_poison[entry_id]).encode()]
            _dead_letter(args, entry_id, error, "", fields)
        for entry, node, error in result.function_errors:
            _dead_letter(args, entry.id, error, node, fields_of.get(entry.id))
        return args

    # -- settling a commit's reply -------------------------------------------------------------

    def _settle(self, batch: Batch, reply: list[Any]) -> bool:
        """Apply a commit reply: True when committed; else refresh what moved and say False."""
        if reply[0] == b"ok":
            faults.reached("after_commit")
            self._committed(batch)
            return True
        metrics.CONFLICTS.inc()
        if reply[0] == b"graph":
            self.log.info("graph changed; reloading", version=reply[1].decode())
            self.reload_graph()
        else:
            batch.gone |= self._apply_retry(reply)
        return False

    def _apply_retry(self, reply: list[Any]) -> set[str]:
        """Refresh the cache from a ``retry`` reply; returns the IDs of entries that are gone."""
        assert self.graph is not None
        n_gone = int(reply[1])
        gone = {entry_id.decode() for entry_id in reply[2 : 2 + n_gone]}
        moved = reply[3 + n_gone :]
        for i in range(0, len(moved), 3):
            node = moved[i].decode()
            definition = self.graph.nodes.get(node)
            if definition is None:
                continue
            self._cache[node] = decode_slots(moved[i + 2], len(definition.args))
            self._versions[node] = int(moved[i + 1])
        if gone:
            self.log.info("entries finished by another consumer", count=len(gone))
        return gone

    def _committed(self, batch: Batch) -> None:
        view, result = batch.view, batch.result
        for node in view.changed:
            self._cache[node] = view.read[node]
            self._versions[node] = self._versions.get(node, 0) + 1
        metrics.ENTRIES.labels("ok").inc(len(batch.good))
        if batch.bad:
            metrics.ENTRIES.labels("dead").inc(len(batch.bad))
            for entry_id, error in batch.bad:
                self.log.warning("dead letter", src=entry_id, error=error)
        metrics.READINGS.inc(result.readings)
        metrics.DERIVED.inc(len(result.fired))
        metrics.LATE_READINGS.inc(result.late)
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
            entries=len(batch.good),
            dead=len(batch.bad),
            derived=len(result.fired),
            seconds=round(elapsed, 6),
        )


def _dead_letter(
    args: list[ScriptArg], entry_id: str, error: str, node: str, fields: list[bytes] | None
) -> None:
    fields = fields or []
    kept = fields[: 2 * DEAD_FIELDS_LIMIT]
    if len(kept) < len(fields):
        error += f" (dead letter keeps the first {DEAD_FIELDS_LIMIT} of {len(fields) // 2} fields)"
    args += [entry_id, error, node, len(kept) // 2, *kept]
