"""``streamcalc dead list|retry|purge``: inspect, re-queue or drop dead letters."""

from __future__ import annotations

from typing import Annotated

import typer

from streamcalc.cli.helpers import connect_namespace, show
from streamcalc.cli.options import JsonFlag, Namespace, RedisUrl, duration_option, option
from streamcalc.errors import StreamcalcError, UsageError
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL

app = typer.Typer(help="Inspect, re-queue or drop dead letters.", no_args_is_help=True)


@app.command("list")
def dead_list(
    count: Annotated[int, option("--count", min=1, help="At most this many letters.")] = 100,
    from_id: Annotated[
        str, option("--from", help="Start at this dead-letter ID ('-' = the oldest).")
    ] = "-",
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """List dead letters of every partition, oldest first.

    --json prints a list of objects: id, error, src, node (null for a bad
    entry), fields (the original entry's fields; of a name written twice, the
    last), partition (null for the routing stream's of a partitioned
    namespace), pairs (every original field as [name, value], in order, as a
    retry re-queues them: a name written twice is there twice).
    """
    from streamcalc import ops

    client, shape = connect_namespace(redis_url, ns)
    letters = ops.dead_list(client, shape, count, from_id)
    show(
        letters,
        as_json,
        ["id", *(["partition"] if shape.routed else []), "src", "node", "error", "fields"],
        [
            [
                letter.id,
                *([_partition(letter.partition)] if shape.routed else []),
                letter.src,
                letter.node or "-",
                letter.error,
                " ".join(f"{k}={v}" for k, v in letter.pairs),
            ]
            for letter in letters
        ],
        empty="no dead letters",
    )


def _partition(number: int | None) -> str:
    return "router" if number is None else str(number)


AllFlag = Annotated[bool, option("--all", help="Every dead letter.")]
Ids = Annotated[
    list[str] | None, typer.Argument(metavar="ID...", help="Dead-letter IDs.", show_default=False)
]


@app.command("retry")
def dead_retry(
    ids: Ids = None,
    everything: AllFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Re-queue dead letters as input entries.

    A retried letter is deleted from the dead letters.
    Each letter goes back to the input stream of its own partition; a given ID
    is looked for in every partition's dead letters. An ID not found is an
    error (exit 1), after the others are retried.
    """
    from streamcalc import ops

    if bool(ids) == everything:
        raise UsageError("give dead-letter IDs or --all, not both or neither")
    selected = None if everything else [ops.check_id(i) for i in ids or []]
    client, shape = connect_namespace(redis_url, ns)
    retried = ops.dead_retry(client, shape, selected)
    typer.echo(f"retried {retried} dead letter{'' if retried == 1 else 's'}")
    if selected is not None and retried < len(selected):
        missing = len(selected) - retried
        raise StreamcalcError(  # exit 1: a script must not take a retry that did nothing for done
            f"{missing} of the {len(selected)} given IDs not found in namespace {ns!r}'s "
            "dead letters (or without fields to re-queue)"
        )


@app.command("purge")
def dead_purge(
    ids: Ids = None,
    everything: AllFlag = False,
    older_than_ms: Annotated[
        int | None, duration_option("--older-than", "Letters written longer ago than this")
    ] = None,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Delete dead letters of every partition.

    The given IDs, those --older-than a duration, or --all.
    """
    from streamcalc import ops

    if sum((bool(ids), everything, older_than_ms is not None)) != 1:
        raise UsageError("give exactly one of: dead-letter IDs, --older-than DURATION, --all")
    checked = [ops.check_id(i) for i in ids] if ids else None
    client, shape = connect_namespace(redis_url, ns)
    purged = ops.dead_purge(client, shape, checked, older_than_ms=older_than_ms)
    typer.echo(f"purged {purged} dead letter{'' if purged == 1 else 's'}")
