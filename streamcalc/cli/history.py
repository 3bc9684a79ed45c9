"""``streamcalc history`` and ``tail``: a node's past values, and derived values as they come."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import msgspec
import typer

from streamcalc import ops
from streamcalc.cli.helpers import connect, show, to_json
from streamcalc.cli.options import JsonFlag, Namespace, RedisUrl, duration_option, option
from streamcalc.errors import UsageError
from streamcalc.graph import valid_node_name
from streamcalc.messages import OutputValue
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL
from streamcalc.store import server_time_ms


def history(
    node: Annotated[str, typer.Argument(help="The node.")],
    since_ms: Annotated[
        int | None, duration_option("--since", "Only entries written this long ago or later")
    ] = None,
    limit: Annotated[int, option("--limit", min=1, help="At most this many values.")] = 100,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Past values of a node from the streams (the newest --limit), oldest first.

    Readings come from the input stream, fired values from the output stream.
    --json prints a list of objects: ts, value, entry_id, source ("in" or "out").
    """
    if not valid_node_name(node):
        raise UsageError(f"bad node name {node!r}")
    client, keys = connect(redis_url, ns)
    since = None if since_ms is None else server_time_ms(client) - since_ms
    rows = ops.history(client, keys, node, since_ms=since, limit=limit)
    rows.reverse()
    show(
        rows,
        as_json,
        ["entry id", "source", "ts", "value"],
        [[r.entry_id, r.source, str(r.ts), to_json(r.value)] for r in rows],
        empty=f"no values of {node} in the streams",
    )


def tail(
    from_id: Annotated[
        str,
        option("--from", help="'$' = from now on, '0' = all in the stream, or an entry ID."),
    ] = "$",
    count: Annotated[
        int | None, option("--count", min=1, help="Stop after this many values.")
    ] = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Follow derived values as they are emitted (Ctrl-C ends it).

    --json prints one object per line: id, node, value, ts, src.
    """
    client, keys = connect(redis_url, ns)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C (or SIGTERM) ends it, even when started with SIGINT ignored (a background job).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    shown = 0
    try:
        for entry_id, output in ops.tail(client, keys, start=from_id):
            typer.echo(_tail_line(entry_id, output, as_json))
            shown += 1
            if count is not None and shown >= count:
                return
    except KeyboardInterrupt:
        return


def _tail_line(entry_id: str, output: OutputValue, as_json: bool) -> str:
    if as_json:
        fields = {"id": entry_id, **msgspec.to_builtins(output)}
        return to_json(fields)
    value = to_json(output.value)
    return f"{entry_id:<20}  {output.node:<16}  {value:<16}  ts={output.ts}  src={output.src}"
