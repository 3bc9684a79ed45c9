"""``streamcalc values``: the latest value of each node of one key, with its ts and age."""

from __future__ import annotations

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
    from streamcalc.settings import Settings
    from streamcalc.values import Value


def _latest(settings: Settings, nodes: list[str] | None, key: str) -> dict[str, tuple[int, Value]]:
    """Latest (ts, value) of ``nodes`` (None: the graph's) of ``key``. A node the graph
    does not have is an error (exit 1)."""
    from streamcalc.store import graph_names, latest_values

    client, shape = connect_namespace(settings.redis_url, settings.ns)
    names = _wanted(graph_names(client, shape.root), nodes, settings.ns)
    return latest_values(client, shape.of_key(key), names, key) if names else {}


def _wanted(known: frozenset[str] | None, nodes: list[str] | None, ns: str) -> list[str]:
    """The nodes to read: the given ones, each a node of the graph (a typo is an error,
    not an empty answer), or every node of the graph."""
    if nodes is None:
        return sorted(known or ())
    if known is None or not known.issuperset(nodes):
        from streamcalc.ops.explain import require_nodes

        require_nodes(known, nodes, ns)
    return nodes


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
    from streamcalc.cli.lean import lean_redis

    lean_redis()
    if key is not None:
        check_key(key)
    rows = _latest(build_settings(redis_url, ns), nodes or None, key or "")
    now_ms = int(time.time() * 1000)
    if as_json:
        import json

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
