"""The harness's side of Redis: a client with raw stream replies, filling streams, fresh
namespaces, and the consumer group's progress (``XINFO GROUPS``) that every run waits on.

A workload with ``P > 1`` partitions is prefilled into one template stream per partition
(:func:`prefill_partitions`), each entry into its key's partition, as a producer that knows the
partitions writes them; :func:`progress` samples every partition's group and lease at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks.processes import Workers
from benchmarks.workloads import Workload
from streamcalc.cluster import slot_of, slot_owner
from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys, Namespace, partition_of
from streamcalc.scripts import LeaseToken
from streamcalc.store import connect, store_graph

GROUP = "streamcalc"
FILL_CHUNK = 2000


def _raw(response: Any, **_: Any) -> Any:
    return response


def client_for(url: str) -> redis.Redis:
    """A client with flat (unparsed) replies for the stream commands the harness reads."""
    client = connect(url, timeout=60)  # on a cluster node, each key's slot owner (section 8)
    for command in ("XRANGE", "XREVRANGE", "XREAD", "XREADGROUP"):
        client.set_response_callback(command, _raw)
    return client


def prefill(client: redis.Redis, key: str, workload: Workload) -> list[bytes]:
    """XADD every entry to ``key`` (pipelined); returns the entry IDs in order."""
    pool = slot_owner(client, key).connection_pool
    conn: Any = pool.get_connection()
    ids: list[bytes] = []
    try:
        entries = workload.entries
        for lo in range(0, len(entries), FILL_CHUNK):
            cmds = [("XADD", key, "*", *e.xadd_fields()) for e in entries[lo : lo + FILL_CHUNK]]
            conn.send_packed_command(conn.pack_commands(cmds))
            for _ in cmds:
                ids.append(conn.read_response())
    finally:
        pool.release(conn)
    return ids


def copy_stream(client: redis.Redis, source: str, target: str) -> None:
    """Copy a template stream to ``target``: ``COPY`` in one slot, DUMP and RESTORE across."""
    if slot_of(source) == slot_of(target):
        client.execute_command("COPY", source, target)
        return
    payload: Any = client.execute_command("DUMP", source)
    client.execute_command("RESTORE", target, 0, payload)


@dataclass(slots=True)
class Prefilled:
    """A workload's entries in one template stream per partition (one for ``P = 1``)."""

    templates: list[str]
    ids: list[list[bytes]]  # entry IDs of each template, in order
    index: list[list[int]]  # the workload's entry index of each of those entries

    @property
    def count(self) -> int:
        """Entries over all partitions."""
        return sum(len(ids) for ids in self.ids)

    def delete(self, client: redis.Redis) -> None:
        """Drop the template streams."""
        client.delete(*self.templates)


def prefill_partitions(client: redis.Redis, prefix: str, workload: Workload) -> Prefilled:
    """XADD every entry to the template of its key's partition (``prefix`` or ``prefix:p``)."""
    count = workload.partitions
    if count <= 1:
        ids = prefill(client, prefix, workload)
        return Prefilled([prefix], [ids], [list(range(len(ids)))])
    templates = [f"{prefix}:{p}" for p in range(count)]
    client.delete(*templates)
    index: list[list[int]] = [[] for _ in range(count)]
    for i, entry in enumerate(workload.entries):
        index[partition_of(entry.key, count)].append(i)
    ids: list[list[bytes]] = []
    for template, members in zip(templates, index, strict=True):
        part = Workload(workload.name, "", {}, [workload.entries[i] for i in members])
        ids.append(prefill(client, template, part))
    return Prefilled(templates, ids, index)


def load_graph(client: redis.Redis, ns: str, workload: Workload) -> None:
    """Parse the workload's graph file and store it in namespace ``ns`` (with its partitions)."""
    graph = parse_graph_text(workload.graph_toml, f"<{workload.name}>")
    partitions = workload.partitions if workload.partitions > 1 else None
    store_graph(client, Keys(ns), graph, partitions=partitions)


def partition_keys(ns: str, workload: Workload) -> list[Keys]:
    """The keys of each partition of the workload's namespace ``ns``."""
    return Namespace(ns).partitions(workload.partitions)


def delete_namespace(client: redis.Redis, ns: str, partitions: int = 1) -> None:
    """Drop every key of namespace ``ns`` (all partitions, leases and members included)."""
    space = Namespace(ns)
    parts = space.partitions(partitions)
    names = {*space.root.all(), space.members(GROUP), space.root.lease(GROUP)}
    for keys in parts:
        names |= {*keys.all(), keys.lease(GROUP)}
    client.delete(*names)


