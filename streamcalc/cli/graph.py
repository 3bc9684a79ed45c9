"""``streamcalc graph check|load|show``: the dependency graph, offline or in Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamcalc.cli.helpers import build_settings, redis_client
from streamcalc.cli.options import Namespace, RedisUrl, option
from streamcalc.errors import StreamcalcError, UsageError
from streamcalc.keys import Keys
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL

app = typer.Typer(help="Check, load and show the dependency graph.", no_args_is_help=True)

GraphFile = Annotated[Path, typer.Argument(help="Graph file (TOML).")]


@app.command("check")
def graph_check(file: GraphFile) -> None:
    """Validate a graph file offline."""
    from streamcalc.graph import parse_graph_file

    graph = parse_graph_file(file)
    typer.echo(f"{file}: ok ({len(graph.nodes)} derived nodes, {len(graph.inputs)} inputs)")


@app.command("load")
def graph_load(
    file: GraphFile,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Validate a graph file and replace the stored graph atomically."""
    from streamcalc.graph import parse_graph_file
    from streamcalc.store import store_graph

    graph = parse_graph_file(file)  # before Redis is touched
    version = store_graph(redis_client(build_settings(redis_url, ns)), Keys(ns), graph)
    typer.echo(f"loaded {file} into namespace {ns!r}: graph version {version}")


@app.command("show")
def graph_show(
    fmt: Annotated[str, option("--format", help="text, json, dot or mermaid.")] = "text",
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Print the stored graph."""
    from streamcalc.graph import render
    from streamcalc.store import fetch_graph

    if fmt not in ("text", "json", "dot", "mermaid"):
        raise UsageError(f"unknown format {fmt!r}: use text, json, dot or mermaid")
    settings = build_settings(redis_url, ns)
    _, graph = fetch_graph(redis_client(settings), Keys(ns))
    if graph is None:
        raise StreamcalcError(f"no graph loaded in namespace {ns!r} at {settings.safe_url}")
    typer.echo(render(graph, fmt).rstrip("\n"))
