"""Redis connections and the stored graph: the reads and writes outside the hot path."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

import redis
from redis.driver_info import DriverInfo

from streamcalc.cluster import SlotRouter
from streamcalc.errors import RedisStateError, RedisUnavailable, UsageError
from streamcalc.graph import Graph
from streamcalc.graph.plugins import NO_PLUGINS, PluginPolicy
from streamcalc.keys import Keys, Namespace
from streamcalc.scripts import Scripts, range_script
from streamcalc.settings import mask_url
from streamcalc.state import TamperedState, decode_key_latest, state_fields
from streamcalc.values import Value, decode_latest


def connect(
    url: str, *, timeout: float = 10.0, name: str | None = None, cluster: bool = False
) -> redis.Redis:
    """A client for ``url`` (bytes replies, RESP2); raises RedisUnavailable for a bad URL.

    ``name`` is the connections' CLIENT SETNAME, so ``CLIENT LIST`` tells who is who.
    On a Redis Cluster node (asked on first use, or ``cluster`` forces it) every
    command goes to its key's slot owner (:mod:`streamcalc.cluster`).
    """
    try:
        client = cast(
            SlotRouter,
            SlotRouter.from_url(
                url,
                protocol=2,
                client_name=name,
                socket_connect_timeout=min(timeout, 5.0),
                socket_timeout=timeout,
                health_check_interval=30,
                # The version CLIENT SETINFO reports, named here: redis-py would
                # look it up with importlib.metadata, a tenth of a one-shot command's start.
                driver_info=DriverInfo(lib_version=redis.__version__),
            ),
        )
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {mask_url(url)}: {exc}") from None
    client.forced = cluster
    return client


def ping(client: redis.Redis, url: str, *, wait_s: float = 0.0) -> None:
    """Wait up to ``wait_s`` seconds (with backoff) until Redis answers, else raise."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            client.ping()
            return
        except redis.AuthenticationError as exc:
            raise RedisUnavailable(f"Redis at {mask_url(url)} refused us: {exc}") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise RedisUnavailable(f"cannot reach Redis at {mask_url(url)}: {exc}") from None
        except redis.ResponseError as exc:  # e.g. NOAUTH from a server that wants a password
            raise RedisUnavailable(f"Redis at {mask_url(url)} refused us: {exc}") from None
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def partition_count(client: redis.Redis, ns: str) -> int:
    """The number of partitions of namespace ``ns`` (1 unless loaded with ``--partitions``)."""
    raw = client.hget(Namespace(ns).root.meta, "partitions")
    return int(raw) if raw else 1


def partition_keys(client: redis.Redis, ns: str) -> list[Keys]:
    """The keys of every partition of ``ns`` (just ``sc:{NS}:`` for one partition)."""
    return Namespace(ns).partitions(partition_count(client, ns))


def holds_work(client: redis.Redis, keys: Keys) -> bool:
    """True when a partition holds state or entries some group has not finished."""
    if client.exists(keys.latest, keys.slots):
        return True
    try:
        groups = client.xinfo_groups(keys.input)
    except redis.ResponseError:  # no stream
        return False
    length = int(client.xlen(keys.input))
    for group in groups:
        if int(group["pending"]):
            return True
        lag = group.get("lag")
        if lag is None:  # Redis 6.2: compare the last delivered entry with the newest
            newest = client.xrevrange(keys.input, count=1)
            if newest and newest[0][0] != group["last-delivered-id"]:
                return True
        elif int(lag):
            return True
    return not groups and length > 0


def set_partitions(client: redis.Redis, ns: str, partitions: int) -> None:
    """Fix the partition count of a namespace; refused (UsageError) once it holds work."""
    if partitions < 1 or partitions > 1024:
        raise UsageError(f"--partitions must be between 1 and 1024, not {partitions}")
    current = partition_count(client, ns)
    if partitions == current:
        return
    busy = [k for k in Namespace(ns).partitions(current) if holds_work(client, k)]
    if partitions > 1 and holds_work(client, Namespace(ns).root):
        busy.append(Namespace(ns).root)
    if busy:
        raise UsageError(
            f"namespace {ns!r} has {current} partition(s) and holds state or unprocessed "
            f"entries ({busy[0].prefix}...): its partition count is fixed"
        )
    client.hset(Namespace(ns).root.meta, "partitions", partitions)


def store_graph(
    client: redis.Redis, keys: Keys | str, graph: Graph, *, partitions: int | None = None
) -> int:
    """Replace the stored graph atomically in every partition; returns the new graph version.

    ``keys`` names the namespace (its root :class:`Keys` or its name). With
    ``partitions``, the namespace's partition count is set first (see
    :func:`set_partitions`). Each partition gets its own copy of the graph in
    its own hash slot, replaced in one script: each partition's entries see
    either the old graph or the new one. Loading the graph every partition
    already holds writes nothing and returns the stored version: no worker
    reloads or recomputes anything.
    """
    ns = keys if isinstance(keys, str) else keys.ns
    if partitions is not None:
        set_partitions(client, ns, partitions)
    count = partition_count(client, ns)
    loaded_ms = int(time.time() * 1000)
    definitions = graph.stored()
    targets = Namespace(ns).partitions(count)
    if count > 1:
        targets = [Namespace(ns).root, *targets]
    pipe = client.pipeline(transaction=False)
    for target in targets:
        pipe.hmget(target.meta, "graph_hash", "graph_version")
    stored = pipe.execute()
    if all(h == graph.version_hash.encode() and v for h, v in stored):
        return int(stored[-1][1])  # the same graph everywhere: nothing to do, no new version
    version = 0
    for target in targets:
        version = Scripts(client, target).load_graph(graph.version_hash, loaded_ms, definitions)
    return version


