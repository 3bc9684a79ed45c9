"""``streamcalc worker``: run a consumer (or ``--processes N``) until SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Annotated

import typer

from streamcalc.cli.helpers import build_settings
from streamcalc.cli.options import (
    LogFormat,
    LogLevel,
    Namespace,
    Plugins,
    RedisUrl,
    choice_option,
    duration,
    duration_option,
    option,
    trusted,
)
from streamcalc.settings import DEFAULT_GROUP, DEFAULT_NS, DEFAULT_REDIS_URL, Settings


def worker(
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
    group: Annotated[
        str, option("--group", metavar="NAME", help="Consumer group.")
    ] = DEFAULT_GROUP,
    consumer: Annotated[
        str, option("--consumer", metavar="NAME", help="Consumer name (default: <hostname>-<pid>).")
    ] = "",
    processes: Annotated[
        int, option("--processes", min=1, help="Worker processes (one /metrics for all).")
    ] = 1,
    batch: Annotated[
        int, option("--batch", min=1, max=10_000, help="Entries read at most at once.")
    ] = 500,
    block_ms: Annotated[
        int, option("--block-ms", min=1, help="How long a read waits for new entries, ms.")
    ] = 1000,
    claim_idle_ms: Annotated[
        int, option("--claim-idle", min=0, help="Take over entries pending this long, ms.")
    ] = 30_000,
    max_deliveries: Annotated[
        int, option("--max-deliveries", min=1, help="Deliveries before a dead letter.")
    ] = 5,
    lease_ms: Annotated[
        int,
        option(
            "--lease-ms",
            min=50,
            help="Partition lease, ms: a dead worker's partitions are taken over after it.",
        ),
    ] = 10_000,
    function_timeout_s: Annotated[
        float, option("--function-timeout", min=0, help="Plugin time limit, s (0: none).")
    ] = 1.0,
    plugins: Plugins = "",
    max_future_ms: Annotated[
        int,
        duration_option(
            "--max-future",
            "How far an @ts may lie ahead of its entry's time (0: no limit)",
            show_default="5m",
        ),
    ] = 5 * 60_000,
    cache_keys: Annotated[
        int, option("--cache-keys", min=1, help="Keys' slot state kept in memory, per partition.")
    ] = 100_000,
    metrics_port: Annotated[
        int | None,
        option("--metrics-port", min=1, max=65535, help="Port of /metrics and /healthz."),
    ] = None,
    metrics_host: Annotated[
        str,
        option(
            "--metrics-host",
            metavar="HOST",
            help="Interface of /metrics, /healthz (127.0.0.1: this host only).",
        ),
    ] = "0.0.0.0",
    log_format: Annotated[
        LogFormat,
        choice_option(
            "--log-format", "Log lines as JSON, for the console, or auto (console on a terminal)."
        ),
    ] = LogFormat.auto,
    log_level: Annotated[
        LogLevel, choice_option("--log-level", "The least severe level logged.")
    ] = LogLevel.info,
    wait_s: Annotated[
        float, option("--wait", help="Seconds to wait for Redis at start (then exit 1).")
    ] = 30.0,
    cluster: Annotated[
        bool, option("--cluster", help="Redis is a Redis Cluster (found out by itself otherwise).")
    ] = False,
    export_values: Annotated[
        bool,
        option(
            "--export-values/--no-export-values", help="Export each node's latest value as a gauge."
        ),
    ] = False,
    stuck_after_s: Annotated[
        float,
        option("--stuck-after", help="/healthz fails after this many seconds without progress."),
    ] = 60.0,
    retain: Annotated[
        str | None,
        option(
            "--retain",
            metavar="AGE|LENGTH",
            help="Trim acknowledged history: an age with its unit (10m, 2d) or a length "
            "(a bare number of entries: 100000).",
        ),
    ] = None,
) -> None:
    """Run a worker: process entries until SIGTERM or Ctrl-C.

    It joins the consumer group, takes its share of the partitions, and on
    SIGTERM finishes and acknowledges its batch, hands its partitions over
    and exits 0.
    """
    from streamcalc.logs import configure_logging

    # Each option is named after the setting it sets (the flags are spelled out above).
    given = {k: v for k, v in locals().items() if k in _SETTINGS and k not in ("redis_url", "ns")}
    given["log_format"] = log_format.value
    settings = build_settings(
        redis_url,
        ns,
        **given,
        plugins=trusted(plugins),
        heartbeat_file=os.environ.get("STREAMCALC_HEARTBEAT_FILE", ""),
        **_retention(retain),
    )
    configure_logging(log_format.value, log_level.value)
    if processes > 1:
        from streamcalc.supervisor import supervise

        raise typer.Exit(supervise(settings, processes, log_level.value))
    _run_worker(settings)


#: The settings a worker option may set as it is, by name (plugins and --retain are parsed).
_SETTINGS = frozenset(Settings.__struct_fields__) - {"plugins", "retain_ms", "retain_len"}


def _retention(text: str | None) -> dict[str, int]:
    """``--retain``: a bare whole number is a length, anything else an age with its unit."""
    if text is None:
        return {}
    if text.strip().isdigit():
        return {"retain_len": int(text)}
    return {"retain_ms": duration(text, "--retain")}


def _run_worker(settings: Settings) -> None:
    from streamcalc.worker import Worker, tune_gc

    w = Worker(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        w.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.metrics_port is not None:
        from streamcalc.metrics import serve

        serve(settings.metrics_port, w.health, host=settings.metrics_host)
    tune_gc()
    w.run()
