"""``streamcalc ui``: serve the live page of a namespace until Ctrl-C."""

from __future__ import annotations

from typing import Annotated

import typer

from streamcalc.cli.options import Namespace, RedisUrl, option
from streamcalc.settings import DEFAULT_GROUP, DEFAULT_NS, DEFAULT_REDIS_URL

#: What the page's address options default to (kept here so that --help needs no import).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700

Host = Annotated[
    str,
    option("--host", help="Interface to listen on (0.0.0.0: every one; the page has no login)."),
]
Port = Annotated[
    int, option("--port", help="Port to listen on (0: any free one).", min=0, max=65535)
]
AllowActions = Annotated[
    bool,
    option(
        "--allow-actions",
        help="Let the page retry and purge dead letters (it is read-only without).",
    ),
]


def ui(
    host: Host = DEFAULT_HOST,
    port: Port = DEFAULT_PORT,
    allow_actions: AllowActions = False,
    group: Annotated[str, option("--group", help="Consumer group.")] = DEFAULT_GROUP,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Serve the live page: the graph, its values, workers, lag and dead letters, in a browser.

    The JSON the page is built from is under /api/ (see docs/ui.md). Stops on Ctrl-C.
    """
    from streamcalc.cli.helpers import build_settings, redis_client
    from streamcalc.logs import configure_logging
    from streamcalc.ui.server import listen, serve

    settings = build_settings(redis_url, ns)
    client = redis_client(settings)
    sock = listen(host, port)
    configure_logging("auto", "warning")
    serve(
        client,
        settings.ns,
        sock,
        group=group,
        allow_actions=allow_actions,
        redis_url=settings.redis_url,
        on_ready=lambda url: typer.echo(
            f"streamcalc ui: namespace {settings.ns!r} on {settings.safe_url}, "
            f"{'actions allowed' if allow_actions else 'read-only'}: {url}  (Ctrl-C stops)"
        ),
    )
