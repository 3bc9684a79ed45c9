"""The worker: read entries through the consumer group, run waves in batches, commit atomically.

One batch is: read up to ``--batch`` entries, decode them, evaluate their waves
one at a time in stream order against a cached view of the slot state, and
commit everything with one call of ``commit.lua``, which checks the versions of
every slot state the batch read and the entries' ownership, then writes slot
state, derived values, latest values and dead letters and XACKs the entries.
A failed check (another worker moved a slot or finished an entry, or the graph
was replaced) sends the batch round again from fresh state, so waves are
serializable across consumers and output is effectively-once: nothing becomes
visible before the commit that also acknowledges it.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import msgspec
import redis
import structlog

from streamcalc import faults, metrics
from streamcalc.errors import EntryError, RedisStateError
from streamcalc.graph import Graph
from streamcalc.keys import Keys
from streamcalc.messages import Entry, decode_entry, id_ms
from streamcalc.scripts import ScriptArg, Scripts
from streamcalc.settings import Settings
from streamcalc.store import connect, fetch_graph, latest_values, ping
from streamcalc.values import encode_value
from streamcalc.wave import BatchResult, BatchView, Slots, decode_slots, encode_slots, run_wave

#: Dead letters keep at most this many of an entry's fields (Lua's argument limit).
DEAD_FIELDS_LIMIT = 2000

RawEntry = tuple[bytes, list[bytes] | None]


def default_consumer_name() -> str:
    """``<hostname>-<pid>``: unique per process, recognisable in ``status``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _raw(response: Any, **_: Any) -> Any:
    return response


