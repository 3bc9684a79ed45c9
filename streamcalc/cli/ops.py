"""Operator commands of the command line: status, tail, history, dead list|retry|purge, trim.

A thin layer over :mod:`streamcalc.ops`: parse options, call the library,
print aligned text or, with ``--json``, the library's structs as JSON (their
field names are the documented keys). Importing this module registers the
commands on :data:`streamcalc.cli.app`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from typing import Annotated

import msgspec
import redis
import typer

from streamcalc import ops
from streamcalc.cli import (
    DURATION_HELP,
    JsonFlag,
    Namespace,
    RedisUrl,
    _age,
    _client,
    _duration,
    _settings,
    app,
)
from streamcalc.errors import UsageError
from streamcalc.graph import valid_node_name
from streamcalc.keys import Keys
from streamcalc.messages import OutputValue
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL
from streamcalc.store import server_time_ms
from streamcalc.values import Value

dead_app = typer.Typer(help="Inspect, re-queue or drop dead letters.", no_args_is_help=True)
app.add_typer(dead_app, name="dead")


def _connect(redis_url: str, ns: str) -> tuple[redis.Redis, Keys]:
    return _client(_settings(redis_url, ns)), Keys(ns)


def _json(obj: object) -> str:
    return msgspec.json.encode(obj).decode()


def _value_text(value: Value) -> str:
    return msgspec.json.encode(value).decode()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    """Print ``rows`` under ``header`` in aligned columns; columns in ``right`` align right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        typer.echo("  ".join(cells).rstrip())


# -- status --------------------------------------------------------------------------------------


