"""``streamcalc trim``: drop processed history, never an entry some group still needs."""

from __future__ import annotations

from typing import Annotated

from streamcalc.cli.helpers import connect_namespace, show
from streamcalc.cli.options import JsonFlag, Namespace, RedisUrl, duration_option, option
from streamcalc.errors import UsageError
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL


def trim(
    max_age_ms: Annotated[
        int | None, duration_option("--max-age", "Drop entries older than this")
    ] = None,
    max_len: Annotated[
        int | None, option("--max-len", min=0, help="Keep at most this many per stream.")
    ] = None,
    dry_run: Annotated[bool, option("--dry-run", help="Only count.")] = False,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Drop processed history of in, out and dead.

    Never an entry a consumer group has not acknowledged.
    Every partition's streams are trimmed (--max-len bounds each stream of each
    partition). --json prints one object: dry_run, streams (in, out, dead: key,
    removed, length, floor; summed over the partitions), partitions (partition,
    streams). floor is the lowest ID some group still needs (null: no group on
    that stream; "0-0": no group on in yet, so nothing goes).
    """
    from streamcalc import ops

    if max_age_ms is None and max_len is None:
        raise UsageError("give --max-age, --max-len or both")
    client, shape = connect_namespace(redis_url, ns)
    result = ops.trim(client, shape, max_age_ms=max_age_ms, max_len=max_len, dry_run=dry_run)
    show(
        result,
        as_json,
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
