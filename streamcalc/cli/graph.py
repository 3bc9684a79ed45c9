"""``streamcalc graph check|load|show``: the dependency graph, offline or in Redis."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamcalc.cli.helpers import build_settings, redis_client
from streamcalc.cli.options import GraphFormat, Namespace, RedisUrl, choice_option, option, trusted
from streamcalc.cli.options import Plugins as PluginsOption
from streamcalc.errors import StreamcalcError
from streamcalc.keys import Keys
from streamcalc.settings import DEFAULT_NS, DEFAULT_REDIS_URL

if TYPE_CHECKING:
    from streamcalc.graph.plugins import PluginPolicy

app = typer.Typer(help="Check, load and show the dependency graph.", no_args_is_help=True)

GraphFile = Annotated[Path, typer.Argument(metavar="FILE", help="Graph file (TOML).")]


@app.command("check")
def graph_check(file: GraphFile, plugins: PluginsOption = "") -> None:
    """Check a graph file without Redis.

    Prints the inputs (declared in [inputs], or inferred: the arguments no node
    defines) and warns about inferred inputs that look like typos of other
    nodes. Plugins are imported only from --plugins modules (then each must
    resolve).
    """
    from streamcalc.graph import parse_graph_file
    from streamcalc.graph.validate import input_warnings

    graph = parse_graph_file(file, _policy(plugins))
    for warning in (*graph.warnings, *input_warnings(graph)):
        typer.echo(f"{file}: warning: {warning}", err=True)
    typer.echo(f"{file}: ok ({len(graph.nodes)} derived nodes, {len(graph.inputs)} inputs)")
    how = "inferred" if graph.declared_inputs is None else "declared"
    typer.echo(f"inputs ({how}): {', '.join(sorted(graph.inputs)) or '-'}")


def _policy(plugins: str) -> PluginPolicy:
    """Import nothing, unless told which modules to trust: then they must resolve."""
    from streamcalc.graph.plugins import PluginPolicy

    modules = trusted(plugins)
    return PluginPolicy(modules, load=True) if modules else PluginPolicy()


@app.command("load")
def graph_load(
    file: GraphFile,
    partitions: Annotated[
        int | None,
        option(
            "--partitions",
            min=1,
            max=1024,
            help="Partitions of the namespace (only for a new or empty one).",
        ),
    ] = None,
    plugins: PluginsOption = "",
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Check a graph file and store it: running workers pick it up.

    The stored graph is replaced atomically in every partition; loading the
    graph the namespace already holds changes nothing.
    """
    from streamcalc.graph import parse_graph_file
    from streamcalc.store import graph_version, partition_count, store_graph

    graph = parse_graph_file(file, _policy(plugins))  # before Redis is touched
    client = redis_client(build_settings(redis_url, ns))
    before = graph_version(client, Keys(ns))
    version = store_graph(client, ns, graph, partitions=partitions)
    count = partition_count(client, ns)
    where = f" ({count} partitions)" if count > 1 else ""
    if str(version) == before:
        typer.echo(f"{file}: namespace {ns!r}{where} holds this graph already: version {version}")
        return
    typer.echo(f"loaded {file} into namespace {ns!r}{where}: graph version {version}")


def partition(
    key: Annotated[str, typer.Argument(metavar="KEY", help="An entry's @key.")],
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Print a key's partition and its input stream.

    For producers that XADD directly: "3 sc:{default:3}:in".
    """
    from streamcalc.keys import Namespace as Layout
    from streamcalc.keys import check_key, partition_of
    from streamcalc.store import partition_count

    check_key(key)
    count = partition_count(redis_client(build_settings(redis_url, ns)), ns)
    p = partition_of(key, count)
    typer.echo(f"{p} {Layout(ns).partition(p, count).input}")


@app.command("show")
def graph_show(
    file: Annotated[
        Path | None, typer.Argument(help="Graph file (TOML) to show instead of the stored graph.")
    ] = None,
    fmt: Annotated[GraphFormat, choice_option("--format", "How to print it.")] = GraphFormat.text,
    plugins: PluginsOption = "",
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    ns: Namespace = DEFAULT_NS,
) -> None:
    """Print the stored graph, or a graph file's (offline: Redis is not touched)."""
    from streamcalc.graph import parse_graph_file, render
    from streamcalc.store import fetch_graph

    if file is not None:
        typer.echo(render(parse_graph_file(file, _policy(plugins)), fmt.value).rstrip("\n"))
        return
    settings = build_settings(redis_url, ns)
    _, graph = fetch_graph(redis_client(settings), Keys(ns))
    if graph is None:
        raise StreamcalcError(f"no graph loaded in namespace {ns!r} at {settings.safe_url}")
    typer.echo(render(graph, fmt.value).rstrip("\n"))
