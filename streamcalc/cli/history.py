"""``streamcalc history`` and ``tail``: a node's past values, and derived values as they come."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer

from streamcalc.cli.helpers import connect_namespace, show, to_json, value_cell, when
from streamcalc.cli.options import (
    JsonFlag,
    KeyOption,
    Namespace,
    RedisUrl,
    duration_option,
    option,
)
from streamcalc.errors import UsageError
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL

if TYPE_CHECKING:
    from streamcalc import ops


def history(
    node: Annotated[str, typer.Argument(metavar="NODE", help="The node.")],
    since_ms: Annotated[
        int | None, duration_option("--since", "Only entries written this long ago or later")
    ] = None,
    limit: Annotated[int, option("--limit", min=1, help="At most this many values.")] = 100,
    key: KeyOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Show past values of a node from the streams, oldest first.

    The newest --limit values, with their local time (--json: ts in ms).
    Readings come from the input streams, fired values from the output streams,
    of every partition (with --key, of that key's partition and only its values).
    --json prints a list of objects: ts, value, entry_id, source ("in" or
    "out"), key ("" for the empty key), partition.
    """
    from streamcalc import ops
    from streamcalc.graph import valid_node_name
    from streamcalc.store import server_time_ms

    if not valid_node_name(node):
        raise UsageError(f"bad node name {node!r}")
    if key is not None:
        ops.check_key(key)
    client, shape = connect_namespace(redis_url, ns)
    since = None if since_ms is None else server_time_ms(client) - since_ms
    rows = ops.history(client, shape, node, key=key, since_ms=since, limit=limit)
    if not rows:  # a node no longer in the graph still has its history; a typo has none
        from streamcalc.ops.explain import require_nodes
        from streamcalc.store import graph_names

        require_nodes(graph_names(client, shape.root), [node], ns)
    rows.reverse()
    keyed = any(r.key for r in rows)  # the key column only where there are keys to show
    show(
        rows,
        as_json,
        ["entry id", "source", "time", "value", *(["key"] if keyed else [])],
        [
            [r.entry_id, r.source, when(r.ts), value_cell(r.value), *([r.key] if keyed else [])]
            for r in rows
        ],
        empty=f"no values of {node} in the streams",
    )


def tail(
    from_id: Annotated[
        str,
        option(
            "--from",
            metavar="ID",
            help="'$': from now on, '0': all in the streams, or an entry ID.",
        ),
    ] = "$",
    count: Annotated[
        int | None, option("--count", min=1, help="Stop after this many values.")
    ] = None,
    nodes: Annotated[
        list[str] | None,
        option("--node", help="Only this node's values (repeatable).", show_default=False),
    ] = None,
    key: KeyOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Follow derived values as they are emitted (Ctrl-C ends it).

    Values of every partition (with --key, of that key's), each with its local
    time. --json prints one object per line: id, node, value, ts (ms since the
    epoch), src, key, partition.
    """
    from streamcalc import ops
    from streamcalc.graph import valid_node_name

    for node in nodes or []:
        if not valid_node_name(node):
            raise UsageError(f"bad node name {node!r}")
    if key is not None:
        ops.check_key(key)
    if from_id not in ("$", "0"):
        ops.check_id(from_id)
    client, shape = connect_namespace(redis_url, ns)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C (or SIGTERM) ends it, even when started with SIGINT ignored (a background job).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    shown = 0
    try:
        for emitted in ops.tail(client, shape, start=from_id, node=nodes or None, key=key):
            typer.echo(_tail_line(emitted, as_json))
            shown += 1
            if count is not None and shown >= count:
                return
    except KeyboardInterrupt:
        return


def _tail_line(emitted: ops.Emitted, as_json: bool) -> str:
    output = emitted.output
    if as_json:
        fields = {"id": emitted.id, **msgspec.to_builtins(output), "partition": emitted.partition}
        return to_json(fields)
    value = value_cell(output.value)
    line = f"{emitted.id:<20}  {output.node:<16}  {value:<16}  {when(output.ts)}  src={output.src}"
    return line + (f"  key={output.key}" if output.key else "")
