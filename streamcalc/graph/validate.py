"""Checks on resolved node definitions, and the graph's shape: cycles and topological ranks.

Each check raises a one-line GraphError naming the source and the node. The
same checks serve a graph file and a graph read back from Redis.
"""

from __future__ import annotations

from collections.abc import Mapping

from streamcalc.durations import MAX_MS
from streamcalc.graph.expr import CompiledExpression, ExpressionError, builtin_formula
from streamcalc.graph.expr import compile_expression as _compile
from streamcalc.graph.functions import BUILTINS, Formula
from streamcalc.graph.functions import suggest_builtin as _suggest
from streamcalc.graph.model import (
    MAX_NAME_LENGTH,
    MODES,
    NodeDef,
    graph_error,
    valid_node_name,
)
from streamcalc.graph.plugins import NO_PLUGINS, PluginPolicy, UnknownFunction

# Slot timestamps are compared in Lua, whose numbers are doubles: stay exact.
MAX_TTL_MS = MAX_MS

_NAME_RULE = (
    f"letters, digits and _, not starting with a digit, optionally dotted (a.b.c), "
    f"at most {MAX_NAME_LENGTH} characters"
)


def check_name(source: str, name: str) -> None:
    """Refuse a defined node name that is not a valid node name."""
    if not valid_node_name(name):
        raise graph_error(source, f"bad node name ({_NAME_RULE})", _quoted(name))


def compile_expression(source: str, node: str, text: str) -> CompiledExpression:
    """Compile ``node``'s expression, turning an ExpressionError into a GraphError."""
    try:
        return _compile(text)
    except ExpressionError as exc:
        shown = text.strip()
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise graph_error(source, f"bad expression {shown!r}: {exc}", node) from None


def check_node(source: str, node: NodeDef, plugins: PluginPolicy = NO_PLUGINS) -> Formula:
    """Check one definition completely and compile its formula (plugins as ``plugins`` allows)."""
    name = node.name
    check_name(source, name)
    if not 0 <= node.ttl_ms <= MAX_TTL_MS:
        raise graph_error(source, f"bad ttl {node.ttl_ms}ms: must be 0 (never) or positive", name)
    if node.mode not in MODES:
        raise graph_error(source, f"bad mode {node.mode!r}: must be consume or latest", name)
    if node.fn is not None and node.expr is not None:
        raise graph_error(source, "both fn and expr given (a node has exactly one)", name)
    for arg in node.args:
        if not valid_node_name(arg):
            raise graph_error(source, f"bad argument name {_quoted(arg)} ({_NAME_RULE})", name)
    if node.fn is not None:
        return _fn_formula(source, node, node.fn, plugins)
    if node.expr is not None:
        compiled = compile_expression(source, name, node.expr)
        if compiled.args != node.args:
            raise graph_error(source, "args do not match the expression's node names", name)
        return compiled.formula
    raise graph_error(source, "neither fn nor expr given (a node has exactly one)", name)


def _fn_formula(source: str, node: NodeDef, fn: str, plugins: PluginPolicy) -> Formula:
    if not node.args:
        raise graph_error(source, f"fn {fn} with empty args", node.name)
    builtin = BUILTINS.get(fn)
    if builtin is not None:
        problem = builtin.arity_problem(len(node.args))
        if problem is not None:
            raise graph_error(source, f"wrong argument count: {problem}", node.name)
        return builtin_formula(builtin, len(node.args))
    if ":" not in fn:
        raise graph_error(source, f"unknown function {fn}{_suggest(fn)}", node.name)
    try:
        return plugins.formula(fn)
    except UnknownFunction as exc:
        raise graph_error(source, str(exc), node.name) from None


def check_acyclic(source: str, nodes: Mapping[str, NodeDef]) -> None:
    """Refuse a dependency cycle, naming it from its alphabetically first node."""
    cycle = find_cycle(nodes)
    if cycle is not None:
        raise graph_error(source, "cycle " + " -> ".join(cycle), cycle[0])


def find_cycle(nodes: Mapping[str, NodeDef]) -> list[str] | None:
    """A cycle as ``[A, B, ..., A]`` (A depends on B ...), or None. Deterministic."""
    on_path: dict[str, int] = {}  # node -> index in path, while being explored
    done: set[str] = set()
    for root in sorted(nodes):
        if root in done:
            continue
        path = [root]
        on_path[root] = 0
        # Iterative DFS: a long chain of nodes must not hit the recursion limit.
        pending = [iter(nodes[root].args)]
        while pending:
            for arg in pending[-1]:
                if arg in on_path:
                    return _rotate(path[on_path[arg] :])
                if arg in nodes and arg not in done:
                    on_path[arg] = len(path)
                    path.append(arg)
                    pending.append(iter(nodes[arg].args))
                    break
            else:
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
                pending.pop()
    return None


def _rotate(cycle: list[str]) -> list[str]:
    start = cycle.index(min(cycle))
    ring = cycle[start:] + cycle[:start]
    return [*ring, ring[0]]


def rank_nodes(nodes: Mapping[str, NodeDef]) -> dict[str, int]:
    """Topological rank of each derived node: 0 when all its args are inputs, else
    one more than its highest-ranked derived argument. The graph must be acyclic."""
    rank: dict[str, int] = {}
    for root in sorted(nodes):
        stack = [root]
        while stack:
            name = stack[-1]
            if name in rank:
                stack.pop()
                continue
            derived = [arg for arg in nodes[name].args if arg in nodes]
            unranked = [arg for arg in derived if arg not in rank]
            if unranked:
                stack.extend(unranked)
                continue
            rank[name] = 1 + max((rank[arg] for arg in derived), default=-1)
            stack.pop()
    return rank


def _quoted(name: str) -> str:
    # A valid name prints as itself; anything else is quoted so odd characters show.
    if valid_node_name(name):
        return name
    return repr(name if len(name) <= 64 else name[:61] + "...")


#: Most derived nodes a graph may have: one wave fires each at most once, so this also
#: bounds the values one entry can make one commit write (about 20 ms of Redis).
MAX_DERIVED_NODES = 10_000
#: Most arguments one node may take.
MAX_ARGS = 256
#: ``graph check`` warns from this share of a limit on.
_WARN_AT = 0.8


def check_size(source: str, nodes: Mapping[str, NodeDef]) -> None:
    """Refuse a graph over the size limits (derived nodes, arguments of a node)."""
    if len(nodes) > MAX_DERIVED_NODES:
        raise graph_error(
            source, f"{len(nodes)} derived nodes: at most {MAX_DERIVED_NODES} (split the graph)"
        )
    for name, node in nodes.items():
        if len(node.args) > MAX_ARGS:
            raise graph_error(source, f"{len(node.args)} arguments: at most {MAX_ARGS}", name)


def size_warnings(nodes: Mapping[str, NodeDef]) -> tuple[str, ...]:
    """One line for each limit the graph comes near (80 % of it or more)."""
    found: list[str] = []
    if len(nodes) >= _WARN_AT * MAX_DERIVED_NODES:
        found.append(f"{len(nodes)} derived nodes, near the limit of {MAX_DERIVED_NODES}")
    for name, node in nodes.items():
        if len(node.args) >= _WARN_AT * MAX_ARGS:
            found.append(f"node {name}: {len(node.args)} arguments, near the limit of {MAX_ARGS}")
    return tuple(found)
