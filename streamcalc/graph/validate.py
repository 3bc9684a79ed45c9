"""Checks on resolved node definitions, and the graph's shape: cycles and topological ranks.

Each check raises a one-line GraphError naming the source and the node. The
same checks serve a graph file and a graph read back from Redis.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from streamcalc.graph.compiled import Graph

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


def check_inputs(
    source: str, nodes: Mapping[str, NodeDef], inputs: frozenset[str], declared: frozenset[str]
) -> None:
    """With an ``[inputs]`` table: every argument is a derived node or a declared input."""
    for name in sorted(declared):
        if not valid_node_name(name):
            raise graph_error(source, f"bad input name {_quoted(name)} in [inputs] ({_NAME_RULE})")
        if name in nodes:
            raise graph_error(source, "declared in [inputs] but defined in [nodes]", name)
    for name in sorted(nodes):
        for arg in nodes[name].args:
            if arg in inputs and arg not in declared:
                close = difflib.get_close_matches(arg, [*declared, *nodes], n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise graph_error(
                    source,
                    f"argument {arg} is neither a node nor declared in [inputs]{hint}",
                    name,
                )


def input_warnings(graph: Graph) -> tuple[str, ...]:
    """What ``graph check`` warns about the inputs: undeclared names one edit away from
    another node's (``total_ot`` next to ``total_out``), declared ones nothing uses."""
    used = frozenset(graph.parents) - frozenset(graph.nodes)
    if graph.declared_inputs is not None:
        return tuple(
            f"input {name} is declared in [inputs] but no node uses it"
            for name in sorted(graph.declared_inputs - used)
        )
    derived = frozenset(graph.nodes)
    found: list[str] = []
    for name, other in near_misses(used, derived):
        kind = "node" if other in derived else "input"
        found.append(
            f"input {name} is close to {kind} {other}: a typo? "
            "(declare the inputs in [inputs] to make an unknown one an error)"
        )
    return tuple(found)


def near_misses(inputs: frozenset[str], derived: frozenset[str]) -> list[tuple[str, str]]:
    """(input, other node) pairs one edit apart: a letter added, dropped, changed or two
    swapped. Changes of digits only (``dev1``, ``dev2``) are not typos, nor is one changed
    letter between two inputs (``line_a``, ``line_b``): families of sensors look like that.
    Nor are edits of short names (``A``, ``B``; ``tmp``, ``tap``).

    Symmetric deletes keep this linear in the graph's size (no all-pairs comparison).
    """
    index: dict[str, set[str]] = {}
    for name in inputs | derived:
        for variant in _deletions(name):
            index.setdefault(variant, set()).add(name)
    pairs: list[tuple[str, str]] = []
    for name in sorted(inputs):
        candidates = set().union(*(index.get(v, set()) for v in _deletions(name)))
        for other in sorted(candidates - {name}):
            if other in inputs and other < name:
                continue  # each pair of inputs once
            edit = _one_edit(name, other)
            if edit is None or edit[1].isdigit():
                continue
            if min(len(name), len(other)) < (4 if edit[0] == "change" else 3):
                continue  # one letter of a short name is no typo: A, B; C, D
            if edit[0] == "change" and other in inputs:
                continue
            pairs.append((name, other))
    return pairs


def _deletions(name: str) -> set[str]:
    return {name, *(name[:i] + name[i + 1 :] for i in range(len(name)))}


def _one_edit(a: str, b: str) -> tuple[str, str] | None:
    """(kind, the characters that differ) when ``a`` and ``b`` are one edit apart, else None."""
    if len(a) > len(b):
        a, b = b, a
    start = 0
    while start < len(a) and a[start] == b[start]:
        start += 1
    if len(b) == len(a) + 1:
        return ("add", b[start]) if a[start:] == b[start + 1 :] else None
    if len(a) != len(b) or start == len(a):
        return None
    if a[start + 1 :] == b[start + 1 :]:
        return "change", a[start] + b[start]
    swapped = a[start : start + 2] == b[start : start + 2][::-1]
    if swapped and a[start + 2 :] == b[start + 2 :]:
        return "swap", a[start : start + 2]
    return None
