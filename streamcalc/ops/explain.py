"""``streamcalc explain``: what a node of one key holds, and in words why it fired or did not.

It reads the committed state of the key's partition (never a worker's cache):
the node's latest value, and for a derived node its argument slots (one field
``key|node`` of the partition's ``slots`` hash, see :mod:`streamcalc.state`),
then judges them as a wave would (TTL and mode, docs/semantics.md). Every wave that changes a slot
empties the ones that have expired against the newest, so what the state holds
is fresh among itself; what can be stale is a value older than the ttl *now*:
an argument value that came now would expire it. The words say what the node
waits for, or, with every argument there, what it gives (or why its function
fails).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Literal, cast

import msgspec
import redis

from streamcalc.errors import FunctionError, StreamcalcError
from streamcalc.graph import Graph
from streamcalc.graph.render import format_ttl, formula
from streamcalc.ops.streams import Layout
from streamcalc.state import Slots, read_slots, state_fields
from streamcalc.store import fetch_graph, latest_values, server_time_ms
from streamcalc.values import Value

SlotStatus = Literal["filled", "empty", "used"]
"""``filled``: holds a value; ``empty``: never received one; ``used``: its value was
emptied (consumed when the node fired, or expired), its ts kept."""


class Latest(msgspec.Struct, frozen=True):
    """A node's latest value, its ts and how old that ts is by the Redis server's clock."""

    value: Value
    ts: int
    age_s: float


class SlotView(msgspec.Struct, frozen=True):
    """One argument slot of a derived node."""

    position: int
    arg: str
    status: SlotStatus
    value: Value | None
    ts: int | None
    age_s: float | None
    expired: bool
    """Holds a value older than the ttl by the Redis server's clock: an argument value that
    came now would expire it (a wave judges a slot against the newest one, and has
    already emptied any that were expired then: those are ``used``)."""
    arg_latest: Latest | None
    """The argument node's own latest value (it may be newer than the slot's)."""


class Explanation(msgspec.Struct, frozen=True):
    """Everything ``streamcalc explain`` shows; also its ``--json`` output.

    ``state`` is ``input``, ``waiting`` (a slot has no value or an expired one),
    ``ready`` (every slot holds a fresh value: the node fires, or fired, on them) or
    ``failing`` (ready, but its function fails on these values: a dead letter).
    """

    node: str
    key: str
    kind: Literal["input", "derived"]
    state: Literal["input", "waiting", "ready", "failing"]
    explanation: list[str]
    latest: Latest | None
    feeds: list[str]
    formula: str | None = None
    mode: str | None = None
    ttl_ms: int | None = None
    slots: list[SlotView] = msgspec.field(default_factory=list)
    value: Value | None = None
    """With every slot ready: what the function gives on them."""
    error: str | None = None
    """With every slot ready: why the function fails on them."""


def unknown_node(node: str, known: frozenset[str] | None, ns: str) -> StreamcalcError:
    """The error of a node the graph (its ``known`` names; None: no graph) does not have,
    with a suggestion (exit 1)."""
    if known is None:
        return StreamcalcError(f"unknown node {node}: no graph is loaded in namespace {ns!r}")
    close = difflib.get_close_matches(node, sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return StreamcalcError(f"unknown node {node} in the graph of namespace {ns!r}{hint}")


def require_nodes(known: frozenset[str] | None, nodes: list[str], ns: str) -> None:
    """Raise :func:`unknown_node` for the first of ``nodes`` not among the ``known`` names."""
    for node in nodes:
        if known is None or node not in known:
            raise unknown_node(node, known, ns)


def explain(
    client: redis.Redis, shape: Layout, node: str, key: str = "", *, graph: Graph | None = None
) -> Explanation:
    """Explain ``node`` of ``key`` (the empty key by default) from the committed state.

    ``graph``: the stored graph when the caller holds it already (the live page
    does: compiling a big graph for every click would cost more than the rest).
    Raises StreamcalcError (exit 1) for a node the stored graph does not have.
    """
    keys = shape.of_key(key)
    if graph is None:
        _, graph = fetch_graph(client, keys)
    if graph is None or (node not in graph.nodes and node not in graph.inputs):
        raise unknown_node(
            node, None if graph is None else graph.inputs | set(graph.nodes), shape.ns
        )
    now_ms = server_time_ms(client)
    feeds = sorted({parent for parent, _ in graph.parents.get(node, ())})
    definition = graph.nodes.get(node)
    names = [node, *(definition.args if definition else ())]
    latest = {
        name: Latest(value, ts, (now_ms - ts) / 1000)
        for name, (ts, value) in latest_values(
            client, keys, list(dict.fromkeys(names)), key
        ).items()
    }
    if definition is None:
        words = [f"{node} is an input: its values come from producers"]
        words.append(f"it feeds {', '.join(feeds)}" if feeds else "no node takes it")
        if node not in latest:
            words.append("no value of it has been received" + (f" for key {key}" if key else ""))
        return Explanation(node, key, "input", "input", words, latest.get(node), feeds)
    blobs = cast(list[bytes | None], client.hmget(keys.slots, state_fields(key, [node])))
    found, problem = read_slots(graph, key, [node], blobs)
    slots = found[node]
    notes = [f"its stored slots are unreadable ({problem})"] if problem else []
    views = _slot_views(graph, node, slots, latest, now_ms)
    state, value, error, words = _judge(graph, node, views)
    return Explanation(
        node,
        key,
        "derived",
        state,
        notes + words,
        latest.get(node),
        feeds,
        formula=formula(definition),
        mode=definition.mode,
        ttl_ms=definition.ttl_ms,
        slots=views,
        value=value,
        error=error,
    )


def _slot_views(
    graph: Graph, node: str, slots: Slots, latest: dict[str, Latest], now_ms: int
) -> list[SlotView]:
    ttl_ms = graph.nodes[node].ttl_ms
    views: list[SlotView] = []
    for position, (arg, slot) in enumerate(zip(graph.nodes[node].args, slots, strict=True)):
        if slot is None:
            views.append(SlotView(position, arg, "empty", None, None, None, False, latest.get(arg)))
            continue
        ts, value = slot
        expired = value is not None and bool(ttl_ms) and ts < now_ms - ttl_ms
        status: SlotStatus = "used" if value is None else "filled"
        age = (now_ms - ts) / 1000
        views.append(SlotView(position, arg, status, value, ts, age, expired, latest.get(arg)))
    return views


def _judge(
    graph: Graph, node: str, views: list[SlotView]
) -> tuple[Literal["waiting", "ready", "failing"], Value | None, str | None, list[str]]:
    """(state, value, error, words) of a derived node's slots."""
    definition = graph.nodes[node]
    consume = definition.mode == "consume"
    words: list[str] = []
    missing = [v for v in views if v.status != "filled"]
    stale = _stale([v for v in views if v.expired], definition.ttl_ms)
    if missing:
        words.append("waits for " + _and(_wanted(v, consume) for v in missing))
        return "waiting", None, None, words + stale
    if definition.fn is not None and ":" in definition.fn:
        words.append(
            f"every argument is there; explain does not run the plugin {definition.fn} "
            "(a failure of it is a dead letter)"
        )
        return "ready", None, None, words + stale
    args = [v.value for v in views if v.value is not None]
    try:
        value = graph.evaluate(node, args)
    except FunctionError as exc:
        words.append(
            f"every argument is there, but its function fails on them: {exc} "
            "(a dead letter; a new value of any argument tries again)"
        )
        return "failing", None, str(exc), words
    shown = msgspec.json.encode(value).decode()
    if consume:
        words.append(f"every argument is there: it fires with {shown} and empties its slots")
    else:
        words.append(
            f"every argument is there: it fired with {shown}, and fires again whenever "
            "an argument takes a new value (latest mode keeps its slots)"
        )
    return "ready", value, None, words + stale


def _stale(views: list[SlotView], ttl_ms: int) -> list[str]:
    """The words about slots older than the ttl by now, if any."""
    if not views:
        return []
    one = len(views) == 1
    return [
        _and(f"{v.arg} (ts {v.ts})" for v in views)
        + f" {'is' if one else 'are'} older than the ttl {format_ttl(ttl_ms)}: "
        + f"an argument value that came now would expire {'it' if one else 'them'}"
    ]


def _wanted(view: SlotView, consume: bool) -> str:
    """What empty slot ``view`` waits for, in words."""
    if view.status == "empty":
        return f"a value of {view.arg} (none received yet)"
    why = "used when the node fired, or expired" if consume else "expired"
    return f"a new value of {view.arg} (the last one, ts {view.ts}, was {why})"


def _and(parts: Iterable[str]) -> str:
    items = list(parts)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
