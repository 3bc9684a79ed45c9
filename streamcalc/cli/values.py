"""``streamcalc values``: the latest value of each node of one key, with its ts and age."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from streamcalc.cli.helpers import (
    age,
    build_settings,
    connect_namespace,
    table,
    value_cell,
    when,
)
from streamcalc.cli.options import JsonFlag, KeyOption, Namespace, RedisUrl
from streamcalc.keys import check_key
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL

if TYPE_CHECKING:
    from streamcalc.graph import Graph
    from streamcalc.resp import QuickRedis
    from streamcalc.settings import Settings
    from streamcalc.values import Value


def _latest(settings: Settings, nodes: list[str] | None, key: str) -> dict[str, tuple[int, Value]]:
    """Latest (ts, value) of ``nodes`` (None: the graph's) of ``key``, on the quick client
    when it can (one round trip for the graph and the partition count, one for the values),
    else on redis-py."""
    from streamcalc.resp import FullClientNeeded, QuickRedis

    try:
        with QuickRedis(settings.redis_url) as quick:
            return _latest_quick(quick, settings.ns, nodes, key)
    except FullClientNeeded:
        pass
    from streamcalc.store import fetch_graph, latest_values

    client, shape = connect_namespace(settings.redis_url, settings.ns)
    if nodes is None:
        nodes = _graph_nodes(fetch_graph(client, shape.root)[1])
    return latest_values(client, shape.of_key(key), nodes, key) if nodes else {}


def _latest_quick(
    quick: QuickRedis, ns: str, nodes: list[str] | None, key: str
) -> dict[str, tuple[int, Value]]:
    from streamcalc.keys import Namespace as Layout
    from streamcalc.keys import state_field
    from streamcalc.values import decode_latest

    root = Layout(ns).root
    raw_count, flat = quick.pipeline([("HGET", root.meta, "partitions"), ("HGETALL", root.graph)])
    if nodes is None:
        from streamcalc.graph import Graph

        stored = dict(zip(flat[0::2], flat[1::2], strict=True))
        nodes = _graph_nodes(Graph.from_definitions(stored) if stored else None)
    if not nodes:
        return {}
    partition = Layout(ns).of_key(key, int(raw_count) if raw_count else 1)
    found = quick.execute("HMGET", partition.latest, *(state_field(key, n) for n in nodes))
    return decode_latest(zip(nodes, found, strict=True), partition.latest)


def _graph_nodes(graph: Graph | None) -> list[str]:
    """Every node of the graph, inputs and derived, by name (none without a graph)."""
    return sorted(graph.inputs | set(graph.nodes)) if graph is not None else []


def values(
    nodes: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NODE]...", help="Nodes (default: every node of the graph)."),
    ] = None,
    key: KeyOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Show the latest value of each node, its time and its age.

    Nodes of the graph (default: all of them) of one key (default: the empty
    key). Times are local; --json prints one object: node -> value, ts (ms
    since the epoch), age_s.
    """
    if key is not None:
        check_key(key)
    rows = _latest(build_settings(redis_url, ns), nodes or None, key or "")
    now_ms = int(time.time() * 1000)
    if as_json:
        out = {
            node: {"value": value, "ts": ts, "age_s": (now_ms - ts) / 1000}
            for node, (ts, value) in rows.items()
        }
        typer.echo(json.dumps(out, sort_keys=True))
        return
    if not rows:
        typer.echo("no values yet" if key is None else f"no values of key {key!r} yet")
        return
    table(
        ["node", "value", "time", "age"],
        [
            [node, value_cell(value), when(ts), age(now_ms - ts)]
            for node, (ts, value) in sorted(rows.items())
        ],
        right=[3],
    )
