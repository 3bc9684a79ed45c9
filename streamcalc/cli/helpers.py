"""What the commands share besides their options: settings, the Redis client, text and JSON output.

The options themselves, and their env vars, are in :mod:`streamcalc.cli.options`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import typer

from streamcalc.errors import UsageError
from streamcalc.keys import valid_namespace
from streamcalc.settings import Settings

if TYPE_CHECKING:
    import redis

    from streamcalc.ops import Layout


def check_namespace(ns: str) -> str:
    """``ns`` if it is a valid namespace, else a UsageError (exit 2)."""
    if not valid_namespace(ns):
        raise UsageError(f"bad namespace {ns!r}: use letters, digits, '_', '-' and '.'")
    return ns


#: ``streamcalc --cluster COMMAND`` (or ``STREAMCALC_CLUSTER=1``): Redis is a cluster, forced.
FORCE_CLUSTER = {"on": False}


def build_settings(redis_url: str, ns: str, **extra: Any) -> Settings:
    """The settings of a command, from its options; a bad namespace is a UsageError."""
    extra["cluster"] = bool(extra.get("cluster")) or FORCE_CLUSTER["on"]
    return Settings(redis_url=redis_url, ns=check_namespace(ns), **extra)


def redis_client(settings: Settings, wait_s: float = 0.0) -> redis.Redis:
    """A client that answered PING (waiting up to ``wait_s``), else RedisUnavailable (exit 1)."""
    from streamcalc.store import connect, ping

    client = connect(settings.redis_url, cluster=settings.cluster)
    ping(client, settings.redis_url, wait_s=wait_s)
    return client


def connect_namespace(redis_url: str, ns: str) -> tuple[redis.Redis, Layout]:
    """A client and the namespace's partitions: what the commands that read them all start with."""
    from streamcalc.ops import layout

    client = redis_client(build_settings(redis_url, ns))
    return client, layout(client, ns)


def age(ms: int) -> str:
    """A short age for people: ``4.2s``, ``3.5m``, ``2.0h``."""
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def when(ms: int) -> str:
    """An event time for people: local time, ISO style, to the millisecond, with its offset.

    ``2026-12-01 13:10:25.123+01:00``; a ts too far out for a calendar stays in ms.
    """
    from datetime import datetime

    try:
        moment = datetime.fromtimestamp(ms / 1000).astimezone()
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"
    return moment.isoformat(sep=" ", timespec="milliseconds")


#: A value column shows at most this many characters; a longer vector is shortened.
VALUE_WIDTH = 40


def value_cell(value: object) -> str:
    """A value for a table: its JSON text, a long vector cut to its first elements and its length.

    ``[1.5,2.0,3.25,... 4096 values]``: the columns stay aligned; ``--json`` has it whole.
    """
    text = to_json(value)
    if len(text) <= VALUE_WIDTH or not isinstance(value, list | tuple):
        return text
    suffix = f",... {len(value)} values]"
    head = text[: VALUE_WIDTH - len(suffix)]
    return head[: head.rfind(",")] + suffix


def to_json(obj: object) -> str:
    """``obj`` as one line of JSON: a struct, a list of them, or a value (``4``, ``[1.0,2.0]``)."""
    return msgspec.json.encode(obj).decode()


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    """Print ``rows`` under ``header`` in aligned columns; columns in ``right`` align right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        typer.echo("  ".join(cells).rstrip())


def show(
    result: object,
    as_json: bool,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    empty: str | None = None,
) -> None:
    """Print a command's ``result``: as JSON with ``--json``, else ``rows`` as a table.

    With no rows and an ``empty`` message, that message instead of a bare header.
    """
    if as_json:
        typer.echo(to_json(result))
    elif not rows and empty is not None:
        typer.echo(empty)
    else:
        table(header, rows, right)
