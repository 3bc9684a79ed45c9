"""Renderings of a graph for people and tools: text, JSON, Graphviz dot and Mermaid."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from streamcalc.errors import UsageError
from streamcalc.graph.compiled import Graph
from streamcalc.graph.model import NodeDef, one_line

FORMATS = ("text", "json", "dot", "mermaid")


def render(graph: Graph, fmt: str) -> str:
    """Render ``graph`` as ``text``, ``json``, ``dot`` or ``mermaid``; else raise UsageError."""
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise UsageError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
    return renderer(graph)


def format_ttl(ttl_ms: int) -> str:
    """``60s``, ``250ms``, or ``never`` for 0."""
    if ttl_ms == 0:
        return "never"
    return f"{ttl_ms // 1000}s" if ttl_ms % 1000 == 0 else f"{ttl_ms}ms"


def formula(node: NodeDef) -> str:
    """``A = add(C, D, E)`` or ``B = A * F``: the node's definition on one line."""
    if node.expr is not None:
        return f"{node.name} = {one_line(node.expr)}"
    return f"{node.name} = {node.fn}({', '.join(node.args)})"


def _text(graph: Graph) -> str:
    formulas = [formula(graph.nodes[name]) for name in graph.order]
    width = max(map(len, formulas))
    lines = [
        f"{text:<{width}}   ttl={format_ttl(node.ttl_ms)} mode={node.mode}"
        for text, node in zip(formulas, (graph.nodes[name] for name in graph.order), strict=True)
    ]
    lines.append("inputs: " + ", ".join(sorted(graph.inputs)))
    return "\n".join(lines)


def _json(graph: Graph) -> str:
    nodes: dict[str, dict[str, object]] = {}
    for name, node in graph.nodes.items():
        entry: dict[str, object] = {
            "args": list(node.args),
            "ttl_ms": node.ttl_ms,
            "mode": node.mode,
        }
        if node.fn is not None:
            entry["fn"] = node.fn
        else:
            entry["expr"] = node.expr
        nodes[name] = entry
    document = {"nodes": nodes, "inputs": sorted(graph.inputs)}
    return msgspec.json.format(msgspec.json.encode(document, order="sorted"), indent=2).decode()


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot(graph: Graph) -> str:
    return _diagram(
        graph,
        ["digraph streamcalc {", "  rankdir=LR;", "  node [shape=box];"],
        lambda name: f"  {_dot_quote(name)} [shape=ellipse];",
        lambda name, label: f"  {_dot_quote(name)} [label={_dot_quote(label)}];",
        lambda arg, name, position: (
            f'  {_dot_quote(arg)} -> {_dot_quote(name)} [label="{position}"];'
        ),
        ["}"],
    )


def _mermaid_quote(text: str) -> str:
    # Inside a quoted Mermaid label only the double quote needs an entity.
    return '"' + text.replace('"', "#quot;") + '"'


def _mermaid(graph: Graph) -> str:
    # Mermaid ids cannot hold dots (and "end" is a keyword): number the nodes instead.
    ids = {name: f"n{i}" for i, name in enumerate([*sorted(graph.inputs), *graph.order])}
    return _diagram(
        graph,
        ["flowchart LR"],
        lambda name: f"  {ids[name]}([{_mermaid_quote(name)}])",
        lambda name, label: f"  {ids[name]}[{_mermaid_quote(label)}]",
        lambda arg, name, position: f'  {ids[arg]} -->|"{position}"| {ids[name]}',
        [],
    )


def _diagram(
    graph: Graph,
    head: list[str],
    input_line: Callable[[str], str],
    node_line: Callable[[str, str], str],
    edge_line: Callable[[str, str, int], str],
    tail: list[str],
) -> str:
    """Inputs, then derived nodes by rank with their formulas, then one edge per argument."""
    lines = [*head, *(input_line(name) for name in sorted(graph.inputs))]
    lines += [node_line(name, formula(graph.nodes[name])) for name in graph.order]
    for name in graph.order:
        for position, arg in enumerate(graph.nodes[name].args):
            lines.append(edge_line(arg, name, position))
    return "\n".join([*lines, *tail])


_RENDERERS: dict[str, Callable[[Graph], str]] = {
    "text": _text,
    "json": _json,
    "dot": _dot,
    "mermaid": _mermaid,
}
