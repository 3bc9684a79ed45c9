"""The ``streamcalc`` command line (SPEC §5): a thin layer over the library.

Exit codes: 0 ok; 2 bad usage or invalid input; 1 runtime failure (Redis
unreachable, ...). Every failure is one line on stderr, never a traceback
(``STREAMCALC_DEBUG=1`` shows one for bug reports).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import redis
import typer

from streamcalc.errors import StreamcalcError, UsageError
from streamcalc.keys import Keys, valid_namespace
from streamcalc.settings import DEFAULT_GROUP, DEFAULT_NS, DEFAULT_REDIS_URL, Settings, mask_url

if TYPE_CHECKING:
    from streamcalc.producer import Fields, Producer

app = typer.Typer(
    name="streamcalc",
    help="A reactive computation engine on Redis Streams.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
graph_app = typer.Typer(help="Check, load and show the dependency graph.", no_args_is_help=True)
app.add_typer(graph_app, name="graph")

RedisUrl = Annotated[
    str, typer.Option("--redis-url", envvar="STREAMCALC_REDIS_URL", help="Redis URL.")
]
Namespace = Annotated[
    str, typer.Option("--ns", envvar="STREAMCALC_NS", help="Namespace: keys live under sc:{NS}:.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _settings(redis_url: str, ns: str, **extra: Any) -> Settings:
    if not valid_namespace(ns):
        raise UsageError(f"bad namespace {ns!r}: use letters, digits, '_', '-' and '.'")
    return Settings(redis_url=redis_url, ns=ns, **extra)


def _client(settings: Settings, wait_s: float = 0.0) -> redis.Redis:
    from streamcalc.store import connect, ping

    client = connect(settings.redis_url)
    ping(client, settings.redis_url, wait_s=wait_s)
    return client


# -- graph ---------------------------------------------------------------------------------------


@graph_app.command("check")
def graph_check(file: Annotated[Path, typer.Argument(help="Graph file (TOML).")]) -> None:
    """Validate a graph file offline."""
    from streamcalc.graph import parse_graph_file

    graph = parse_graph_file(file)
    typer.echo(f"{file}: ok ({len(graph.nodes)} derived nodes, {len(graph.inputs)} inputs)")


@graph_app.command("load")
def graph_load(
    file: Annotated[Path, typer.Argument(help="Graph file (TOML).")],
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Validate a graph file and replace the stored graph atomically."""
    from streamcalc.graph import parse_graph_file
    from streamcalc.store import store_graph

    graph = parse_graph_file(file)  # before Redis is touched
    settings = _settings(redis_url, ns)
    version = store_graph(_client(settings), Keys(ns), graph)
    typer.echo(f"loaded {file} into namespace {ns!r}: graph version {version}")


