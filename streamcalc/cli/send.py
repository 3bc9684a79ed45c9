"""``streamcalc send``: append one entry from NODE=VALUE pairs, or many from JSON lines."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer

from streamcalc.cli.helpers import build_settings, redis_client
from streamcalc.cli.options import Namespace, RedisUrl, option
from streamcalc.errors import UsageError
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL

if TYPE_CHECKING:
    from streamcalc.producer import Fields, Producer
    from streamcalc.settings import Settings


def send(
    readings: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="NODE=VALUE...",
            help="Readings; VALUE is JSON: 4, -1.5, [1,2].",
            show_default=False,
        ),
    ] = None,
    ts: Annotated[
        int | None,
        option("--ts", metavar="MS", help="Event time, ms since the epoch (default: now)."),
    ] = None,
    file: Annotated[
        str | None,
        option("--file", "-f", metavar="FILE", help="JSON lines to append ('-': stdin)."),
    ] = None,
    key: Annotated[
        str | None,
        option("--key", metavar="KEY", help="The entries' @key (they go to its partition)."),
    ] = None,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Append readings to the input stream.

    One entry from NODE=VALUE pairs (its ID is printed), or one entry per line
    of a JSON-lines file ({"C": 4, "@ts": 1700000000000}).
    """
    from streamcalc.cli.lean import lean_redis

    lean_redis()
    from streamcalc.producer import Producer, entry_fields

    if bool(readings) == bool(file):
        raise UsageError("give either NODE=VALUE pairs or --file, not both or neither")
    settings = build_settings(redis_url, ns)
    if readings:
        fields = entry_fields(_parse_pairs(readings), ts, key)
        _send_one(settings, fields)
        return
    assert file is not None
    if file == "-":
        producer = Producer(redis_client(settings), ns, key=key)
        _warn_unknown(producer, _send_stream(producer, sys.stdin, "<stdin>"))
    else:
        path = Path(file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"{file}: {exc.strerror}") from None
        batch = list(_json_entries(lines, file, key))  # every line valid before anything is sent
        producer = Producer(redis_client(settings), ns, key=key)
        _send_all(producer, batch)
        _warn_unknown(producer, {name for fields in batch for name in fields})


def _warn_unknown(producer: Producer, names: Iterable[str]) -> None:
    """Warn about the sent names the stored graph does not have, read with redis-py."""
    import redis

    from streamcalc.store import graph_names

    try:
        known = graph_names(producer.client, producer.namespace.root)
    except redis.exceptions.NoPermissionError:
        return  # a producer's ACL may allow XADD alone: the warning is a courtesy
    _warn_names(producer.namespace.ns, known, names)


def _warn_names(ns: str, known: frozenset[str] | None, names: Iterable[str]) -> None:
    """One line on stderr naming the sent names the stored graph does not have (if any)."""
    sent = {name for name in names if not name.startswith("@")}
    if not sent or known is None:
        return  # no graph yet: every name is still to come
    unknown = sorted(sent - known)
    if not unknown:
        return
    import difflib

    close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    what = "is not a node" if len(unknown) == 1 else "are not nodes"
    typer.echo(
        f"streamcalc: warning: {', '.join(unknown[:5])}{more} {what} of the graph of "
        f"namespace {ns!r}{hint}; sent anyway",
        err=True,
    )


def _send_one(settings: Settings, fields: Fields) -> None:
    """Append one entry and print its ID, then warn about names the graph does not have."""
    from streamcalc.producer import Producer

    producer = Producer(redis_client(settings), settings.ns)
    typer.echo(producer.append_fields([fields])[0])
    _warn_unknown(producer, fields)


def _parse_pairs(pairs: list[str]) -> dict[str, object]:
    readings: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"expected NODE=VALUE, got {pair!r}")
        try:
            readings[name] = msgspec.json.decode(text)
        except msgspec.DecodeError:
            raise UsageError(f"bad value for {name}: {text!r} is not JSON") from None
    return readings


def _json_entries(lines: Iterable[str], source: str, key: str | None) -> Iterator[Fields]:
    """Validated entry fields from JSON lines; an error names ``source:line``."""
    from streamcalc.producer import entry_fields

    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise UsageError(f"{source}:{number}: not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{source}:{number}: expected a JSON object")
        try:
            yield entry_fields(obj, key=key)
        except UsageError as exc:
            raise UsageError(f"{source}:{number}: {exc}") from None


def _send_all(producer: Producer, batch: list[Fields], chunk: int = 1000) -> None:
    if sys.stderr.isatty():
        with typer.progressbar(length=len(batch), label="sending", file=sys.stderr) as bar:
            for i in range(0, len(batch), chunk):
                producer.append_fields(batch[i : i + chunk])
                bar.update(min(chunk, len(batch) - i))
    else:
        for i in range(0, len(batch), chunk):
            producer.append_fields(batch[i : i + chunk])
    typer.echo(f"sent {len(batch)} entries")


def _send_stream(
    producer: Producer, stream: Iterable[str], source: str, chunk: int = 1000
) -> set[str]:
    """Send JSON lines as they come; returns the names of the readings sent."""
    names: set[str] = set()
    sent = 0
    batch: list[Fields] = []
    try:
        for fields in _json_entries(stream, source, producer.key):
            names.update(fields)
            batch.append(fields)
            if len(batch) >= chunk:
                producer.append_fields(batch)
                sent += len(batch)
                batch = []
    except UsageError as exc:
        raise UsageError(f"{exc} (sent {sent} entries before it)") from None
    if batch:
        producer.append_fields(batch)
        sent += len(batch)
    typer.echo(f"sent {sent} entries")
    return names
