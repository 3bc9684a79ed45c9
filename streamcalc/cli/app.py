"""The ``streamcalc`` typer app: every command from its own module, in the order help lists."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
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


def _new_app() -> typer.Typer:
    """The ``streamcalc`` group, its options and no command yet."""
    new = typer.Typer(
        name="streamcalc",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        # Plain help, no colours or boxes: quick to start, and readable in any terminal or pipe.
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    new.callback()(streamcalc)
    return new


def _print_version(given: bool) -> None:
    if given:
        from importlib.metadata import version

        typer.echo(f"streamcalc {version('streamcalc')}")
        raise typer.Exit()


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


#: Commands run in shell loops, one process a call: each starts as a group of its own.
QUICK: dict[str, Callable[..., None]] = {"send": send, "values": values}


def app_for(args: list[str]) -> typer.Typer:
    """The app that runs command line ``args``: for a :data:`QUICK` command, a group of it alone.

    Before it runs a command, typer makes the parameters of every command (from
    their annotations): of ``send`` what is left to start once its imports are
    done, most of it. The group's one flag (``--cluster``) may come first; help,
    completion, any other command get the whole app.
    """
    words = list(itertools.dropwhile(lambda word: word == "--cluster", args))
    if not words or words[0] not in QUICK or os.environ.get("_STREAMCALC_COMPLETE"):
        return app
    quick = _new_app()
    quick.command(words[0])(QUICK[words[0]])
    return quick


app = _new_app()
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