@graph_app.command("show")
def graph_show(
    fmt: Annotated[str, typer.Option("--format", help="text, json, dot or mermaid.")] = "text",
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Print the stored graph."""
    from streamcalc.graph import render
    from streamcalc.store import fetch_graph

    if fmt not in ("text", "json", "dot", "mermaid"):
        raise UsageError(f"unknown format {fmt!r}: use text, json, dot or mermaid")
    settings = _settings(redis_url, ns)
    _, graph = fetch_graph(_client(settings), Keys(ns))
    if graph is None:
        raise StreamcalcError(f"no graph loaded in namespace {ns!r} at {settings.safe_url}")
    typer.echo(render(graph, fmt).rstrip("\n"))


# -- send ----------------------------------------------------------------------------------------


@app.command("send")
def send(
    readings: Annotated[
        list[str] | None, typer.Argument(help="NODE=VALUE pairs; VALUE is JSON (4, -1.5, [1,2]).")
    ] = None,
    ts: Annotated[int | None, typer.Option("--ts", help="Event time, ms since the epoch.")] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="JSON lines to append ('-' = stdin).")
    ] = None,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Append one entry (prints its ID), or many from a JSON-lines file."""
    from streamcalc.producer import Producer, entry_fields

    if bool(readings) == bool(file):
        raise UsageError("give either NODE=VALUE pairs or --file, not both or neither")
    settings = _settings(redis_url, ns)
    if readings:
        fields = entry_fields(_parse_pairs(readings), ts)
        producer = Producer(_client(settings), ns)
        typer.echo(producer.append_fields([fields])[0])
        return
    assert file is not None
    if file == "-":
        _send_stream(Producer(_client(settings), ns), sys.stdin, "<stdin>")
    else:
        path = Path(file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"{file}: {exc.strerror}") from None
        batch = list(_json_entries(lines, file))  # every line valid before anything is sent
        _send_all(Producer(_client(settings), ns), batch)


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


def _json_entries(lines: Iterable[str], source: str) -> Iterator[Fields]:
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
            yield entry_fields(obj)
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
        for fields in _json_entries(stream, source):
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


# -- worker --------------------------------------------------------------------------------------


@app.command("worker")
def worker(
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
    group: Annotated[str, typer.Option(envvar="STREAMCALC_GROUP", help="Consumer group.")] = (
        DEFAULT_GROUP
    ),
    consumer: Annotated[
        str, typer.Option(envvar="STREAMCALC_CONSUMER", help="Consumer name (default host-pid).")
    ] = "",
    processes: Annotated[
        int, typer.Option(envvar="STREAMCALC_PROCESSES", min=1, help="Consumer processes.")
    ] = 1,
    batch: Annotated[
        int, typer.Option(envvar="STREAMCALC_BATCH", min=1, max=10_000, help="Entries a batch.")
    ] = 500,
    block_ms: Annotated[
        int, typer.Option(envvar="STREAMCALC_BLOCK_MS", min=1, help="XREADGROUP BLOCK, ms.")
    ] = 1000,
    claim_idle: Annotated[
        int,
        typer.Option(
            envvar="STREAMCALC_CLAIM_IDLE", min=0, help="Claim entries idle this long, ms."
        ),
    ] = 30_000,
    max_deliveries: Annotated[
        int, typer.Option(envvar="STREAMCALC_MAX_DELIVERIES", min=1, help="Then dead-letter.")
    ] = 5,
    metrics_port: Annotated[
        int | None, typer.Option(envvar="STREAMCALC_METRICS_PORT", help="Serve /metrics, /healthz.")
    ] = None,
    log_format: Annotated[
        str, typer.Option(envvar="STREAMCALC_LOG_FORMAT", help="json, console or auto.")
    ] = "auto",
    log_level: Annotated[str, typer.Option(envvar="STREAMCALC_LOG_LEVEL")] = "info",
    wait: Annotated[
        float, typer.Option(envvar="STREAMCALC_WAIT", help="Seconds to wait for Redis at start.")
    ] = 30.0,
    export_values: Annotated[
        bool,
        typer.Option(
            envvar="STREAMCALC_EXPORT_VALUES", help="Export each node's latest value as a gauge."
        ),
    ] = False,
    stuck_after: Annotated[
        float,
        typer.Option(
            envvar="STREAMCALC_STUCK_AFTER", help="/healthz fails after this many seconds stuck."
        ),
    ] = 60.0,
    retain: Annotated[
        str | None,
        typer.Option(
            envvar="STREAMCALC_RETAIN",
            help="Trim acknowledged history: an age (10m, 2d) or a length (100000).",
        ),
    ] = None,
    function_timeout: Annotated[
        float,
        typer.Option(envvar="STREAMCALC_FUNCTION_TIMEOUT", min=0, help="Plugin time limit, s."),
    ] = 1.0,
) -> None:
    """Run a consumer of the group until SIGTERM/SIGINT."""
    from streamcalc.logs import configure_logging

    if log_format not in ("json", "console", "auto"):
        raise UsageError(f"unknown log format {log_format!r}: use json, console or auto")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise UsageError(f"unknown log level {log_level!r}")
    settings = _settings(
        redis_url,
        ns,
        group=group,
        consumer=consumer,
        batch=batch,
        block_ms=block_ms,
        claim_idle_ms=claim_idle,
        max_deliveries=max_deliveries,
        metrics_port=metrics_port,
        log_format=log_format,
        wait_s=wait,
        export_values=export_values,
        stuck_after_s=stuck_after,
        function_timeout_s=function_timeout,
        heartbeat_file=os.environ.get("STREAMCALC_HEARTBEAT_FILE", ""),
        **_retention(retain),
    )
    configure_logging(log_format, log_level)
    if processes > 1:
        from streamcalc.supervisor import supervise

        raise typer.Exit(supervise(settings, processes, log_level))
    _run_worker(settings)


def _retention(text: str | None) -> dict[str, int]:
    """``--retain``: a bare integer is a length, anything with a unit an age."""
    if text is None:
        return {}
    if text.isdigit():
        return {"retain_len": int(text)}
    from streamcalc.ops import parse_duration

    return {"retain_ms": parse_duration(text, "--retain")}


def _run_worker(settings: Settings) -> None:
    from streamcalc.worker import Worker

    w = Worker(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        w.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.metrics_port is not None:
        from streamcalc.metrics import serve

        serve(settings.metrics_port, w.health)
    w.run()


# -- values --------------------------------------------------------------------------------------


@app.command("values")
def values(
    nodes: Annotated[list[str] | None, typer.Argument(help="Nodes (default: all).")] = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Latest value of each node, with its ts and age."""
    from streamcalc.store import latest_values

    settings = _settings(redis_url, ns)
    rows = latest_values(_client(settings), Keys(ns), nodes or None)
    now_ms = int(time.time() * 1000)
    if as_json:
        out = {
            node: {"value": value, "ts": ts, "age_s": (now_ms - ts) / 1000}
            for node, (ts, value) in rows.items()
        }
        typer.echo(json.dumps(out, sort_keys=True))
        return
    if not rows:
        typer.echo("no values yet")
        return
    width = max(len(node) for node in rows)
    for node, (ts, value) in sorted(rows.items()):
        text = msgspec.json.encode(value).decode()
        typer.echo(f"{node:<{width}}  {text:<20}  ts={ts}  age={_age(now_ms - ts)}")


def _age(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


# -- demo ----------------------------------------------------------------------------------------


@app.command("demo")
def demo(
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="STREAMCALC_DEMO_REDIS_URL",
            help="Use this Redis instead of a private embedded one.",
        ),
    ] = None,
    ns: Annotated[
        str, typer.Option("--ns", help="Namespace the demo uses (it is reset).")
    ] = "demo",
) -> None:
    """The seed's example end to end (A = C + D + E, B = A * F), on an embedded Redis."""
    from streamcalc.demo import run_demo
    from streamcalc.logs import configure_logging

    configure_logging("auto", "warning")
    if not valid_namespace(ns):
        raise UsageError(f"bad namespace {ns!r}")
    run_demo(redis_url, ns, echo=typer.echo)


# -- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app; every error becomes one line and an exit code."""
    debug = os.environ.get("STREAMCALC_DEBUG") == "1"
    try:
        # Standalone mode: typer itself reports usage errors (exit 2) and --help (exit 0).
        app(args=argv, prog_name="streamcalc", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except StreamcalcError as exc:
        if debug:
            raise
        typer.echo(f"streamcalc: error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    except redis.RedisError as exc:
        if debug:
            raise
        typer.echo(f"streamcalc: redis error: {_one_line(mask_url(str(exc)))}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, with the way to see more
        if debug:
            raise
        message = _one_line(mask_url(f"{type(exc).__name__}: {exc}"))
        typer.echo(f"streamcalc: internal error: {message} (STREAMCALC_DEBUG=1 for more)", err=True)
        return 1
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


# The operator commands live in their own module and register themselves on ``app``.
from streamcalc import cli_ops  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