@app.command("status")
def status(
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Stream lengths, groups, consumers, pending, lag, dead letters and rates.

    --json prints one object: ns, graph_version, streams (in, out, dead: key,
    length, first_id, last_id, groups: name, pending, last_delivered_id, lag,
    lag_capped, consumers: name, pending, idle_ms), dead_letters, rates
    (window_s, input_per_s, output_per_s, input_entries, output_values, estimated).
    """
    client, keys = _connect(redis_url, ns)
    snapshot = ops.status(client, keys)
    if as_json:
        typer.echo(_json(snapshot))
        return
    typer.echo(f"namespace {snapshot.ns!r}, graph version {snapshot.graph_version}")
    typer.echo("")
    _table(
        ["stream", "length", "first id", "last id"],
        [
            [name, str(s.length), s.first_id or "-", s.last_id or "-"]
            for name, s in snapshot.streams.items()
        ],
        right=[1],
    )
    for name, stream in snapshot.streams.items():
        for group in stream.groups:
            lag = (
                "unknown" if group.lag is None else f"{group.lag}{'+' if group.lag_capped else ''}"
            )
            typer.echo("")
            typer.echo(
                f"group {group.name!r} on {name}: pending {group.pending}, lag {lag}, "
                f"last delivered {group.last_delivered_id}"
            )
            if group.consumers:
                _table(
                    ["  consumer", "pending", "idle"],
                    [[f"  {c.name}", str(c.pending), _age(c.idle_ms)] for c in group.consumers],
                    right=[1, 2],
                )
            else:
                typer.echo("  no consumers")
    rates = snapshot.rates
    about = "~" if rates.estimated else ""
    typer.echo("")
    typer.echo(
        f"rates over the last {rates.window_s:g}s: in {about}{rates.input_per_s:.2f} entries/s, "
        f"out {about}{rates.output_per_s:.2f} values/s"
    )
    typer.echo(f"dead letters: {snapshot.dead_letters}")


# -- tail ----------------------------------------------------------------------------------------


@app.command("tail")
def tail(
    from_id: Annotated[
        str,
        typer.Option("--from", help="'$' = from now on, '0' = all in the stream, or an entry ID."),
    ] = "$",
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Stop after this many values.")
    ] = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Follow derived values as they are emitted (Ctrl-C ends it).

    --json prints one object per line: id, node, value, ts, src.
    """
    client, keys = _connect(redis_url, ns)
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
        return _json(fields)
    value = _value_text(output.value)
    return f"{entry_id:<20}  {output.node:<16}  {value:<16}  ts={output.ts}  src={output.src}"


# -- history -------------------------------------------------------------------------------------


@app.command("history")
def history(
    node: Annotated[str, typer.Argument(help="The node.")],
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help=f"Only entries written this long ago or later ({DURATION_HELP})."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many values.")] = 100,
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
    since_span = _duration(since, "--since") if since is not None else None
    client, keys = _connect(redis_url, ns)
    since_ms = None if since_span is None else server_time_ms(client) - since_span
    rows = ops.history(client, keys, node, since_ms=since_ms, limit=limit)
    rows.reverse()
    if as_json:
        typer.echo(_json(rows))
        return
    if not rows:
        typer.echo(f"no values of {node} in the streams")
        return
    _table(
        ["entry id", "source", "ts", "value"],
        [[r.entry_id, r.source, str(r.ts), _value_text(r.value)] for r in rows],
    )


# -- dead letters --------------------------------------------------------------------------------


@dead_app.command("list")
def dead_list(
    count: Annotated[int, typer.Option("--count", min=1, help="At most this many letters.")] = 100,
    from_id: Annotated[
        str, typer.Option("--from", help="Start at this dead-letter ID ('-' = the oldest).")
    ] = "-",
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """List dead letters, oldest first.

    --json prints a list of objects: id, error, src, node (null for a bad
    entry), fields (the original entry's fields, as a retry re-queues them).
    """
    client, keys = _connect(redis_url, ns)
    letters = ops.dead_list(client, keys, count, from_id)
    if as_json:
        typer.echo(_json(letters))
        return
    if not letters:
        typer.echo("no dead letters")
        return
    _table(
        ["id", "src", "node", "error", "fields"],
        [
            [
                letter.id,
                letter.src,
                letter.node or "-",
                letter.error,
                " ".join(f"{k}={v}" for k, v in letter.fields.items()),
            ]
            for letter in letters
        ],
    )


AllFlag = Annotated[bool, typer.Option("--all", help="Every dead letter.")]
Ids = Annotated[list[str] | None, typer.Argument(help="Dead-letter IDs.", show_default=False)]


@dead_app.command("retry")
def dead_retry(
    ids: Ids = None,
    everything: AllFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Re-queue dead letters as new input entries (and delete them from the dead letters)."""
    if bool(ids) == everything:
        raise UsageError("give dead-letter IDs or --all, not both or neither")
    selected = None if everything else [ops.check_id(i) for i in ids or []]
    client, keys = _connect(redis_url, ns)
    retried = ops.dead_retry(client, keys, selected)
    message = f"retried {retried} dead letter{'' if retried == 1 else 's'}"
    if selected is not None and retried < len(selected):
        message += f" ({len(selected) - retried} not found or without fields)"
    typer.echo(message)


@dead_app.command("purge")
def dead_purge(
    ids: Ids = None,
    everything: AllFlag = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help=f"Letters written longer ago than this ({DURATION_HELP})."
        ),
    ] = None,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Delete dead letters: the given IDs, those --older-than a duration, or --all."""
    if sum((bool(ids), everything, older_than is not None)) != 1:
        raise UsageError("give exactly one of: dead-letter IDs, --older-than DURATION, --all")
    age = _duration(older_than, "--older-than") if older_than is not None else None
    checked = [ops.check_id(i) for i in ids] if ids else None
    client, keys = _connect(redis_url, ns)
    purged = ops.dead_purge(client, keys, checked, older_than_ms=age)
    typer.echo(f"purged {purged} dead letter{'' if purged == 1 else 's'}")


# -- trim ----------------------------------------------------------------------------------------


@app.command("trim")
def trim(
    max_age: Annotated[
        str | None,
        typer.Option("--max-age", help=f"Drop entries older than this ({DURATION_HELP})."),
    ] = None,
    max_len: Annotated[
        int | None, typer.Option("--max-len", min=0, help="Keep at most this many per stream.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count.")] = False,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Drop old entries of in, out and dead, never one a consumer group has not acknowledged.

    --json prints one object: dry_run, streams (in, out, dead: key, removed,
    length, floor). floor is the lowest ID some group still needs (null: no
    group on that stream; "0-0": no group on in yet, so nothing goes).
    """
    if max_age is None and max_len is None:
        raise UsageError("give --max-age, --max-len or both")
    age = _duration(max_age, "--max-age") if max_age is not None else None
    client, keys = _connect(redis_url, ns)
    result = ops.trim(client, keys, max_age_ms=age, max_len=max_len, dry_run=dry_run)
    if as_json:
        typer.echo(_json(result))
        return
    _table(
        ["stream", "would remove" if dry_run else "removed", "length", "floor"],
        [
            [name, str(s.removed), str(s.length), _floor_text(s.floor)]
            for name, s in result.streams.items()
        ],
        right=[1, 2],
    )


def _floor_text(floor: str | None) -> str:
    if floor is None:
        return "- (no group)"
    if floor == "0-0":
        return "all kept (no group yet)"
    return floor
