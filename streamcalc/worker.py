"""The worker: one consumer of the group, from reading entries to keeping itself healthy.

It reads entries through the consumer group (its own pending ones first, then
claimed idle ones, then new ones), hands them to the :mod:`streamcalc.engine`
in batches, rides out lost connections, refreshes the gauges read from Redis,
trims history when asked (``--retain``) and leaves the group cleanly on stop.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import msgspec
import redis
import structlog

from streamcalc import metrics
from streamcalc.engine import Batch, Engine, RawEntry, read_entries
from streamcalc.errors import RedisStateError
from streamcalc.keys import Keys
from streamcalc.settings import Settings
from streamcalc.store import connect, fetch_graph, latest_values, ping

#: Error replies that say "not now" rather than "never".
_TRANSIENT = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def _transient(exc: redis.ResponseError) -> bool:
    if isinstance(exc, redis.exceptions.OutOfMemoryError | redis.exceptions.ReadOnlyError):
        return True
    # Redis 7 passes a script's inner error code through; 6.2 wraps it ("... -OOM ...").
    text = str(exc)
    return text.startswith(_TRANSIENT) or any(f"-{code} " in text for code in _TRANSIENT)


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
        self.log = structlog.get_logger("streamcalc.worker").bind(
            ns=settings.ns, group=settings.group, consumer=self.consumer
        )
        self.engine = Engine(self.client, self.keys, settings, self.consumer, self.log)
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
        stuck_after = self.settings.stuck_after
        idle = time.monotonic() - self.last_progress
        if idle > stuck_after:
            return False, f"stuck: no progress for {idle:.0f}s"
        return True, "ok"

    def start(self) -> None:
        """Reach Redis (waiting up to ``--wait``), create the group, wait for a graph."""
        ping(self.client, self.settings.redis_url, wait_s=self.settings.wait_s)
        self.redis_ok = True
        self._resilient(self.ensure_group)
        while not self.stopping:
            self.engine.reload_graph()
            if self.engine.graph is not None:
                break
            self.log.warning("no graph loaded; waiting for 'streamcalc graph load'")
            self._stopping.wait(1.0)

    def run(self) -> None:
        """Run until :meth:`stop`: own pending entries first, then new ones and claims."""
        self.start()
        self.log.info("worker started", graph_version=self.engine.graph_version)
        while not self.stopping:
            self._resilient(self.step)
        self._resilient(self.leave)
        self.engine.close()
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
                text = str(exc)
                if _transient(exc):
                    # Redis is out of memory, busy, loading or read-only: nothing is lost
                    # (the batch was not committed), so wait and try again.
                    if not failing:
                        self.log.warning("redis refuses writes for now; retrying", error=text)
                    failing = True
                    self._own_pending_unknown = True
                elif text.startswith(("NOGROUP", "UNBLOCKED")):
                    # The group is gone, or the stream was deleted while we waited.
                    self.log.warning("consumer group or stream vanished; recreating it")
                    self._recreate_group_after_loss()
                else:
                    raise
            if self.stopping and failing:
                return
            self._stopping.wait(delay)
            delay = min(delay * 2, 5.0)

    def _recreate_group_after_loss(self) -> None:
        self.ensure_group()
        if self.engine.graph is not None and fetch_graph(self.client, self.keys)[1] is None:
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

    def leave(self) -> None:
        """Remove this consumer from the group, unless it still owns pending entries."""
        try:
            self.engine.scripts.leave(self.settings.group, self.consumer)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):  # no group, nothing to leave
                raise

    # -- reading -------------------------------------------------------------------------------

    def step(self) -> int:
        """One round: claim idle entries when due, then read and process new ones."""
        now = time.monotonic()
        processed = 0
        # At start, after a lost connection (a batch may have been cut short) and every
        # so often: take over idle entries, then finish everything we own, oldest first.
        if self._own_pending_unknown or now >= self._next_claim:
            processed += self.recover()
            self._own_pending_unknown = False
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
            processed += self._pump(batch)
        self._progress()
        return processed

    def _pump(self, first: list[RawEntry]) -> int:
        """Process batches back to back while entries keep coming.

        Each commit is sent together with a read of the next entries, and while
        Redis runs it, the batch read before is evaluated on top of it: Redis
        and Python work at the same time. Returns after a few seconds at most,
        so that claims and gauges get their turn, and when the stream is drained.
        """
        engine, size = self.engine, self.settings.batch
        current: Batch | None = engine.prepare(Batch(first, {}))
        ahead = self._read(">", block=False)
        processed = len(first)
        deadline = time.monotonic() + 2.0
        while current is not None:
            engine.send(current, read_ahead=size)
            upcoming = engine.prepare(Batch(ahead, {}), after=current) if ahead else None
            committed, fetched = engine.receive(current, read_ahead=size)
            if not committed:
                engine.commit(engine.prepare(current))
                upcoming = engine.prepare(Batch(ahead, {})) if ahead else None
            processed += len(ahead)
            if upcoming is None and fetched:  # nothing was waiting, but the read brought some
                upcoming, fetched = engine.prepare(Batch(fetched, {})), []
                processed += len(upcoming.raw)
            current, ahead = upcoming, fetched
            if current is not None and (self.stopping or time.monotonic() > deadline):
                engine.commit(current)  # finish what was read before leaving the loop
                if ahead:
                    engine.process(ahead)
                break
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
        return read_entries(self._execute("XREADGROUP", *args, "STREAMS", self.keys.input, start))

    def _execute(self, *args: Any) -> Any:
        return self.client.execute_command(*args)  # type: ignore[no-untyped-call]

    def recover(self) -> int:
        """Claim idle entries, then process every entry this consumer owns in stream order.

        Claiming first and processing the whole of our pending list by ID means a
        worker that takes over from dead ones (whatever their names, including
        its own) continues exactly in stream order.
        """
        self.claim_idle()
        return self.drain_own_pending()

    def drain_own_pending(self) -> int:
        """Process the entries this consumer owns (read before a crash, or claimed) in order."""
        processed = 0
        while not self.stopping:
            batch = self._read("0", block=False)
            if not batch:
                break
            self.engine.process(batch, self._delivery_counts(batch))
            processed += len(batch)
        return processed

    def claim_idle(self) -> int:
        """Make this consumer the owner of every entry idle longer than ``--claim-idle``."""
        s = self.settings
        cursor: bytes | str = "0-0"
        claimed = 0
        while not self.stopping:
            reply = self._execute(
                "XAUTOCLAIM", self.keys.input, s.group, self.consumer, s.claim_idle_ms, cursor,
                "COUNT", max(s.batch, 100), "JUSTID",
            )  # fmt: skip
            claimed += len(reply[1])
            cursor = reply[0]
            if cursor in (b"0-0", "0-0"):
                break
        if claimed:
            metrics.CLAIMED.inc(claimed)
            self.log.info("claimed idle entries", count=claimed)
        return claimed

    def _delivery_counts(self, batch: Sequence[RawEntry]) -> dict[bytes, int]:
        ids = [entry_id for entry_id, _ in batch]
        pending = self.client.xpending_range(
            self.keys.input,
            self.settings.group,
            min=ids[0],  # Redis hands out entries in ID order
            max=ids[-1],
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
        graph = self.engine.graph
        if graph is not None:
            latest = latest_values(self.client, self.keys)
            now_ms = int(time.time() * 1000)
            metrics.observe_nodes(latest, graph.nodes, now_ms, self.settings.export_values)
