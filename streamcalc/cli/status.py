"""``streamcalc status``: partitions and their owners, streams, groups, lag, pending and rates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from streamcalc.cli.helpers import age, connect_namespace, table, to_json
from streamcalc.cli.options import JsonFlag, Namespace, RedisUrl, option
from streamcalc.settings import DEFAULT_GROUP, DEFAULT_NS, DEFAULT_REDIS_URL

if TYPE_CHECKING:
    from streamcalc import ops

#: The text output lists at most this many partitions (those with the most lag); --json all.
PARTITION_ROWS = 32


def status(
    group: Annotated[str, option("--group", help="Consumer group.")] = DEFAULT_GROUP,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Show partitions, owners, lag, workers and rates.

    --json prints one object: ns, graph_version, streams (in, out, dead: key,
    length, first_id, last_id, groups: name, pending, last_delivered_id, lag,
    lag_capped, consumers: name, pending, idle_ms; summed over all
    partitions), dead_letters, rates (window_s: the window counted, 60 s
    unless it held more entries than status reads; input_per_s,
    output_per_s, input_entries, output_values: counted by entry IDs in that
    window; estimated: true when even a 1 s window held more, so the rates
    are lower bounds; input_idle_s, output_idle_s: seconds since the newest
    entry, null when none), group, partition_count, partitions (partition,
    label, streams, group, owner: consumer, epoch, expires_in_ms or null,
    lag, lag_capped, pending, consumers), router (the routing stream of a
    partitioned namespace, like a partition; null otherwise), members (name,
    expires_in_ms: the live workers of the group), totals (lag, lag_capped,
    pending, owned), unknown_names (name, count: the most frequent names read
    that are not nodes of the graph, since it was loaded).
    """
    from streamcalc import ops

    client, shape = connect_namespace(redis_url, ns)
    snapshot = ops.status(client, shape, group)
    if as_json:
        typer.echo(to_json(snapshot))
        return
    if _empty(snapshot):
        from streamcalc.errors import StreamcalcError

        raise StreamcalcError(
            f"namespace {snapshot.ns!r} has no graph and no streams (is --ns right? "
            "'streamcalc graph load FILE' starts one)"
        )
    typer.echo(
        f"namespace {snapshot.ns!r}, graph version {snapshot.graph_version}, "
        f"{snapshot.partition_count} partition{'' if snapshot.partition_count == 1 else 's'}"
    )
    typer.echo("")
    table(
        ["stream", "length", "first id", "last id"],
        [
            [name, str(s.length), s.first_id or "-", s.last_id or "-"]
            for name, s in snapshot.streams.items()
        ],
        right=[1],
    )
    for name, stream in snapshot.streams.items():
        for info in stream.groups:
            typer.echo("")
            typer.echo(
                f"group {info.name!r} on {name}: pending {info.pending}, "
                f"lag {_lag(info.lag, info.lag_capped)}, last delivered {info.last_delivered_id}"
            )
            if info.consumers:
                table(
                    ["  consumer", "pending", "idle"],
                    [[f"  {c.name}", str(c.pending), age(c.idle_ms)] for c in info.consumers],
                    right=[1, 2],
                )
            else:
                typer.echo("  no consumers")
    typer.echo("")
    _partitions(snapshot)
    typer.echo("")
    typer.echo(_rates_line(snapshot.rates))
    typer.echo(f"dead letters: {snapshot.dead_letters}")
    if snapshot.unknown_names:
        names = ", ".join(f"{u.name} ({u.count})" for u in snapshot.unknown_names[:10])
        typer.echo(f"names read that are not nodes of the graph, most frequent: {names}")


def _rates_line(rates: ops.Rates) -> str:
    """``rates over the last 60s (by entry IDs): in 2.00 entries/s (120), ...; newest ...``."""
    least = ">=" if rates.estimated else ""
    idle = [
        f"newest {name} {age(int(seconds * 1000))} ago"
        for name, seconds in (("input", rates.input_idle_s), ("output", rates.output_idle_s))
        if seconds is not None
    ]
    return (
        f"rates over the last {rates.window_s:g}s (counted by entry IDs): "
        f"in {least}{rates.input_per_s:,.2f} entries/s ({rates.input_entries:,}), "
        f"out {least}{rates.output_per_s:,.2f} values/s ({rates.output_values:,})"
        + (f"; {', '.join(idle)}" if idle else "")
    )


def _lag(lag: int | None, capped: bool) -> str:
    return "-" if lag is None else f"{lag}{'+' if capped else ''}"


def _partitions(snapshot: ops.Status) -> None:
    """The partitions table: owner, lag, pending and stream lengths of each; then the totals."""
    rows = [*snapshot.partitions, *([snapshot.router] if snapshot.router else [])]
    most_lag = sorted(range(len(rows)), key=lambda i: -(rows[i].lag or 0))[:PARTITION_ROWS]
    shown = [rows[i] for i in sorted(most_lag)]
    from streamcalc.ops import Totals

    totals = snapshot.totals or Totals(0, False, 0, 0)
    owner = "owner (expires in)"
    table(
        ["partition", owner, "lag", "pending", "in", "out", "dead", "consumers"],
        [
            [
                p.label,
                f"{p.owner.consumer} ({age(p.owner.expires_in_ms)})" if p.owner else "-",
                _lag(p.lag, p.lag_capped),
                str(p.pending),
                *(str(p.streams[name].length) for name in ("in", "out", "dead")),
                str(len(p.consumers)),
            ]
            for p in shown
        ]
        + [
            [
                "total",
                f"{totals.owned} of {len(rows)} owned",
                _lag(totals.lag, totals.lag_capped),
                str(totals.pending),
                *(str(snapshot.streams[name].length) for name in ("in", "out", "dead")),
                "",
            ]
        ],
        right=[2, 3, 4, 5, 6, 7],
    )
    if len(shown) < len(rows):
        typer.echo(f"({len(rows) - len(shown)} more partitions with less lag: --json lists all)")
    members = ", ".join(f"{m.name} ({age(m.expires_in_ms)})" for m in snapshot.members)
    typer.echo(f"workers of group {snapshot.group!r}: {members or 'none'}")


def _empty(snapshot: ops.Status) -> bool:
    """No graph was ever loaded and no stream of the namespace holds anything or has a group."""
    return snapshot.graph_version == "0" and not any(
        stream.length or stream.groups for stream in snapshot.streams.values()
    )
