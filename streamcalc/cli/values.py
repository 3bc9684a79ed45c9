"""``streamcalc values``: the latest value of each node, with its ts and age."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from streamcalc.cli.helpers import age, connect, to_json
from streamcalc.cli.options import JsonFlag, Namespace, RedisUrl
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL


def values(
    nodes: Annotated[list[str] | None, typer.Argument(help="Nodes (default: all).")] = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Latest value of each node, with its ts and age."""
    from streamcalc.store import latest_values

    client, keys = connect(redis_url, ns)
    rows = latest_values(client, keys, nodes or None)
    now_ms = int(time.time() * 1000)
    if as_json:
        out = {
            node: {"value": value, "ts": ts, "age_s": (now_ms - ts) / 1000}
            for node, (ts, value) in rows.items()
        }
        typer.echo(json.dumps(out, sort_keys=True))
        return
    if not rows:
        typer.echo("no values yet")
        return
    width = max(len(node) for node in rows)
    for node, (ts, value) in sorted(rows.items()):
        text = to_json(value)
        typer.echo(f"{node:<{width}}  {text:<20}  ts={ts}  age={age(now_ms - ts)}")
