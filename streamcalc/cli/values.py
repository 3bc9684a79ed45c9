"""``streamcalc values``: the latest value of each node of one key, with its ts and age."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from streamcalc.cli.helpers import age, connect_namespace, to_json
from streamcalc.cli.options import JsonFlag, KeyOption, Namespace, RedisUrl
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL


def values(
    nodes: Annotated[list[str] | None, typer.Argument(help="Nodes (default: all).")] = None,
    key: KeyOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Latest value of each node of a key (default: the empty key), with its ts and age.

    --json prints one object: node -> value, ts, age_s.
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
    width = max(len(node) for node in rows)
    for node, (ts, value) in sorted(rows.items()):
        text = to_json(value)
        typer.echo(f"{node:<{width}}  {text:<20}  ts={ts}  age={age(now_ms - ts)}")
