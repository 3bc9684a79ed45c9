"""``streamcalc values``: the latest value of each node of one key, with its ts and age."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from streamcalc.cli.helpers import age, connect_namespace, table, value_cell, when
from streamcalc.cli.options import JsonFlag, KeyOption, Namespace, RedisUrl
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL


def values(
    nodes: Annotated[list[str] | None, typer.Argument(help="Nodes (default: all).")] = None,
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
    from streamcalc.ops import check_key
    from streamcalc.ops.explain import require_nodes
    from streamcalc.store import graph_names, latest_values

    if key is not None:
        check_key(key)
    client, shape = connect_namespace(redis_url, ns)
    known = graph_names(client, shape.root)
    if nodes:
        require_nodes(known, nodes, ns)  # a typo is an error, not an empty answer
    else:  # every node of the graph: one HMGET, however many keys the partition holds
        nodes = sorted(known or ())
    rows = latest_values(client, shape.of_key(key or ""), nodes, key or "") if nodes else {}
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
