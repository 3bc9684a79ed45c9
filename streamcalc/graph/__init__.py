"""The graph: its TOML file, validation, safe expressions, node functions and renderings.

Modules, one concern each: ``model`` (names, NodeDef), ``functions`` (element-wise
arithmetic, built-ins), ``plugins`` (``module:callable`` functions and their
timeout), ``expr`` (expression compiler), ``quoting`` (how node names are
written in expressions), ``validate`` (per-node checks,
cycles, ranks), ``compiled`` (the Graph and its node functions), ``parse``
(TOML), ``render`` (text/json/dot/mermaid).

A derived node's ``fn`` or ``expr`` compiles to a *formula* (built from
expression *terms*); the Graph wraps it into the node's *function*, which
checks the argument count, turns every failure into a FunctionError and
normalizes the result; a wave fires ``graph.function(name)``.
"""

from streamcalc.graph.compiled import Graph
from streamcalc.graph.functions import BUILTINS
from streamcalc.graph.model import NodeDef, valid_node_name
from streamcalc.graph.parse import parse_duration_ms, parse_graph_file, parse_graph_text
from streamcalc.graph.render import FORMATS, render

__all__ = [
    "BUILTINS",
    "FORMATS",
    "Graph",
    "NodeDef",
    "parse_duration_ms",
    "parse_graph_file",
    "parse_graph_text",
    "render",
    "valid_node_name",
]
