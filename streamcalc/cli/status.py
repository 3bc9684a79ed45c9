"""``streamcalc status``: streams, groups, consumers, pending, lag, dead letters and rates."""

from __future__ import annotations

import typer

from streamcalc import ops
from streamcalc.cli.helpers import age, connect, table, to_json
from streamcalc.cli.options import JsonFlag, Namespace, RedisUrl
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL


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
    client, keys = connect(redis_url, ns)
    snapshot = ops.status(client, keys)
    if as_json:
        typer.echo(to_json(snapshot))
        return
    typer.echo(f"namespace {snapshot.ns!r}, graph version {snapshot.graph_version}")
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
                table(
                    ["  consumer", "pending", "idle"],
                    [[f"  {c.name}", str(c.pending), age(c.idle_ms)] for c in group.consumers],
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
