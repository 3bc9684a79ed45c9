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
    from streamcalc.producer import Producer, entry_fields

    if bool(readings) == bool(file):
        raise UsageError("give either NODE=VALUE pairs or --file, not both or neither")
    settings = build_settings(redis_url, ns)
    if readings:
        fields = entry_fields(_parse_pairs(readings), ts, key)
        typer.echo(_send_one(settings, fields))
        return
    assert file is not None
    if file == "-":
        _send_stream(Producer(redis_client(settings), ns, key=key), sys.stdin, "<stdin>")
    else:
        path = Path(file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"{file}: {exc.strerror}") from None
        batch = list(_json_entries(lines, file, key))  # every line valid before anything is sent
        _send_all(Producer(redis_client(settings), ns, key=key), batch)


def _send_one(settings: Settings, fields: Fields) -> str:
    """Append one entry and return its ID: on the quick client, or on redis-py when it must."""
    from streamcalc.keys import Namespace
    from streamcalc.resp import FullClientNeeded, QuickRedis

    try:
        with QuickRedis(settings.redis_url) as quick:
            namespace = Namespace(settings.ns)
            raw = quick.execute("HGET", namespace.root.meta, "partitions")
            key = fields.get("@key", "")
            stream = namespace.of_key(str(key), int(raw) if raw else 1).input
            flat = [part for pair in fields.items() for part in pair]
            return bytes(quick.execute("XADD", stream, "*", *flat)).decode()
    except FullClientNeeded:  # nothing was written: a cluster, TLS, ... redis-py does it
        from streamcalc.producer import Producer

        return Producer(redis_client(settings), settings.ns).append_fields([fields])[0]


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


def _send_stream(producer: Producer, stream: Iterable[str], source: str, chunk: int = 1000) -> None:
    sent = 0
    batch: list[Fields] = []
    try:
        for fields in _json_entries(stream, source, producer.key):
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
