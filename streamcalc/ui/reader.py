"""What the live page reads of a namespace: each read bounded, whatever the namespace holds.

A refresh reads the selected key's latest values and slots (one HMGET each,
sized by the graph, not by the number of keys); the key list reads the ends of
each partition's key index (ZRANGE calls of ten members). A key search scans at most
:data:`KEY_SCAN_BUDGET` members of the key indexes per request; a node's recent
values come from at most :data:`RECENT_ENTRIES` entries of its partition's
streams. Nothing is ever read with HGETALL of state or a full stream scan.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import cast

import msgspec
import redis

from streamcalc.errors import EntryError, GraphError, UsageError
from streamcalc.graph import Graph
from streamcalc.graph.render import formula
from streamcalc.keys import Keys, valid_key
from streamcalc.messages import decode_entry, decode_output
from streamcalc.ops.explain import Explanation, explain
from streamcalc.ops.streams import Layout, as_text, id_key, layout, page_size
from streamcalc.settings import DEFAULT_GROUP
from streamcalc.state import Slots, read_slots, state_fields
from streamcalc.store import fetch_graph, read_latest, server_time_ms
from streamcalc.values import Value

#: Members of the key indexes one key search looks at, over every partition together.
KEY_SCAN_BUDGET = 20_000
#: Entries of a partition's ``out`` (and ``in``) read for a node's recent values.
RECENT_ENTRIES = 2_000
#: Keys listed as the stalest and the newest.
KEY_LIST = 10
#: A value older than this share of its TTL is shown as ageing.
AGEING_SHARE = 0.75


class NodeInfo(msgspec.Struct, frozen=True):
    """One node of the diagram: its shape in the graph and the TTL its freshness is judged by."""

    name: str
    kind: str  # "input" or "derived"
    column: int  # 0 for inputs, a derived node's rank + 1: the diagram's layers
    args: list[str]
    formula: str | None  # "A = add(C, D, E)"; None for an input
    ttl_ms: int  # derived: its own; input: the shortest of the nodes it feeds (0: never)
    mode: str | None


class GraphView(msgspec.Struct, frozen=True):
    """The stored graph as the page draws it (``nodes`` empty before any graph load).

    ``error``: why the stored graph cannot be read (its definitions are broken);
    the page then shows no node, as a worker runs none.
    """

    version: str
    nodes: list[NodeInfo]
    error: str | None = None


class NodeState(msgspec.Struct, frozen=True):
    """A node's latest value for one key, its age and freshness, and for a derived node its slots.

    ``freshness``: ``none`` (no value yet), ``fresh``, ``ageing`` (older than
    3/4 of its TTL), ``stale`` (older than its TTL) or ``timeless`` (TTL 0).
    """

    value: Value | None
    ts: int | None
    age_ms: int | None
    freshness: str
    filled: int | None = None  # derived: slots holding a value still valid now
    arity: int | None = None
    waits_for: list[str] = msgspec.field(default_factory=list)


class LiveValues(msgspec.Struct, frozen=True):
    """Every node's :class:`NodeState` for one key, judged at the Redis server's clock."""

    now_ms: int
    key: str
    partition: int
    graph_version: str
    nodes: dict[str, NodeState]


class RecentValue(msgspec.Struct, frozen=True):
    """One recent value of a node (a reading from ``in`` or a fired value from ``out``)."""

    ts: int
    value: Value
    entry_id: str
    source: str


class NodeDetail(msgspec.Struct, frozen=True):
    """A click on a node: its place in the diagram, its value, what ``explain`` says of it
    (slots, what it waits for, why it fired or not) and its recent values."""

    info: NodeInfo
    key: str
    state: NodeState
    explain: Explanation
    recent: list[RecentValue]
    recent_scanned: int  # entries read to find them (at most RECENT_ENTRIES per stream)


class KeyRow(msgspec.Struct, frozen=True):
    """A key of the key index with the newest ts of its values."""

    key: str
    ts: int
    age_ms: int
    partition: int


class KeyList(msgspec.Struct, frozen=True):
    """The key index in brief: how many keys, the stalest and the newest."""

    keyed: bool
    count: int
    stalest: list[KeyRow]
    newest: list[KeyRow]


class KeySearch(msgspec.Struct, frozen=True):
    """Keys that start with ``prefix``; ``complete`` False when the scan budget ran out first."""

    prefix: str
    matches: list[KeyRow]
    complete: bool
    scanned: int


def freshness(age_ms: int | None, ttl_ms: int) -> str:
    """The freshness of a value of age ``age_ms`` against ``ttl_ms`` (see :class:`NodeState`)."""
    if age_ms is None:
        return "none"
    if ttl_ms <= 0:
        return "timeless"
    if age_ms > ttl_ms:
        return "stale"
    return "ageing" if age_ms > AGEING_SHARE * ttl_ms else "fresh"


def graph_view(version: str, graph: Graph | None) -> GraphView:
    """The diagram's view of ``graph``: inputs first, then derived nodes by rank."""
    if graph is None:
        return GraphView(version, [])
    nodes = [
        NodeInfo(
            name,
            "input",
            0,
            [],
            None,
            _feeding_ttl(graph, name),
            None,
        )
        for name in sorted(graph.inputs)
    ]
    for name in graph.order:
        node = graph.nodes[name]
        nodes.append(
            NodeInfo(
                name,
                "derived",
                graph.rank[name] + 1,
                list(node.args),
                formula(node),
                node.ttl_ms,
                node.mode,
            )
        )
    return GraphView(version, nodes)


