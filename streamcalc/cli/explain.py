"""``streamcalc explain``: a node's slots and latest value, and in words why it fired or not."""

from __future__ import annotations

from typing import Annotated

import typer

from streamcalc.cli.helpers import age, connect_namespace, table, to_json
from streamcalc.cli.options import JsonFlag, KeyOption, Namespace, RedisUrl
from streamcalc.errors import UsageError
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL


def explain(
    node: Annotated[str, typer.Argument(help="The node.")],
    key: KeyOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """What a node of a key (default: the empty key) holds, and why it fired or did not.

    For a derived node: its mode, ttl, latest value and argument slots (value,
    ts, age, expired or not), and in words what it waits for. For an input:
    its latest value and the nodes it feeds. --json prints one object.
    """
    from streamcalc import ops
    from streamcalc.graph import valid_node_name
    from streamcalc.ops.explain import explain as explain_node

    if not valid_node_name(node):
        raise UsageError(f"bad node name {node!r}")
    if key is not None:
        ops.check_key(key)
    client, shape = connect_namespace(redis_url, ns)
    result = explain_node(client, shape, node, key or "")
    if as_json:
        typer.echo(to_json(result))
        return
    whose = f"key {key}" if key else "the empty key"
    if result.formula is None:
        typer.echo(f"{node}: input, {whose}")
    else:
        typer.echo(f"{result.formula}   mode={result.mode} ttl={_ttl(result.ttl_ms)}   {whose}")
    if result.latest is None:
        typer.echo("latest: none")
    else:
        latest = result.latest
        typer.echo(
            f"latest: {to_json(latest.value)}  ts={latest.ts}  age={age(int(latest.age_s * 1000))}"
        )
    if result.slots:
        table(
            ["slot", "arg", "holds", "value", "ts", "age", "expired"],
            [
                [
                    str(s.position),
                    s.arg,
                    s.status,
                    "-" if s.value is None else to_json(s.value),
                    "-" if s.ts is None else str(s.ts),
                    "-" if s.age_s is None else age(int(s.age_s * 1000)),
                    "yes" if s.expired else "no",
                ]
                for s in result.slots
            ],
        )
    typer.echo(f"state: {result.state}")
    for sentence in result.explanation:
        typer.echo(f"- {sentence}")


def _ttl(ttl_ms: int | None) -> str:
    from streamcalc.graph.render import format_ttl

    return format_ttl(ttl_ms or 0)
