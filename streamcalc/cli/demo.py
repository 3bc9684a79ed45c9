"""``streamcalc demo``: the classic A = C + D + E, B = A * F end to end, on an embedded Redis."""

from __future__ import annotations

from typing import Annotated

import typer

from streamcalc.cli.helpers import check_namespace
from streamcalc.cli.options import option
from streamcalc.cli.ui import DEFAULT_HOST, DEFAULT_PORT


def demo(
    # Its own env vars: a STREAMCALC_REDIS_URL or STREAMCALC_NS meant for a real
    # deployment must never make the demo reset a namespace there.
    redis_url: Annotated[
        str | None,
        option(
            "--redis-url",
            scope="demo",
            help="Use this Redis instead of a private embedded one.",
        ),
    ] = None,
    ns: Annotated[
        str, option("--ns", scope="demo", help="Namespace the demo uses (it is reset).")
    ] = "demo",
    ui: Annotated[
        bool,
        option(
            "--ui",
            scope="demo",
            help="Keep a simulated plant running and serve the live page (Ctrl-C stops).",
        ),
    ] = False,
    host: Annotated[
        str, option("--host", scope="demo", help="With --ui: the interface the page listens on.")
    ] = DEFAULT_HOST,
    port: Annotated[
        int,
        option("--port", scope="demo", help="With --ui: the page's port (0: any free one).", min=0),
    ] = DEFAULT_PORT,
) -> None:
    """Run the example A = C + D + E, B = A * F end to end, on an embedded Redis.

    With --ui: a simulated plant of a few boilers instead, with the live page.
    """
    from streamcalc.logs import configure_logging

    # The live demo's dead letters are meant to be seen on the page, not as log lines.
    configure_logging("auto", "error" if ui else "warning")
    if ui:
        from streamcalc.demo import run_live_demo
        from streamcalc.ui.server import listen

        sock = listen(host, port)  # before anything starts: a busy port is a one-line error
        run_live_demo(redis_url, check_namespace(ns), sock, echo=typer.echo)
        return
    from streamcalc.demo import run_demo

    run_demo(redis_url, check_namespace(ns), echo=typer.echo)
