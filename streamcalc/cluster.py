"""Redis Cluster: every command reaches the owner of its keys' hash slot.

:func:`streamcalc.store.connect` hands out a :class:`SlotRouter`, a
``redis.Redis`` that on a single Redis is exactly that (one pool, nothing
added) and on a cluster node (``INFO cluster``: ``cluster_enabled:1``, or
forced) finds the masters with ``CLUSTER SHARDS`` (``CLUSTER SLOTS`` before
7.0), keeps one plain ``redis.Redis`` per master and sends each command to the
owner of its key's slot. Every key of one partition shares one hash tag, so
each Lua script, and the worker's pipelined commit+read, runs on one plain
client of one master (:func:`slot_owner`), as on a single Redis.

Slot moves and failovers: MOVED updates the slot table (and the whole table
is read again), ASK sends ``ASKING`` and the command to the importing node,
TRYAGAIN (a migration under way) and CLUSTERDOWN (a failover under way) wait
briefly and try again. A lost connection and CLUSTERDOWN mark the table stale;
the next command reads it again from any node that answers. What cannot be
ridden out quickly is raised to the caller, annotated with the node and slot
(:func:`~streamcalc.redis_errors.where`), and
:func:`~streamcalc.redis_errors.classify` says whether it is worth waiting for
(the worker waits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import Pipeline
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    TryAgainError,
)
from redis.retry import Retry

from streamcalc.errors import RedisUnavailable
from streamcalc.redis_errors import Address, annotate


def slot_of(key: str | bytes) -> int:
    """The hash slot of ``key`` (its hash tag's, when it has one)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def slot_owner(client: redis.Redis, key: str) -> redis.Redis:
    """The plain client of the node that owns ``key``'s slot (``client`` itself off a cluster).

    For work that must stay on one connection (a pipeline sent and read by
    hand, ``CLIENT LIST`` of the node that serves a partition).
    """
    if isinstance(client, SlotRouter) and client.is_cluster():
        return client.owner(slot_of(key))
    return client


def masters(client: redis.Redis) -> list[redis.Redis]:
    """A plain client of every master that owns slots (just ``client`` off a cluster).

    For what is per server: ``INFO`` (CPU, memory, command statistics) of each shard.
    """
    if isinstance(client, SlotRouter) and client.is_cluster():
        return [client.node(address) for address in client.masters()]
    return [client]


def refresh(client: redis.Redis) -> None:
    """Read the slot table again before the next command (after a failover, say)."""
    if isinstance(client, SlotRouter):
        client.mark_stale()


def is_cluster(client: redis.Redis) -> bool:
    """True when ``client`` talks to a Redis Cluster (asks the server the first time)."""
    return isinstance(client, SlotRouter) and client.is_cluster()


# -- which keys a command names ----------------------------------------------------------------

#: Commands that name no key: on a cluster any node answers them.
_KEYLESS = frozenset(
    ("PING", "ECHO", "TIME", "INFO", "CLIENT", "CLUSTER", "CONFIG", "COMMAND", "HELLO", "AUTH",
     "SELECT", "SLOWLOG", "LATENCY", "WAIT", "READONLY", "READWRITE", "ASKING", "DEBUG", "ROLE",
     "LASTSAVE", "MEMORY", "ACL", "LOLWUT", "SWAPDB", "SCAN", "KEYS", "RANDOMKEY")
)  # fmt: skip
#: Commands every master must run (scripts are cached per node; flushing is per node).
_EVERY_MASTER = frozenset(
    ("SCRIPT LOAD", "SCRIPT FLUSH", "FLUSHALL", "FLUSHDB", "FUNCTION LOAD", "CONFIG RESETSTAT")
)
#: Multi-key commands whose keys may be split by slot and the counts added up.
_SUMMED = frozenset(("DEL", "UNLINK", "EXISTS", "TOUCH"))
#: Commands whose first argument is a subcommand, their key after it.
_SUBCOMMANDS = frozenset(("XINFO", "XGROUP", "OBJECT"))
#: Keyless commands with subcommands.
_GROUPS = frozenset(("SCRIPT", "FUNCTION", "CONFIG"))
_SCRIPTS = frozenset(("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"))


def _text(arg: Any) -> str:
    return arg.decode() if isinstance(arg, bytes) else str(arg)


def command_name(args: Sequence[Any]) -> str:
    """``XINFO GROUPS``, ``SCRIPT LOAD``, ``GET``: a command's name, upper case."""
    first = _text(args[0]).upper()
    if " " not in first and len(args) > 1 and first in _SUBCOMMANDS | _GROUPS:
        return f"{first} {_text(args[1]).upper()}"
    return first


def command_keys(args: Sequence[Any]) -> list[Any]:
    """The keys a command names (empty for a keyless one); XREAD's are its streams."""
    name = command_name(args)
    head = name.split(" ", 1)[0]
    rest = list(args[1:]) if " " in _text(args[0]) or " " not in name else list(args[2:])
    if head in _KEYLESS or head in ("SCRIPT", "FUNCTION", "FLUSHALL", "FLUSHDB", "DBSIZE"):
        return []
    if head in _SCRIPTS:
        count = int(rest[1]) if len(rest) > 1 else 0
        return rest[2 : 2 + count]
    if head in ("XREAD", "XREADGROUP"):
        upper = [_text(a).upper() if isinstance(a, str | bytes) else "" for a in rest]
        if "STREAMS" not in upper:
            return []
        streams = rest[upper.index("STREAMS") + 1 :]
        return streams[: len(streams) // 2]
    if head in _SUMMED or head == "MGET":
        return rest
    return rest[:1]


# -- the router --------------------------------------------------------------------------------

#: Redirections (MOVED, ASK) followed for one command before giving up.
_REDIRECTS = 5
#: How long TRYAGAIN (a slot being migrated) or CLUSTERDOWN (a failover under way) is waited
#: out inside one command, seconds.
_TRYAGAIN_S = 2.0
#: One round of polls of a blocking read that spans several slots, ms.
_POLL_MS = 50


class SlotRouter(redis.Redis):
    """A ``redis.Redis`` that, on a cluster, sends each command to its key's slot owner.

    Off a cluster it is a plain client: every method is redis-py's own. Its
    pool is the URL's node: it answers ``INFO`` and, on a cluster, the first
    ``CLUSTER SHARDS``. Thread-safe as redis-py's client is.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.forced = False
        """``--cluster``: a cluster without asking the server."""
        self._mode: bool | None = None
        self._lock = threading.RLock()
        self._nodes: dict[Address, redis.Redis] = {}
        self._slots: list[Address | None] = []
        self._masters: list[Address] = []
        self._stale = True
        self._refreshed = 0.0

    # -- mode and topology -------------------------------------------------------------------

    def is_cluster(self) -> bool:
        """True on a cluster; the first call asks the server (``INFO cluster``)."""
        if self._mode is None:
            with self._lock:
                if self._mode is None:
                    self._mode = self.forced or self._cluster_enabled()
        return self._mode

    def _cluster_enabled(self) -> bool:
        try:
            info = super().execute_command("INFO", "cluster")  # type: ignore[no-untyped-call]
        except redis.AuthenticationError:
            raise
        except redis.ResponseError:  # INFO refused (renamed on some managed servers)
            return False
        return bool(isinstance(info, dict) and int(info.get("cluster_enabled", 0)))

    def mark_stale(self) -> None:
        """Read the slot table again before the next command."""
        self._stale = True

    @property
    def seed(self) -> Address:
        """The node of the URL."""
        kw = self.connection_pool.connection_kwargs
        return (str(kw.get("host", "localhost")), int(kw.get("port", 6379)))

    def masters(self) -> list[Address]:
        """Every master that owns a slot, in address order."""
        self._topology()
        return self._masters

    def node(self, address: Address) -> redis.Redis:
        """The plain client of one node (made on first use, with this client's options)."""
        client = self._nodes.get(address)
        if client is None:
            with self._lock:
                client = self._nodes.get(address)
                if client is None:
                    client = self._nodes[address] = self._make_node(address)
        return client

    def _make_node(self, address: Address) -> redis.Redis:
        base = self.connection_pool
        kwargs = {**base.connection_kwargs, "host": address[0], "port": address[1]}
        if "path" in kwargs:
            raise RedisUnavailable("a Redis Cluster is reached over TCP, not a unix socket")
        # Few quick retries: a node that stays away is looked up again in the slot table.
        kwargs["retry"] = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 2)
        pool = redis.ConnectionPool(connection_class=base.connection_class, **kwargs)
        client = redis.Redis(connection_pool=pool)
        client.response_callbacks = self.response_callbacks  # set_response_callback reaches all
        return client

    def owner(self, slot: int) -> redis.Redis:
        """The plain client of the master that owns ``slot``."""
        return self.node(self._address(slot))

    def _address(self, slot: int) -> Address:
        self._topology()
        address = self._slots[slot]
        if address is None:
            error = ClusterDownError(f"slot {slot} is not served by any node")
            annotate(error, None, slot)
            raise error
        return address

    def _topology(self) -> None:
        if self._stale or not self._slots:
            with self._lock:
                if self._stale or not self._slots:
                    self._discover()

    def _discover(self) -> None:
        """Read the slot table from the first node that answers (the URL's first)."""
        wait = 0.05 - (time.monotonic() - self._refreshed)
        if self._slots and wait > 0:  # many threads, one failover: not a storm of reads
            time.sleep(wait)
        candidates = [self.seed, *sorted(set(self._nodes) - {self.seed})]
        error: BaseException | None = None
        for address in candidates:
            try:
                table = _slot_table(self.node(address), address[0])
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                annotate(exc, address, None)
                error = exc
                continue
            if any(table):
                self._slots, self._stale = table, False
                self._masters = sorted({a for a in table if a is not None})
                self._refreshed = time.monotonic()
                return
        if isinstance(error, redis.ResponseError) and "cluster support disabled" in str(error):
            host, port = self.seed
            raise RedisUnavailable(f"Redis at {host}:{port} is not a cluster node (--cluster)")
        if error is None:
            error = ClusterDownError("no node serves any slot")
        raise error

    def _moved(self, exc: AskError) -> None:
        """MOVED: that slot is elsewhere now, and likely others with it (a failover)."""
        if self._slots:
            self._slots[exc.slot_id] = (exc.host, exc.port)
        self._stale = True

    # -- commands ----------------------------------------------------------------------------

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run a command on its key's slot owner (or, off a cluster, as redis-py does)."""
        if not self.is_cluster():
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        name = command_name(args)
        if name in _EVERY_MASTER:
            replies = [self._on(a, None, args, options) for a in self.masters()]
            return replies[0]
        keys = command_keys(args)
        if not keys:
            return self._keyless(args, options)
        slots = [slot_of(k) for k in keys]
        if all(s == slots[0] for s in slots):
            return self._on_slot(slots[0], args, options)
        head = name.split(" ", 1)[0]
        if head in _SUMMED:
            by_slot: dict[int, list[Any]] = {}
            for key, slot in zip(keys, slots, strict=True):
                by_slot.setdefault(slot, []).append(key)
            return sum(int(self._on_slot(s, (args[0], *ks), options)) for s, ks in by_slot.items())
        if head == "MGET":
            pairs = zip(keys, slots, strict=True)
            return [self._on_slot(s, ("MGET", k), options)[0] for k, s in pairs]
        if head in ("XREAD", "XREADGROUP"):
            return self._read_streams(args, options)
        raise redis.ResponseError(f"CROSSSLOT {name}: keys in different cluster slots")

    def _keyless(self, args: Sequence[Any], options: dict[str, Any]) -> Any:
        """Any node that answers: the URL's first."""
        self._topology()
        error: BaseException | None = None
        for address in [self.seed, *self.masters()]:
            try:
                return self._on(address, None, args, options)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                error = exc
                self._stale = True
        assert error is not None
        raise error

    def _on(
        self, address: Address, slot: int | None, args: Sequence[Any], options: dict[str, Any]
    ) -> Any:
        try:
            return self.node(address).execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._stale = True
            annotate(exc, address, slot)
            raise
        except redis.ResponseError as exc:
            annotate(exc, address, slot)
            raise

    def _on_slot(self, slot: int, args: Sequence[Any], options: dict[str, Any]) -> Any:
        """Run on the slot's owner, following MOVED and ASK, waiting out a short TRYAGAIN."""
        asking: Address | None = None
        redirects = 0
        deadline = time.monotonic() + _TRYAGAIN_S
        delay = 0.01
        while True:
            address = asking or self._address(slot)
            try:
                if asking is not None:
                    return self._asking(address, slot, args, options)
                return self._on(address, slot, args, options)
            except AskError as exc:  # MOVED is an AskError too
                redirects += 1
                if redirects > _REDIRECTS:
                    raise
                if isinstance(exc, MovedError):
                    self._moved(exc)
                    asking = None
                else:
                    asking = (exc.host, exc.port)
            except (TryAgainError, ClusterDownError) as exc:
                # a migration under way, or a failover's moment without a master: the
                # command did not run; a longer outage is the caller's to wait out
                if isinstance(exc, ClusterDownError):
                    self._stale = True
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                asking = None

    def _asking(
        self, address: Address, slot: int, args: Sequence[Any], options: dict[str, Any]
    ) -> Any:
        """ASKING and the command on one connection of the importing node."""
        pipe = self.node(address).pipeline(transaction=False)
        pipe.execute_command("ASKING")  # type: ignore[no-untyped-call]
        pipe.execute_command(*args, **options)  # type: ignore[no-untyped-call]
        try:
            return pipe.execute()[1]
        except redis.RedisError as exc:
            annotate(exc, address, slot)
            raise

    def _read_streams(self, args: Sequence[Any], options: dict[str, Any]) -> Any:
        """XREAD(GROUP) of streams in several slots: one read per slot, results joined.

        A blocking read polls each slot in turn for a short while until one has
        entries or the time is up (a connection can wait on one node only).
        """
        parts = [_text(a).upper() if isinstance(a, str | bytes) else "" for a in args]
        at = parts.index("STREAMS")
        streams = list(args[at + 1 :])
        half = len(streams) // 2
        names, ids = streams[:half], streams[half:]
        head = list(args[:at])
        block_ms: int | None = None
        if "BLOCK" in parts[:at]:
            i = parts.index("BLOCK")
            block_ms = int(args[i + 1])
            head = head[:i] + head[i + 2 :]
        if block_ms is not None and head[0].upper() == "XREAD":
            # "$" is the newest entry when each poll starts: pin it, or entries between polls
            # would be skipped
            pinned = zip(names, ids, strict=True)
            ids = [self._newest(n) if _text(i) == "$" else i for n, i in pinned]
        by_slot: dict[int, list[tuple[Any, Any]]] = {}
        for name, entry_id in zip(names, ids, strict=True):
            by_slot.setdefault(slot_of(name), []).append((name, entry_id))

        def one_round(block: int | None) -> list[Any]:
            found: list[Any] = []
            for slot, pairs in by_slot.items():
                command = [*head, *(["BLOCK", block] if block is not None else [])]
                command += ["STREAMS", *[n for n, _ in pairs], *[i for _, i in pairs]]
                reply = self._on_slot(slot, command, options)
                if reply:
                    found.extend(reply)
                    block = None  # one slot answered: only look, do not wait, at the rest
            return found

        found = one_round(None)
        if found or block_ms is None:
            return found or None
        deadline = time.monotonic() + (block_ms / 1000 if block_ms else 1e9)
        while time.monotonic() < deadline:
            # a round over every slot takes about _POLL_MS: new entries wait no longer than that
            share = max(5, _POLL_MS // len(by_slot))
            slice_ms = max(1, min(share, int((deadline - time.monotonic()) * 1000)))
            found = one_round(slice_ms)
            if found:
                return found
        return None

    def _newest(self, stream: Any) -> str:
        """The last ID a stream generated ("0-0" before it exists): what "$" means now."""
        try:
            info = self._on_slot(slot_of(stream), ("XINFO STREAM", stream), {})
        except redis.ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            return "0-0"
        return _text(info["last-generated-id"])

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        """A pipeline; on a cluster its commands run on their slots' owners, replies in order."""
        if not self.is_cluster():
            return super().pipeline(transaction, shard_hint)
        return RoutedPipeline(self, transaction)

    def close(self) -> None:
        """Close this client and every node's."""
        for client in list(self._nodes.values()):
            client.close()
            client.connection_pool.disconnect()  # a pool handed to a client is not closed by it
        super().close()


#: Replies that say a command did not run and may run elsewhere or a moment later.
_REFUSED = (AskError, TryAgainError, ClusterDownError)


class RoutedPipeline(Pipeline):
    """A cluster pipeline: commands grouped by slot owner, each group one plain pipeline.

    Replies come back in the order the commands were queued. A command
    refused with MOVED, ASK, TRYAGAIN or CLUSTERDOWN (it did not run) is run
    again alone, through the router. A transaction must keep to one slot.
    """

    def __init__(self, router: SlotRouter, transaction: bool) -> None:
        super().__init__(router.connection_pool, router.response_callbacks, transaction, None)
        self.router = router
        self.atomic = transaction

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Run the queued commands; their replies (errors in place when not raising)."""
        stack = [(args, options) for args, options in self.command_stack]
        self.reset()
        if not stack:
            return []
        slots: list[int | None] = []
        for args, _ in stack:
            keys = command_keys(args)
            slots.append(slot_of(keys[0]) if keys else None)
        if self.atomic:
            return self._transaction(stack, slots, raise_on_error)
        groups: dict[Address, list[int]] = {}
        for i, slot in enumerate(slots):
            address = self.router.seed if slot is None else self.router._address(slot)
            groups.setdefault(address, []).append(i)
        results: list[Any] = [None] * len(stack)
        for address, indexes in groups.items():
            replies = self._on_node(address, [stack[i] for i in indexes])
            for i, reply in zip(indexes, replies, strict=True):
                if isinstance(reply, redis.ResponseError):
                    annotate(reply, address, slots[i])
                results[i] = reply
        self._run_refused_again(stack, slots, results)
        if raise_on_error:
            for reply in results:
                if isinstance(reply, redis.ResponseError):
                    raise reply
        return results

    def _on_node(self, address: Address, commands: list[Any]) -> list[Any]:
        pipe = self.router.node(address).pipeline(transaction=False)
        for args, options in commands:
            pipe.execute_command(*args, **options)  # type: ignore[no-untyped-call]
        try:
            return pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.router.mark_stale()
            annotate(exc, address, None)
            raise

    def _run_refused_again(
        self, stack: list[Any], slots: list[int | None], results: list[Any]
    ) -> None:
        """Run again, alone and in order, the commands refused with MOVED, ASK, TRYAGAIN or
        CLUSTERDOWN (they did not run), slot by slot: only a slot's refused tail, so a later
        command never overtakes an earlier one of its slot (a CLUSTERDOWN can end between
        two commands of one pipeline); a refusal followed by a success stays an error."""
        by_slot: dict[int | None, list[int]] = {}
        for i, slot in enumerate(slots):
            by_slot.setdefault(slot, []).append(i)
        for indexes in by_slot.values():
            refused = [i for i in indexes if isinstance(results[i], _REFUSED)]
            if not refused or indexes[-len(refused) :] != refused:
                continue
            for i in refused:
                args, options = stack[i]
                try:
                    results[i] = self.router.execute_command(*args, **options)
                except redis.ResponseError as exc:
                    results[i] = exc

    def _transaction(
        self, stack: list[Any], slots: list[int | None], raise_on_error: bool
    ) -> list[Any]:
        named = {s for s in slots if s is not None}
        if len(named) > 1:
            raise redis.ResponseError("CROSSSLOT a transaction's keys must share one slot")
        slot = named.pop() if named else None
        client = self.router.node(self.router.seed) if slot is None else self.router.owner(slot)
        pipe = client.pipeline(transaction=True)
        for args, options in stack:
            pipe.execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return pipe.execute(raise_on_error=raise_on_error)


def _slot_table(client: redis.Redis, default_host: str) -> list[Address | None]:
    """Slot -> master address, from ``CLUSTER SHARDS`` (7.0+) or ``CLUSTER SLOTS`` (6.2)."""
    table: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    try:
        shards = _raw(client, "CLUSTER", "SHARDS")
    except redis.ResponseError as exc:
        if "unknown" not in str(exc).lower():
            raise
        for start, end, master, *_ in _raw(client, "CLUSTER", "SLOTS"):
            host = _text(master[0]) or default_host
            for slot in range(int(start), int(end) + 1):
                table[slot] = (host, int(master[1]))
        return table
    for shard in shards:
        info = _pairs(shard)
        masters = [_pairs(n) for n in info.get("nodes", [])]
        masters = [n for n in masters if _text(n.get("role", b"")) == "master"]
        if not masters:
            continue
        node = next((n for n in masters if _text(n.get("health", b"")) == "online"), masters[0])
        host = _text(node.get("endpoint", b""))
        if host in ("", "?"):
            host = _text(node.get("ip", b"")) or default_host
        port = int(node.get("port") or node.get("tls-port") or 0)
        ranges = list(info.get("slots", []))
        for i in range(0, len(ranges) - 1, 2):
            for slot in range(int(ranges[i]), int(ranges[i + 1]) + 1):
                table[slot] = (host, port)
    return table


def _pairs(flat: Any) -> dict[str, Any]:
    if isinstance(flat, dict):
        return {_text(k): v for k, v in flat.items()}
    items = list(flat)
    return {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _raw(client: redis.Redis, *args: Any) -> Any:
    """A command's reply as Redis sent it (no response callback)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_command(*args)  # type: ignore[no-untyped-call]
        return conn.read_response()
    except (redis.ConnectionError, redis.TimeoutError):
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(conn)
