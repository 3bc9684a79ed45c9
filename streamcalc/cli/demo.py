"""``streamcalc demo``: a worked example end to end, on an embedded Redis when none is given."""

from __future__ import annotations

from typing import Annotated

import typer

from streamcalc.cli.helpers import check_namespace
from streamcalc.cli.options import option


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
) -> None:
    """Run a worked example end to end, on a private Redis.

    It loads A = C + D + E and B = A * F (values valid 60 s), sends four
    entries and prints each value as it fires: a reading that arrives with
    its partner, a glitch that never happens, a manual override.
    """
    from streamcalc.demo import run_demo
    from streamcalc.logs import configure_logging

    configure_logging("auto", "warning")
    run_demo(redis_url, check_namespace(ns), echo=typer.echo)