def graph_version(client: redis.Redis, keys: Keys) -> str:
    """The stored graph version of a partition ("0" before any load)."""
    return (cast(bytes | None, client.hget(keys.meta, "graph_version")) or b"0").decode()


def fetch_graph(
    client: redis.Redis, keys: Keys, plugins: PluginPolicy = NO_PLUGINS
) -> tuple[str, Graph | None]:
    """The stored graph version and graph (None when no graph was ever loaded), read atomically.

    The version is read before and after the graph (no MULTI: Redis refuses a
    transaction while it is out of memory, and reads need none).
    ``plugins``: which plugin modules may be imported (none by default).
    """
    while True:
        pipe = client.pipeline(transaction=False)
        pipe.hget(keys.meta, "graph_version")
        pipe.hgetall(keys.graph)
        pipe.hget(keys.meta, "graph_version")
        version, definitions, again = pipe.execute()
        if version == again:
            break
    if not definitions:
        return (version or b"0").decode(), None
    return version.decode(), Graph.from_definitions(definitions, plugins=plugins)


def graph_names(client: redis.Redis, keys: Keys) -> frozenset[str] | None:
    """Every node name of the stored graph (None before any load), read without compiling it:
    what telling a typo from a node needs, cheaply (``send``, ``values``)."""
    definitions = cast(dict[bytes, bytes], client.hgetall(keys.graph))
    return Graph.names_of(definitions) if definitions else None


StreamEntry = tuple[bytes, dict[bytes, bytes]]


def read_range(
    client: redis.Redis,
    key: str,
    start: str = "-",
    end: str = "+",
    count: int | None = None,
    *,
    reverse: bool = False,
) -> list[StreamEntry]:
    """XRANGE (or XREVRANGE, newest first) between ``start`` and ``end``, as bytes."""
    if reverse:
        return cast(list[StreamEntry], client.xrevrange(key, max=end, min=start, count=count))
    return cast(list[StreamEntry], client.xrange(key, min=start, max=end, count=count))


FlatEntry = tuple[bytes, list[bytes]]
"""An entry with its fields as Redis holds them: name, value, ... (a name may repeat)."""


def read_flat(
    client: redis.Redis,
    key: str,
    start: str = "-",
    end: str = "+",
    count: int | None = None,
    *,
    reverse: bool = False,
) -> list[FlatEntry]:
    """:func:`read_range` with every field kept: a field written twice shows twice."""
    bounds = ["XREVRANGE", end, start] if reverse else ["XRANGE", start, end]
    rows = range_script(client)([key], [*bounds, count or 2**31 - 1])
    return [(entry_id, list(fields or ())) for entry_id, fields in rows]


def latest_values(
    client: redis.Redis, keys: Keys, nodes: list[str] | None = None, key: str = ""
) -> dict[str, tuple[int, Value]]:
    """Latest (ts, value) of ``key``'s nodes (all of them when None); unknown ones left out.

    ``keys`` must be the partition ``key`` belongs to.
    """
    if nodes is None and not key:
        raw = cast(dict[bytes, bytes], client.hgetall(keys.latest))
        items = [(field.decode(), text) for field, text in raw.items() if b"|" not in field]
        return decode_latest(items, keys.latest)
    if nodes is not None and not nodes:
        return {}
    fields = state_fields(key, nodes or [])
    found = cast(list[bytes | None], client.hmget(keys.latest, fields))
    return read_latest(key, nodes, found, keys.latest)


def read_latest(
    key: str,
    nodes: Sequence[str] | None,
    found: Sequence[bytes | None],
    where: str,
    *,
    strict: bool = True,
) -> dict[str, tuple[int, Value]]:
    """Latest (ts, value) of ``key``'s ``nodes`` (a non-empty key's all when None) from the
    HMGET of :func:`~streamcalc.state.state_fields` (``found``), nodes without one left out.

    What streamcalc did not write is a RedisStateError naming ``where``, or with
    ``strict`` False left out.
    """
    if key:
        try:
            stored = decode_key_latest(found[0])
        except TamperedState as exc:
            if not strict:
                return {}
            raise RedisStateError(
                f"the latest values of key {key!r} in {where} were not written by streamcalc: {exc}"
            ) from None
        return stored if nodes is None else {n: stored[n] for n in nodes if n in stored}
    assert nodes is not None
    if strict:
        return decode_latest(zip(nodes, found, strict=True), where)
    result: dict[str, tuple[int, Value]] = {}
    for node, text in zip(nodes, found, strict=True):
        try:
            result.update(decode_latest([(node, text)], where))
        except RedisStateError:
            continue
    return result


#: Without a lag from Redis (before 7.0, or after XDEL), it is counted, up to this many.
LAG_COUNT_CAP = 10_000


def count_after(
    client: redis.Redis, key: str, entry_id: str, cap: int = LAG_COUNT_CAP
) -> tuple[int, bool]:
    """(entries after ``entry_id``, whether the count stopped at ``cap``): a group's lag."""
    found = len(read_range(client, key, "(" + entry_id, count=cap))
    return found, found >= cap


def server_time_ms(client: redis.Redis) -> int:
    """The Redis server's clock in ms: the clock that stream IDs are made of."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000