class Worker:
    """One consumer of the group. Not thread-safe; :meth:`stop` may be called from anywhere."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = settings.consumer or default_consumer_name()
        self.keys = Keys(settings.ns)
        # A blocking XREADGROUP must not look like a dead socket.
        self.client = connect(settings.redis_url, timeout=max(10.0, settings.block_ms / 1000 + 5))
        # Entries are parsed from Redis's flat field lists: a dict would hide repeated fields.
        for command in ("XREADGROUP", "XAUTOCLAIM", "XCLAIM"):
            self.client.set_response_callback(command, _raw)
        self.scripts = Scripts(self.client, self.keys)
        self.log = structlog.get_logger("streamcalc.worker").bind(
            ns=settings.ns, group=settings.group, consumer=self.consumer
        )
        self.graph: Graph | None = None
        self.graph_version = "0"
        self._cache: dict[str, Slots] = {}
        self._versions: dict[str, int] = {}
        self._covered: set[str] = set()
        self._stopping = threading.Event()
        self._next_claim = 0.0
        self._next_observe = 0.0
        self._next_trim = 0.0
        self.last_progress = time.monotonic()
        self._last_heartbeat = 0.0
        self.redis_ok = False
        self._own_pending_unknown = True

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
            return False, "redis unreachable"
        stuck_after = max(60.0, 10 * self.settings.block_ms / 1000)
        idle = time.monotonic() - self.last_progress
        if idle > stuck_after:
            return False, f"stuck: no progress for {idle:.0f}s"
        return True, "ok"

    def start(self) -> None:
        """Reach Redis (waiting up to ``--wait``), create the group, wait for a graph."""
        ping(self.client, self.settings.redis_url, wait_s=self.settings.wait_s)
        self.redis_ok = True
        self.ensure_group()
        while not self.stopping:
            self.reload_graph()
            if self.graph is not None:
                break
            self.log.warning("no graph loaded; waiting for 'streamcalc graph load'")
            self._stopping.wait(1.0)

    def run(self) -> None:
        """Run until :meth:`stop`: own pending entries first, then new ones and claims."""
        self.start()
        self.log.info("worker started", graph_version=self.graph_version)
        while not self.stopping:
            self._resilient(self.step)
        self._resilient(self.leave)
        self.log.info("worker stopped")

    def _resilient(self, action: Any) -> None:
        """Run ``action``, riding out lost connections with backoff until it succeeds or we stop."""
        delay = 0.1
        failing = False
        while True:
            try:
                action()
                if failing:
                    self.log.warning("redis is back")
                self.redis_ok = True
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not failing:
                    self.log.warning("redis unreachable; retrying", error=str(exc))
                failing = True
                self.redis_ok = False
                self._own_pending_unknown = True
            except redis.ResponseError as exc:
                # NOGROUP: the group is gone; UNBLOCKED: the stream was deleted while we waited.
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                self.log.warning("consumer group or stream vanished; recreating it")
                self._recreate_group_after_loss()
            if self.stopping and failing:
                return
            self._stopping.wait(delay)
            delay = min(delay * 2, 5.0)

    def _recreate_group_after_loss(self) -> None:
        self.ensure_group()
        if self.graph is not None and fetch_graph(self.client, self.keys)[1] is None:
            raise RedisStateError(
                f"Redis at {self.settings.safe_url} lost the graph and the consumer group "
                "(restarted without persistence?): load the graph again"
            )

    def ensure_group(self) -> None:
        """Create the consumer group at ID 0 (and the stream) unless it exists (S9)."""
        try:
            self.client.xgroup_create(self.keys.input, self.settings.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def reload_graph(self) -> None:
        """Fetch the stored graph; drop all cached slot state (it may belong to the old graph)."""
        version, graph = fetch_graph(self.client, self.keys)
        if self.graph is not None and graph is None:
            raise RedisStateError(
                f"the graph vanished from Redis at {self.settings.safe_url} "
                "(restarted empty, or keys deleted): load it again"
            )
        self.graph, self.graph_version = graph, version
        self._cache.clear()
        self._versions.clear()
        self._covered.clear()

    def leave(self) -> None:
        """Remove this consumer from the group, unless it still owns pending entries."""
        self.scripts.leave(self.settings.group, self.consumer)

    # -- reading -------------------------------------------------------------------------------

    def step(self) -> int:
        """One round: claim idle entries when due, then read and process new ones."""
        now = time.monotonic()
        processed = 0
        if self._own_pending_unknown:
            # A batch was interrupted (lost connection): finish it before anything newer.
            self.drain_own_pending()
            self._own_pending_unknown = False
        if now >= self._next_claim:
            processed += self.claim_idle()
            interval = min(max(self.settings.claim_idle_ms / 2000, 0.1), 5.0)
            self._next_claim = now + interval
        if now >= self._next_observe:
            self.observe_group()
            self._next_observe = now + 5.0
        retaining = self.settings.retain_ms is not None or self.settings.retain_len is not None
        if retaining and now >= self._next_trim:
            self.retain()
            self._next_trim = now + random.uniform(8.0, 12.0)  # workers spread out
        batch = self._read(">")
        if batch:
            self.process(batch)
            processed += len(batch)
        self._progress()
        return processed

    def _progress(self) -> None:
        now = time.monotonic()
        self.last_progress = now
        if self.settings.heartbeat_file and now - self._last_heartbeat > 1.0:
            # The supervisor of ``--processes N`` judges its children's health by this file.
            with contextlib.suppress(OSError):
                Path(self.settings.heartbeat_file).touch()
            self._last_heartbeat = now

    def _read(self, start: str, block: bool = True) -> list[RawEntry]:
        s = self.settings
        args: list[Any] = ["GROUP", s.group, self.consumer, "COUNT", s.batch]
        if block:
            args += ["BLOCK", s.block_ms]
        reply = self._execute("XREADGROUP", *args, "STREAMS", self.keys.input, start)
        if not reply:
            return []
        return [(entry[0], entry[1]) for entry in reply[0][1]]

    def _execute(self, *args: Any) -> Any:
        return self.client.execute_command(*args)  # type: ignore[no-untyped-call]

    def drain_own_pending(self) -> None:
        """Re-process entries this consumer name read before it stopped or crashed."""
        while not self.stopping:
            batch = self._read("0", block=False)
            if not batch:
                return
            self.process(batch, deliveries=self._delivery_counts(batch))

    def claim_idle(self) -> int:
        """Claim every entry idle longer than ``--claim-idle`` and process it, oldest first.

        All of them are claimed before any new entry is read, so a worker that
        takes over from a dead one continues in stream order.
        """
        s = self.settings
        cursor: bytes | str = "0-0"
        claimed = 0
        while not self.stopping:
            reply = self._execute(
                "XAUTOCLAIM", self.keys.input, s.group, self.consumer, s.claim_idle_ms, cursor,
                "COUNT", s.batch,
            )  # fmt: skip
            batch = [(entry[0], entry[1]) for entry in reply[1] if entry]
            if batch:
                metrics.CLAIMED.inc(len(batch))
                self.log.info("claimed idle entries", count=len(batch))
                self.process(batch, deliveries=self._delivery_counts(batch))
                claimed += len(batch)
            cursor = reply[0]
            if cursor in (b"0-0", "0-0"):
                break
        return claimed

    def _delivery_counts(self, batch: Sequence[RawEntry]) -> dict[bytes, int]:
        ids = [entry_id for entry_id, _ in batch]
        pending = self.client.xpending_range(
            self.keys.input,
            self.settings.group,
            min=min(ids, key=_id_key),
            max=max(ids, key=_id_key),
            count=len(ids) * 4 + 16,
            consumername=self.consumer,
        )
        return {cast(bytes, p["message_id"]): int(p["times_delivered"]) for p in pending}

    def retain(self) -> None:
        """``--retain``: trim in, out and dead, never below what a group still needs."""
        from streamcalc.ops import trim

        s = self.settings
        result = trim(self.client, self.keys, max_age_ms=s.retain_ms, max_len=s.retain_len)
        self.log.debug("retention", result=msgspec.to_builtins(result))

    def observe_group(self) -> None:
        """Refresh the gauges read from Redis: lag, pending, node staleness (and values)."""
        for group in self.client.xinfo_groups(self.keys.input):
            if group["name"].decode() == self.settings.group:
                metrics.PENDING.set(group["pending"])
                lag = group.get("lag")
                if lag is not None:
                    metrics.STREAM_LAG.set(lag)
        if self.graph is not None:
            latest = latest_values(self.client, self.keys)
            now_ms = int(time.time() * 1000)
            metrics.observe_nodes(latest, self.graph.nodes, now_ms, self.settings.export_values)

    # -- processing ----------------------------------------------------------------------------

    def process(
        self, batch: Sequence[RawEntry], deliveries: dict[bytes, int] | None = None
    ) -> None:
        """Process one batch to completion: waves, then one atomic commit (retried on conflict)."""
        started = time.perf_counter()
        faults.reached("after_read")
        fields_of = {entry_id.decode(): fields for entry_id, fields in batch}
        good, bad = self._decode(batch, deliveries or {})
        attempt = 0
        while True:
            if self.graph is None:
                raise RedisStateError("no graph loaded")
            result, view = self._evaluate(self.graph, good)
            faults.reached("after_eval")
            args = self._commit_args(good, bad, view, result, fields_of)
            faults.reached("before_commit")
            reply = self.scripts.commit(args)
            if reply[0] == b"ok":
                faults.reached("after_commit")
                self._committed(view, result, good, bad, started)
                return
            attempt += 1
            metrics.CONFLICTS.inc()
            if reply[0] == b"graph":
                self.log.info("graph changed; reloading", version=reply[1].decode())
                self.reload_graph()
            else:
                gone = self._apply_retry(reply)
                good = [entry for entry in good if entry.id not in gone]
                bad = [item for item in bad if item[0] not in gone]
            if attempt > 3:
                # Several workers fight over the same nodes: let the other commit first.
                self._stopping.wait(min(0.001 * 2**attempt, 0.1))

    def _decode(
        self, batch: Sequence[RawEntry], deliveries: dict[bytes, int]
    ) -> tuple[list[Entry], list[tuple[str, str]]]:
        good: list[Entry] = []
        bad: list[tuple[str, str]] = []
        limit = self.settings.max_deliveries
        for entry_id, fields in batch:
            delivered = deliveries.get(entry_id, 0)
            if delivered > limit:
                bad.append(
                    (
                        entry_id.decode(),
                        f"delivered {delivered} times (limit {limit}); poison entry",
                    )
                )
                continue
            try:
                good.append(decode_entry(entry_id, fields))
            except EntryError as exc:
                bad.append((entry_id.decode(), str(exc)))
        return good, bad

    def _evaluate(self, graph: Graph, entries: Sequence[Entry]) -> tuple[BatchResult, BatchView]:
        self._prefetch(graph, entries)
        view = BatchView(self._cache)
        result = BatchResult()
        for entry in entries:
            run_wave(graph, entry, view, result)
        return result, view

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

    def _commit_args(
        self,
        good: Sequence[Entry],
        bad: Sequence[tuple[str, str]],
        view: BatchView,
        result: BatchResult,
        fields_of: dict[str, list[bytes] | None],
    ) -> list[ScriptArg]:
        s = self.settings
        args: list[ScriptArg] = [s.group, self.consumer, self.graph_version, 0]
        args.append(len(good) + len(bad))
        args += [entry.id for entry in good]
        args += [entry_id for entry_id, _ in bad]
        versions = self._versions
        args.append(len(view.read))
        for node in view.read:
            args += [node, versions.get(node, 0)]
        args.append(len(view.changed))
        for node in view.changed:
            args += [node, encode_slots(view.read[node])]
        args.append(len(result.fired))
        for node, value, ts, src in result.fired:
            args += [node, encode_value(value), ts, src]
        args.append(len(result.latest))
        for node, (ts, value) in result.latest.items():
            args += [node, ts, encode_value(value)]
        args.append(len(bad) + len(result.function_errors))
        for entry_id, error in bad:
            _dead_letter(args, entry_id, error, "", fields_of.get(entry_id))
        for entry, node, error in result.function_errors:
            _dead_letter(args, entry.id, error, node, fields_of.get(entry.id))
        return args

    def _committed(
        self,
        view: BatchView,
        result: BatchResult,
        good: Sequence[Entry],
        bad: Sequence[tuple[str, str]],
        started: float,
    ) -> None:
        for node in view.changed:
            self._cache[node] = view.read[node]
            self._versions[node] = self._versions.get(node, 0) + 1
        metrics.ENTRIES.labels("ok").inc(len(good))
        if bad:
            metrics.ENTRIES.labels("dead").inc(len(bad))
            for entry_id, error in bad:
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
        observe = metrics.EVENT_LATENCY.observe
        for entry in good:
            observe(max(now_ms - id_ms(entry.id), 0.0) / 1000)
        elapsed = time.perf_counter() - started
        metrics.BATCH_SECONDS.observe(elapsed)
        self.log.debug(
            "batch committed",
            entries=len(good),
            dead=len(bad),
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


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
