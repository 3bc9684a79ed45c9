"""The ``streamcalc`` typer app: every command from its own module, in the order help lists."""

from __future__ import annotations

from typing import Annotated

import typer

from streamcalc.cli.dead import app as dead_app
from streamcalc.cli.demo import demo
from streamcalc.cli.explain import explain
from streamcalc.cli.graph import app as graph_app
from streamcalc.cli.graph import partition
from streamcalc.cli.helpers import FORCE_CLUSTER
from streamcalc.cli.history import history, tail
from streamcalc.cli.options import option
from streamcalc.cli.send import send
from streamcalc.cli.status import status
from streamcalc.cli.trim import trim
from streamcalc.cli.ui import ui
from streamcalc.cli.values import values
from streamcalc.cli.worker import worker

app = typer.Typer(
    name="streamcalc",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help, no colours or boxes: quick to start, and readable in any terminal or pipe.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(given: bool) -> None:
    if given:
        from importlib.metadata import version

        typer.echo(f"streamcalc {version('streamcalc')}")
        raise typer.Exit()


@app.callback()
def streamcalc(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
    cluster: Annotated[
        bool,
        option(
            "--cluster",
            help="Redis is a Redis Cluster: reach each partition's slot owner "
            "(found out from the server by itself otherwise).",
        ),
    ] = False,
) -> None:
    """A reactive computation engine on Redis Streams.

    Producers append sensor readings to a stream; workers recompute the
    derived values of a graph of formulas and append each to an output stream.
    """
    FORCE_CLUSTER["on"] = cluster


app.command("send")(send)
app.command("partition")(partition)
app.command("worker")(worker)
app.command("values")(values)
app.command("explain")(explain)
app.command("demo")(demo)
app.command("status")(status)
app.command("tail")(tail)
app.command("history")(history)
app.command("trim")(trim)
app.command("ui")(ui)
app.add_typer(graph_app, name="graph")
app.add_typer(dead_app, name="dead")
