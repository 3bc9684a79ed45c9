"""The harness's side of Redis: a client with raw stream replies, filling streams, fresh
namespaces, and the consumer group's progress (``XINFO GROUPS``) that every run waits on.
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
from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys
from streamcalc.store import store_graph

GROUP = "streamcalc"
FILL_CHUNK = 2000


def _raw(response: Any, **_: Any) -> Any:
    return response


def client_for(url: str) -> redis.Redis:
    """A client with flat (unparsed) replies for the stream commands the harness reads."""
    client = redis.Redis.from_url(url, protocol=2, socket_timeout=60)
    for command in ("XRANGE", "XREVRANGE", "XREAD", "XREADGROUP"):
        client.set_response_callback(command, _raw)
    return client


def prefill(client: redis.Redis, key: str, workload: Workload) -> list[bytes]:
    """XADD every entry to ``key`` (pipelined); returns the entry IDs in order."""
    conn: Any = client.connection_pool.get_connection()
    ids: list[bytes] = []
    try:
        entries = workload.entries
        for lo in range(0, len(entries), FILL_CHUNK):
            cmds = [("XADD", key, "*", *e.xadd_fields()) for e in entries[lo : lo + FILL_CHUNK]]
            conn.send_packed_command(conn.pack_commands(cmds))
            for _ in cmds:
                ids.append(conn.read_response())
    finally:
        client.connection_pool.release(conn)
    return ids


def load_graph(client: redis.Redis, ns: str, workload: Workload) -> None:
    """Parse the workload's graph file and store it in namespace ``ns``."""
    graph = parse_graph_text(workload.graph_toml, f"<{workload.name}>")
    store_graph(client, Keys(ns), graph)


def delete_namespace(client: redis.Redis, ns: str) -> None:
    """Drop every key of namespace ``ns``."""
    client.delete(*Keys(ns).all())


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