def _feeding_ttl(graph: Graph, name: str) -> int:
    """The shortest non-zero TTL of the nodes ``name`` feeds (0 when none expires)."""
    ttls = [graph.nodes[p].ttl_ms for p, _ in graph.parents.get(name, ()) if graph.nodes[p].ttl_ms]
    return min(ttls, default=0)


class Reader:
    """Reads one namespace for the page; keeps the stored graph until its version changes."""

    def __init__(self, client: redis.Redis, ns: str, group: str = DEFAULT_GROUP) -> None:
        self.client = client
        self.ns = ns
        self.group = group
        self._lock = threading.Lock()
        self._graph: tuple[str, Graph | None, GraphView] | None = None

    def layout(self) -> Layout:
        """The namespace's partitions (one HGET)."""
        return layout(self.client, self.ns)

    def graph(self) -> tuple[Graph | None, GraphView]:
        """The stored graph and its view; read again only when its version changed."""
        root = Keys(self.ns)
        raw = cast(bytes | None, self.client.hget(root.meta, "graph_version"))
        version = as_text(raw) if raw else "0"
        with self._lock:
            cached = self._graph
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        try:
            version, graph = fetch_graph(self.client, root)
            view = graph_view(version, graph)
        except GraphError as exc:
            graph, view = None, GraphView(version, [], error=str(exc))
        with self._lock:
            self._graph = (version, graph, view)
        return graph, view

    def values(self, key: str) -> LiveValues:
        """Every node's latest value for ``key`` ("" = the empty key), with slots of derived ones.

        Two HMGETs of the key's partition: one field per node for the empty key, one per
        hash for any other.
        """
        check_page_key(key)
        graph, view = self.graph()
        shape = self.layout()
        keys = shape.of_key(key)
        number = shape.number(keys) or 0
        if graph is None:
            return LiveValues(server_time_ms(self.client), key, number, view.version, {})
        latest, slots, now_ms = self._state(keys, graph, key, [n.name for n in view.nodes])
        nodes = {
            info.name: _node_state(info, graph, latest.get(info.name), slots.get(info.name), now_ms)
            for info in view.nodes
        }
        return LiveValues(now_ms, key, number, view.version, nodes)

    def _state(
        self, keys: Keys, graph: Graph, key: str, names: Sequence[str]
    ) -> tuple[dict[str, tuple[int, Value]], dict[str, Slots], int]:
        derived = [n for n in names if n in graph.nodes]
        now_ms = server_time_ms(self.client)  # apart: TIME belongs to no partition's slot
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(keys.latest, state_fields(key, names))
        if derived:
            pipe.hmget(keys.slots, state_fields(key, derived))
        replies = pipe.execute()
        latest = read_latest(key, names, replies[0], keys.latest, strict=False)
        slots = read_slots(graph, key, derived, replies[1])[0] if derived else {}
        return latest, slots, now_ms

    def node(self, name: str, key: str) -> NodeDetail:
        """What a click on node ``name`` shows for ``key``; UsageError for an unknown node."""
        check_page_key(key)
        graph, view = self.graph()
        info = next((n for n in view.nodes if n.name == name), None)
        if graph is None or info is None:
            raise UsageError(f"no node {name!r} in the stored graph")
        shape = self.layout()
        keys = shape.of_key(key)
        latest, slots, now_ms = self._state(keys, graph, key, [name])
        state = _node_state(info, graph, latest.get(name), slots.get(name), now_ms)
        recent, scanned = self._recent(keys, name, key)
        return NodeDetail(
            info=info,
            key=key,
            state=state,
            explain=explain(self.client, shape, name, key, graph=graph),
            recent=recent,
            recent_scanned=scanned,
        )

    def _recent(self, keys: Keys, name: str, key: str) -> tuple[list[RecentValue], int]:
        """Values of ``name`` among the newest RECENT_ENTRIES entries of ``out`` (and ``in``)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xrevrange(keys.output, count=RECENT_ENTRIES)
        pipe.xrevrange(keys.input, count=RECENT_ENTRIES)
        outs, ins = pipe.execute()
        field = name.encode()
        found: list[RecentValue] = []
        for entry_id, fields in outs:
            if field in fields:
                try:
                    out = decode_output(fields)
                except (KeyError, ValueError, StopIteration):
                    continue
                if out.node == name and out.key == key:
                    found.append(RecentValue(out.ts, out.value, as_text(entry_id), "out"))
        for entry_id, fields in ins:
            if field in fields:
                try:
                    entry = decode_entry(entry_id, [x for pair in fields.items() for x in pair])
                except EntryError:
                    continue
                if entry.key == key:
                    value = dict(entry.readings)[name]
                    found.append(RecentValue(entry.ts, value, entry.id, "in"))
        found.sort(key=lambda v: (v.ts, id_key(v.entry_id)))
        return found[-200:], len(outs) + len(ins)

    def key_list(self) -> KeyList:
        """How many keys the namespace holds, its :data:`KEY_LIST` stalest and newest keys."""
        shape = self.layout()
        now_ms = server_time_ms(self.client)
        pipe = self.client.pipeline(transaction=False)
        for keys in shape.partitions:
            pipe.zcard(keys.key_index)
            pipe.zrange(keys.key_index, 0, KEY_LIST - 1, withscores=True)
            pipe.zrevrange(keys.key_index, 0, KEY_LIST - 1, withscores=True)
        replies = pipe.execute()
        counts, lows, highs = replies[0::3], replies[1::3], replies[2::3]
        numbers = [shape.number(k) or 0 for k in shape.partitions]
        stalest = _rows(lows, numbers, now_ms)
        newest = _rows(highs, numbers, now_ms)
        count = sum(int(c) for c in counts)
        return KeyList(
            keyed=count > 0,
            count=count,
            stalest=sorted(stalest, key=lambda k: (k.ts, k.key))[:KEY_LIST],
            newest=sorted(newest, key=lambda k: (-k.ts, k.key))[:KEY_LIST],
        )

    def search_keys(self, prefix: str, limit: int = 50) -> KeySearch:
        """Keys that start with ``prefix``: an exact match first, then a bounded ZSCAN.

        At most :data:`KEY_SCAN_BUDGET` members are looked at over all partitions.
        """
        check_prefix(prefix)
        shape = self.layout()
        now_ms = server_time_ms(self.client)
        found: dict[str, KeyRow] = {}
        if prefix:
            exact = shape.of_key(prefix)
            score = self.client.zscore(exact.key_index, prefix)
            if score is not None:
                ts = int(score)
                found[prefix] = KeyRow(prefix, ts, now_ms - ts, exact.partition or 0)
        budget = page_size(KEY_SCAN_BUDGET, len(shape.partitions), least=100)
        complete, scanned = True, 0
        for keys in shape.partitions:
            rows, done, looked = _scan(self.client, keys.key_index, f"{prefix}*", budget, limit)
            for name, ts in rows:
                found.setdefault(name, KeyRow(name, ts, now_ms - ts, keys.partition or 0))
            scanned += looked
            complete = complete and done
        matches = sorted(found.values(), key=lambda k: k.key)[:limit]
        return KeySearch(prefix, matches, complete and len(found) <= limit, scanned)


def _scan(
    client: redis.Redis, index: str, match: str, budget: int, limit: int
) -> tuple[list[tuple[str, int]], bool, int]:
    """ZSCAN ``index`` for ``match`` until ``limit`` found or ``budget`` members looked at.

    Returns (key, ts) pairs, whether the scan went through the whole index,
    and how many members it asked Redis to look at.
    """
    found: list[tuple[str, int]] = []
    cursor, looked = 0, 0
    while looked < budget and len(found) < limit:
        step = min(1000, budget - looked)
        reply = cast(
            tuple[int, list[tuple[bytes, float]]],
            client.zscan(index, cursor, match=match, count=step),
        )
        cursor, rows = reply
        looked += step
        found += [(as_text(member), int(score)) for member, score in rows]
        if cursor == 0:
            return found, True, looked
    return found, False, looked


def check_page_key(key: str) -> str:
    """``key`` if it is "" (the empty key) or a valid ``@key``; else UsageError."""
    if key and not valid_key(key):
        raise UsageError(f"bad key {key!r}: 1 to 128 characters of A-Z a-z 0-9 _ . : / -")
    return key


def check_prefix(prefix: str) -> str:
    """A key-search prefix: up to 128 characters a key may hold (no glob characters)."""
    if prefix and not valid_key(prefix):
        raise UsageError(f"bad key prefix {prefix!r}: only characters a key may hold")
    return prefix


def _rows(
    replies: Sequence[list[tuple[bytes, float]]], numbers: Sequence[int], now_ms: int
) -> list[KeyRow]:
    return [
        KeyRow(as_text(member), int(score), now_ms - int(score), number)
        for rows, number in zip(replies, numbers, strict=True)
        for member, score in rows
    ]


def _valid(slot: tuple[int, Value | None] | None, now_ms: int, ttl_ms: int) -> bool:
    if slot is None or slot[1] is None:
        return False
    return ttl_ms <= 0 or now_ms - slot[0] <= ttl_ms


def _node_state(
    info: NodeInfo,
    graph: Graph,
    latest: tuple[int, Value] | None,
    slots: Slots | None,
    now_ms: int,
) -> NodeState:
    ts, value = latest if latest is not None else (None, None)
    age = None if ts is None else max(now_ms - ts, 0)
    if info.kind == "input" or slots is None:
        return NodeState(value, ts, age, freshness(age, info.ttl_ms))
    args = graph.nodes[info.name].args
    valid = [_valid(slot, now_ms, info.ttl_ms) for slot in slots]
    waits = [arg for arg, ok in zip(args, valid, strict=True) if not ok]
    return NodeState(
        value,
        ts,
        age,
        freshness(age, info.ttl_ms),
        filled=sum(valid),
        arity=len(args),
        waits_for=list(dict.fromkeys(waits)),
    )
