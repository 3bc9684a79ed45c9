"""``streamcalc dead list|retry|purge``: inspect, re-queue or drop dead letters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from streamcalc.cli.helpers import connect_namespace, show
from streamcalc.cli.options import JsonFlag, Namespace, RedisUrl, duration_option, option
from streamcalc.errors import StreamcalcError, UsageError
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL

if TYPE_CHECKING:  # the command imports Redis only when it runs
    from streamcalc.ops.dead_letters import Where
    from streamcalc.ops.streams import Layout

app = typer.Typer(help="Inspect, re-queue or drop dead letters.", no_args_is_help=True)

Partition = Annotated[
    str | None,
    option(
        "--partition",
        help="Only this partition's dead letters: its number, or 'router' for the routing "
        "stream's (of a partitioned namespace). [default: every partition]",
        show_default=False,
    ),
]


def _partition_choice(text: str | None) -> int | str | None:
    """The --partition option as a number, None for 'router', or 'all' when not given."""
    if text is None:
        return "all"
    if text == "router":
        return None
    if not text.isdigit():
        raise UsageError(f"--partition must be a partition number or 'router', not {text!r}")
    return int(text)


def _where(shape: Layout, choice: int | str | None) -> Where:
    """Every dead stream of the namespace, or the one --partition names (checked against it)."""
    if choice == "all":
        return shape
    if choice is None:
        if not shape.routed:
            raise StreamcalcError(f"namespace {shape.ns!r} has no routing stream (1 partition)")
        return (shape.root, None)
    assert isinstance(choice, int)
    if choice >= shape.count:
        raise StreamcalcError(
            f"namespace {shape.ns!r} has partitions 0..{shape.count - 1}, not {choice}"
        )
    return (shape.partitions[choice], choice)


@app.command("list")
def dead_list(
    count: Annotated[int, option("--count", min=1, help="At most this many letters.")] = 100,
    from_id: Annotated[
        str, option("--from", help="Start at this dead-letter ID ('-' = the oldest).")
    ] = "-",
    partition: Partition = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """List dead letters of every partition (or one), oldest first.

    --json prints a list of objects: id, error, src, node (null for a bad
    entry), fields (the original entry's fields; of a name written twice, the
    last), partition (null for the routing stream's of a partitioned
    namespace), pairs (every original field as [name, value], in order, as a
    retry re-queues them: a name written twice is there twice).
    """
    from streamcalc import ops

    choice = _partition_choice(partition)
    client, shape = connect_namespace(redis_url, ns)
    letters = ops.dead_list(client, _where(shape, choice), count, from_id)
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
    partition: Partition = None,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Re-queue dead letters as input entries.

    A retried letter is deleted from the dead letters.
    Each letter goes back to the input stream of its own partition; a given ID
    is looked for in every partition's dead letters (or in those of
    --partition). An ID that two partitions hold is an error (exit 1) before
    anything is retried: name one with --partition. An ID not found is an
    error (exit 1), after the others are retried.
    """
    from streamcalc import ops

    if bool(ids) == everything:
        raise UsageError("give dead-letter IDs or --all, not both or neither")
    selected = None if everything else [ops.check_id(i) for i in ids or []]
    choice = _partition_choice(partition)
    client, shape = connect_namespace(redis_url, ns)
    retried = ops.dead_retry(client, _where(shape, choice), selected)
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
    partition: Partition = None,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Delete dead letters of every partition (or of --partition).

    The given IDs, those --older-than a duration, or --all. An ID that two
    partitions hold is an error (exit 1) before anything is deleted.
    """
    from streamcalc import ops

    if sum((bool(ids), everything, older_than_ms is not None)) != 1:
        raise UsageError("give exactly one of: dead-letter IDs, --older-than DURATION, --all")
    checked = [ops.check_id(i) for i in ids] if ids else None
    choice = _partition_choice(partition)
    client, shape = connect_namespace(redis_url, ns)
    purged = ops.dead_purge(client, _where(shape, choice), checked, older_than_ms=older_than_ms)
    typer.echo(f"purged {purged} dead letter{'' if purged == 1 else 's'}")