def new_ns(tag: str) -> str:
    """A fresh namespace name."""
    return f"bench-{tag}-{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class Sample:
    """One XINFO GROUPS observation."""

    t: float
    consumers: int
    pending: int
    last_id: bytes
    done: int  # entries-read - pending (Redis >= 7)


def group_sample(client: redis.Redis, key: str) -> Sample | None:
    """The workers' group on stream ``key`` now; None while it does not exist."""
    t = time.perf_counter()
    try:
        groups: Any = client.xinfo_groups(key)
    except redis.ResponseError:
        return None
    return _group_of(groups, t)


@dataclass(slots=True)
class Progress:
    """Every partition's group and lease, and the live members, at one instant."""

    t: float
    groups: list[Sample | None]  # per partition; None before the group exists
    owners: list[str | None]  # per partition: the consumer holding its lease
    members: int

    @property
    def done(self) -> int:
        """Entries finished over all partitions (negative ones, unknown, count 0)."""
        return sum(max(0, g.done) for g in self.groups if g is not None)

    def started(self) -> bool:
        """Some partition has handed out an entry."""
        return any(g is not None and g.last_id != b"0-0" for g in self.groups)

    def drained(self, last_ids: Sequence[bytes]) -> bool:
        """Every partition's group was handed its last entry and has nothing pending."""
        return all(
            g is not None and g.last_id == last and g.pending == 0
            for g, last in zip(self.groups, last_ids, strict=True)
        )

    def balanced(self, consumers: Sequence[str]) -> bool:
        """Every consumer is a member and every partition is leased to the one it is dealt to
        (round-robin over the sorted names, as :func:`streamcalc.ownership.assignment` deals)."""
        ordered = sorted(consumers)
        return self.members >= len(ordered) and all(
            owner == ordered[p % len(ordered)] for p, owner in enumerate(self.owners)
        )


def progress(client: redis.Redis, ns: str, parts: Sequence[Keys]) -> Progress:
    """Sample every partition's group (``XINFO GROUPS``) and lease, and the members, at once."""
    pipe = client.pipeline(transaction=False)
    for keys in parts:
        pipe.xinfo_groups(keys.input)
    for keys in parts:
        pipe.get(keys.lease(GROUP))
    pipe.zcard(Namespace(ns).members(GROUP))
    t = time.perf_counter()
    replies = pipe.execute(raise_on_error=False)
    count = len(parts)
    groups = [_group_of(r) for r in replies[:count]]
    tokens = [LeaseToken.parse(r.decode()) if isinstance(r, bytes) else None
              for r in replies[count : 2 * count]]  # fmt: skip
    owners = [token.consumer if token else None for token in tokens]
    members = replies[-1] if isinstance(replies[-1], int) else 0
    return Progress(t, groups, owners, members)


def _group_of(groups: Any, t: float = 0.0) -> Sample | None:
    """The workers' group in an XINFO GROUPS reply (None: no such group, or no stream)."""
    if not isinstance(groups, list):
        return None  # no stream yet (an error reply)
    for g in groups:
        if g["name"] in (GROUP, GROUP.encode()):
            last = g["last-delivered-id"]
            last_b = last if isinstance(last, bytes) else str(last).encode()
            read = g.get("entries-read")
            done = -1 if read is None else int(read) - int(g["pending"])
            return Sample(t, int(g["consumers"]), int(g["pending"]), last_b, done)
    return None


def newest_id(client: redis.Redis, key: str) -> bytes | None:
    """ID of the newest entry of stream ``key``."""
    newest: Any = client.execute_command("XREVRANGE", key, "+", "-", "COUNT", 1)
    return newest[0][0] if newest else None


def drained(client: redis.Redis, key: str) -> bool:
    """The group has been handed the newest entry of ``key`` and has nothing pending."""
    s = group_sample(client, key)
    return s is not None and s.pending == 0 and s.last_id == newest_id(client, key)


def wait_for_consumers(client: redis.Redis, key: str, procs: Workers, count: int) -> None:
    """Until ``count`` consumers are in the group (a worker joins with its first read)."""
    deadline = time.monotonic() + 60
    while True:
        s = group_sample(client, key)
        if s is not None and s.consumers >= count:
            return
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not start within 60 s")
        time.sleep(0.01)


def field_of(flat: Sequence[bytes], name: bytes) -> bytes | None:
    """The value of field ``name`` in a flat stream entry ``[field, value, ...]``."""
    for i in range(0, len(flat) - 1, 2):
        if flat[i] == name:
            return flat[i + 1]
    return None
