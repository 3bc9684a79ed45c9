"""The graph package: file format, validation, expressions, functions, vectors, renderings."""

from __future__ import annotations

import ast
import contextlib
import math
import operator
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import model
import msgspec
import pytest
from formulas import formula_trees
from hypothesis import given, settings
from hypothesis import strategies as st
from model import Tree as FormulaTree

from streamcalc.errors import FunctionError, GraphError, UsageError
from streamcalc.graph import (
    BUILTINS,
    FORMATS,
    Graph,
    NodeDef,
    parse_duration_ms,
    parse_graph_file,
    parse_graph_text,
    render,
    valid_node_name,
)
from streamcalc.graph.plugins import PluginPolicy
from streamcalc.values import Value

SOURCE = "g.toml"

SEED = """
[nodes.A]
fn = "add"
args = ["C", "D", "E"]

[nodes.B]
expr = "A * F"
ttl = "30s"
mode = "latest"
"""


#: The tests' own plugin module, trusted and imported.
TRUST = PluginPolicy(("graph_plugins",), load=True)


def parse(text: str, plugins: PluginPolicy = TRUST) -> Graph:
    return parse_graph_text(text, SOURCE, plugins)


def node_toml(name: str, body: str) -> str:
    """A ``[nodes."name"]`` table with ``body`` as its lines."""
    return f'[nodes."{name}"]\n{body}\n'


def toml_string(text: str) -> str:
    # A JSON string is a TOML basic string.
    return msgspec.json.encode(text).decode()


def expr_graph(expr: str) -> Graph:
    return parse(node_toml("R", f"expr = {toml_string(expr)}"))


def fn_graph(fn: str, *args: str) -> Graph:
    quoted = ", ".join(f'"{a}"' for a in args)
    return parse(node_toml("R", f'fn = "{fn}"\nargs = [{quoted}]'))


def graph_error(text: str) -> str:
    """The message of the GraphError that parsing ``text`` raises; it must be one line."""
    with pytest.raises(GraphError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}: ")
    return message


def function_error(call: Callable[[], object]) -> str:
    with pytest.raises(FunctionError) as info:
        call()
    message = str(info.value)
    assert message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- the seed graph


def test_seed_graph_shape() -> None:
    graph = parse(SEED)
    assert set(graph.nodes) == {"A", "B"}
    assert graph.nodes["A"] == NodeDef("A", ("C", "D", "E"), fn="add")
    assert graph.nodes["B"] == NodeDef("B", ("A", "F"), expr="A * F", ttl_ms=30_000, mode="latest")
    assert graph.inputs == frozenset({"C", "D", "E", "F"})
    assert graph.parents["C"] == (("A", 0),)
    assert graph.parents["E"] == (("A", 2),)
    assert graph.parents["A"] == (("B", 0),)
    assert graph.parents["F"] == (("B", 1),)
    assert "B" not in graph.parents
    assert graph.rank == {"A": 0, "B": 1}
    assert graph.order == ("A", "B")
    assert graph.downstream("C") == {"A", "B"}
    assert graph.downstream("F") == {"B"}
    assert graph.downstream("B") == frozenset()
    assert graph.downstream("nowhere") == frozenset()


def test_seed_graph_values() -> None:
    graph = parse(SEED)
    total = graph.evaluate("A", [4, 5, 6])
    assert total == 15
    assert type(total) is int
    assert graph.evaluate("B", [15, 3]) == 45
    assert graph.evaluate("A", [1, 1, 1]) == 3


def test_defaults_apply_and_nodes_override() -> None:
    graph = parse('[defaults]\nttl = 5\nmode = "latest"\n' + SEED)
    assert (graph.nodes["A"].ttl_ms, graph.nodes["A"].mode) == (5000, "latest")
    assert graph.nodes["B"].ttl_ms == 30_000
    assert parse("[defaults]\nttl = 0\n" + SEED).nodes["A"].ttl_ms == 0


def test_node_used_twice_gives_two_slots() -> None:
    graph = parse(
        node_toml("X", 'fn = "add"\nargs = ["C", "C", "D"]') + node_toml("Y", 'expr = "C * C"')
    )
    assert graph.parents["C"] == (("X", 0), ("X", 1), ("Y", 0))
    assert graph.nodes["Y"].args == ("C",)
    assert graph.evaluate("X", [2, 2, 1]) == 5
    assert graph.evaluate("Y", [3]) == 9


def test_ranks_respect_dependencies() -> None:
    graph = parse(
        node_toml("a", 'expr = "x + 1"')
        + node_toml("b", 'expr = "a + x"')
        + node_toml("c", 'fn = "add"\nargs = ["b", "a", "y"]')
        + node_toml("d", 'expr = "y * 2"')
    )
    assert graph.rank == {"a": 0, "b": 1, "c": 2, "d": 0}
    for name, node in graph.nodes.items():
        for arg in node.args:
            if arg in graph.nodes:
                assert graph.rank[arg] < graph.rank[name]
    assert graph.order == ("a", "d", "b", "c")
    assert graph.downstream("x") == {"a", "b", "c"}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[nodes.A\nfn = 1", "g.toml: TOML syntax error"),
        ("", "g.toml: no nodes defined"),
        ("[defaults]\nttl = 5\n", "g.toml: no nodes defined"),
        ("[nodes]\n", "g.toml: no nodes defined"),
        ("nodes = 5\n", "g.toml: nodes must be a table"),
        ("[graph]\n" + SEED, "g.toml: unknown top-level key 'graph'"),
        ("[defaults]\nttls = 5\n" + SEED, "g.toml: unknown key 'ttls' in [defaults]"),
        ('[defaults]\nttl = "5x"\n' + SEED, "g.toml: bad ttl '5x' in [defaults]: unknown unit"),
        ('[defaults]\nmode = "eager"\n' + SEED, "g.toml: bad mode 'eager' in [defaults]"),
    ],
)
def test_file_level_errors(text: str, expected: str) -> None:
    assert graph_error(text).startswith(expected)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('fn = "add"\narg = ["C"]', "unknown key 'arg'"),
        ('fn = "add"\nargs = ["C"]\nexpr = "C"', "both fn and expr"),
        ('ttl = "5s"', "neither fn nor expr"),
        ('fn = "add"', "fn add without args"),
        ('fn = "add"\nargs = []', "fn add with empty args"),
        ('expr = "C + D"\nargs = ["C", "D"]', "args given with expr"),
        ('fn = 5\nargs = ["C"]', "invalid definition"),
        ('fn = "add"\nargs = ["C", 3]', "invalid definition"),
        ('fn = "ad"\nargs = ["C"]', "unknown function ad (did you mean add?)"),
        ('fn = "nope"\nargs = ["C"]', "unknown function nope"),
        ('fn = "sub"\nargs = ["C", "D", "E"]', "sub takes exactly 2 arguments, got 3"),
        ('fn = "div"\nargs = ["C"]', "div takes exactly 2 arguments, got 1"),
        ('fn = "abs"\nargs = ["C", "D"]', "abs takes exactly 1 argument, got 2"),
        ('fn = "neg"\nargs = ["C", "D"]', "neg takes exactly 1 argument, got 2"),
        ('fn = "clamp"\nargs = ["C", "D"]', "clamp takes exactly 3 arguments, got 2"),
        ('fn = "add"\nargs = ["C", "x-y"]', "bad argument name 'x-y'"),
        ('fn = "add"\nargs = ["a..b"]', "bad argument name 'a..b'"),
        ('fn = "add"\nargs = ["' + "x" * 129 + '"]', "bad argument name"),
        ('fn = "add"\nargs = ["C"]\nttl = -1', "bad ttl -1: negative"),
        ('fn = "add"\nargs = ["C"]\nttl = "5d"', "bad ttl '5d': unknown unit 'd'"),
        ('fn = "add"\nargs = ["C"]\nttl = "-5s"', "bad ttl '-5s': negative"),
        ('fn = "add"\nargs = ["C"]\nttl = "soon"', "bad ttl 'soon'"),
        ('fn = "add"\nargs = ["C"]\nttl = true', "bad ttl True"),
        ('fn = "add"\nargs = ["C"]\nttl = nan', "bad ttl nan: not finite"),
        ('fn = "add"\nargs = ["C"]\nttl = [1]', "bad ttl [1]"),
        ('fn = "add"\nargs = ["C"]\nttl = 0.0001', "shorter than 1ms"),
        ('fn = "add"\nargs = ["C"]\nmode = "eager"', "bad mode 'eager'"),
        ('fn = "add"\nargs = ["C"]\nmode = 1', "bad mode 1"),
    ],
)
def test_node_errors_name_the_node(body: str, expected: str) -> None:
    message = graph_error(node_toml("N", body))
    assert message.startswith(f"{SOURCE}: node N: "), message
    assert expected in message, message


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("C +", "syntax error"),
        ("", "empty expression"),
        ("1 + 2", "uses no nodes"),
        ("C + 'x'", "string literal is not allowed at column 5"),
        ("C + True", "True is not allowed"),
        ("C + None", "None is not allowed"),
        ("C + 1j", "complex literal"),
        ("C * 1e999", "is not finite"),
        ("C in D", "operator in is not allowed at column 1"),
        ("C < D not in E", "operator not in is not allowed"),
        ("C is not D", "operator is not is not allowed"),
        ("in * 2", "in is a Python keyword: write a node of that name in backquotes, `in`"),
        ("C + if", "if is a Python keyword"),
        ("dev1.in +", "syntax error: invalid syntax"),
        ("`1x` + C", "bad node name '1x' in backquotes at column 1"),
        ("`C + 1", "unclosed backquote at column 1"),
        ("dev1.in(C)", "call of dev1.in is not allowed"),
        ("`a` + 'x'", "string literal is not allowed at column 7"),
        ("dev1.in + 'x'", "string literal is not allowed at column 11"),
        ("where(C, D)", "where takes exactly 3 arguments, got 2"),
        ("sum(C, D)", "sum takes exactly 1 argument, got 2"),
        ("vmean()", "vmean takes exactly 1 argument, got 0"),
        ("~C", "operator ~ is not allowed"),
        ("C << 2", "operator << is not allowed"),
        ("C @ D", "operator @ is not allowed"),
        ("(C + D).real", "attribute access is not allowed"),
        ("C[0]", "subscript is not allowed"),
        ("(lambda: C)()", "call of an expression is not allowed"),
        ("lambda: C", "lambda is not allowed"),
        ("round(C, ndigits=2)", "keyword arguments are not allowed"),
        ("add(*C)", "starred expression is not allowed"),
        ("foo(C)", "unknown function foo"),
        ("__import__('os')", "unknown function __import__"),
        ("math.sqrt(C)", "call of math.sqrt is not allowed"),
        ("[C, D]", "list is not allowed"),
        ("(C, D)", "tuple is not allowed"),
        ("C if D else 1", "conditional expression is not allowed at column 1: use where("),
        ("(x := C)", "assignment expression is not allowed"),
        ("f'{C}'", "f-string is not allowed"),
        ("[c for c in C]", "comprehension is not allowed"),
        ("caf\u00e9 + 1", "non-ASCII character"),
        ("sqrt()", "sqrt takes exactly 1 argument, got 0"),
        ("sqrt(C, D)", "sqrt takes exactly 1 argument, got 2"),
        ("round(C, D, 1)", "round takes 1 or 2 arguments, got 3"),
        ("clamp(C, D)", "clamp takes exactly 3 arguments, got 2"),
        ("sub(C)", "sub takes exactly 2 arguments, got 1"),
        ("add()", "add takes at least 1 argument, got 0"),
        ("-" * 150 + "C", "nested more than"),
        ("C" + " + C" * 150, "nested more than"),
        ("C" * 5000, "expression too long"),
    ],
)
def test_expression_errors(expr: str, expected: str) -> None:
    text = node_toml("N", f"expr = {toml_string(expr)}")
    message = graph_error(text)
    assert message.startswith(f"{SOURCE}: node N: bad expression "), message
    assert expected in message, message
    if "keyword" not in expected:  # the hint is for a bare keyword only
        assert "keyword:" not in message, message


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("A", True),
        ("_x9", True),
        ("plant1.boiler.temp", True),
        ("a" * 128, True),
        ("a" * 60 + "." + "b" * 67, True),
        ("a" * 129, False),
        ("1a", False),
        ("a b", False),
        ("a.", False),
        (".a", False),
        ("a..b", False),
        ("a.1b", False),
        ("caf\u00e9", False),
        ("", False),
        ("a-b", False),
    ],
)
def test_node_names(name: str, valid: bool) -> None:
    assert valid_node_name(name) is valid
    text = node_toml(name, 'fn = "neg"\nargs = ["C"]')
    if valid:
        assert name in parse(text).nodes
    else:
        message = graph_error(text)
        assert ": node '" in message
        assert "bad node name" in message


def test_unquoted_dotted_name_gets_a_hint() -> None:
    message = graph_error('[nodes.plant1.boiler]\nfn = "neg"\nargs = ["C"]\n')
    assert message.startswith("g.toml: node plant1: unknown key 'boiler'")
    assert message.endswith('must be quoted: [nodes."plant1.boiler"]')


def test_expression_whitespace_is_fine() -> None:
    graph = expr_graph("  C *\t2 " + " " * 5000)
    assert graph.nodes["R"].args == ("C",)
    assert graph.evaluate("R", [4]) == 8


def test_cycle_is_named() -> None:
    text = (
        node_toml("A", 'expr = "B + 1"')
        + node_toml("B", 'fn = "add"\nargs = ["X", "A"]')
        + node_toml("Z", 'expr = "A + X"')
    )
    assert graph_error(text) == "g.toml: node A: cycle A -> B -> A"


def test_long_cycle_is_named_from_its_first_node() -> None:
    text = (
        node_toml("X", 'expr = "in1 + Y"')
        + node_toml("Y", 'expr = "W * 2"')
        + node_toml("W", 'fn = "max"\nargs = ["in2", "X"]')
    )
    assert graph_error(text) == "g.toml: node W: cycle W -> X -> Y -> W"


def test_self_reference_is_a_cycle() -> None:
    assert graph_error(node_toml("A", 'expr = "A + 1"')) == "g.toml: node A: cycle A -> A"
    assert graph_error(node_toml("S", 'fn = "add"\nargs = ["C", "S"]')).endswith("cycle S -> S")


def test_long_chain_needs_no_recursion() -> None:
    text = node_toml("n0", 'expr = "x + 1"') + "".join(
        node_toml(f"n{i}", f'expr = "n{i - 1} + 1"') for i in range(1, 3000)
    )
    graph = parse(text)
    assert graph.rank["n2999"] == 2999
    assert len(graph.downstream("x")) == 3000


def test_first_error_is_deterministic() -> None:
    text = node_toml("B", 'fn = "nope"\nargs = ["C"]') + node_toml("A", 'expr = "C <"')
    assert graph_error(text).startswith("g.toml: node A: bad expression")


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (0, 0),
        (5, 5000),
        (0.25, 250),
        ("250ms", 250),
        ("60s", 60_000),
        ("1.5s", 1500),
        ("5m", 300_000),
        ("1h", 3_600_000),
        (" 2 s ", 2000),
        ("0s", 0),
    ],
)
def test_durations(value: object, ms: int) -> None:
    assert parse_duration_ms(value) == ms


@pytest.mark.parametrize("value", [-1, True, None, "5", "5d", "s", math.inf, 2**60, "0.1ms"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(value)


# --------------------------------------------------------------------------- plugins


def test_plugin_function() -> None:
    graph = fn_graph("graph_plugins:efficiency", "power_in", "power_out")
    assert graph.evaluate("R", [200, 150]) == 0.75
    assert fn_graph("graph_plugins:Namespace.total", "a", "b").evaluate("R", [1, 2]) == 3


def test_plugin_list_result_becomes_vector() -> None:
    assert fn_graph("graph_plugins:doubled", "a", "b").evaluate("R", [1, 2.5]) == (2, 5.0)


def test_plugin_errors_are_function_errors() -> None:
    message = function_error(lambda: fn_graph("graph_plugins:explode", "a").evaluate("R", [1]))
    assert message == "graph_plugins:explode raised RuntimeError: boom second line"
    nan = fn_graph("graph_plugins:not_a_number", "a")
    assert "not finite" in function_error(lambda: nan.evaluate("R", [1]))
    text = fn_graph("graph_plugins:text", "a")
    assert "bad result" in function_error(lambda: text.evaluate("R", [1]))
    efficiency = fn_graph("graph_plugins:efficiency", "a", "b")
    assert "ZeroDivisionError" in function_error(lambda: efficiency.evaluate("R", [0, 1]))


def test_plugin_timeout_is_set_where_the_graph_is_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STREAMCALC_FUNCTION_TIMEOUT", raising=False)
    stored = fn_graph("graph_plugins:nap", "a").definitions()
    graph = Graph.from_definitions(stored, plugins=PluginPolicy(TRUST.trusted, True, 0.2))
    started = time.monotonic()
    message = function_error(lambda: graph.evaluate("R", [1]))
    assert time.monotonic() - started < 0.9
    assert message == "graph_plugins:nap timed out after 0.2s"
    patient = Graph.from_definitions(stored, plugins=PluginPolicy(TRUST.trusted, True, 0))
    assert patient.evaluate("R", [7]) == 7


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        ("graph_plugins:missing", "unknown function graph_plugins:missing: graph_plugins has no"),
        ("graph_plugins:NOT_CALLABLE", "NOT_CALLABLE is not callable"),
        ("no_such_module_xyz:f", "cannot import module no_such_module_xyz (ModuleNotFoundError"),
        ("graph_plugins:", "a plugin is written pkg.module:function"),
    ],
)
def test_unknown_plugins(fn: str, expected: str) -> None:
    trusting = PluginPolicy(("graph_plugins", "no_such_module_xyz"), load=True)
    with pytest.raises(GraphError) as info:
        parse(node_toml("N", f'fn = "{fn}"\nargs = ["a"]'), trusting)
    message = str(info.value)
    assert message.startswith("g.toml: node N: unknown function "), message
    assert expected in message, message


def test_plugins_are_imported_only_from_trusted_modules() -> None:
    text = node_toml("N", 'fn = "graph_plugins_untouched:f"\nargs = ["a"]')
    graph = parse(text, PluginPolicy())  # the default imports nothing, so this checks out
    assert "graph_plugins_untouched" not in sys.modules
    assert "not loaded in this process" in function_error(lambda: graph.evaluate("N", [1]))
    with pytest.raises(GraphError) as info:
        parse(text, PluginPolicy(("graph_plugins",), load=True))
    assert "module graph_plugins_untouched is not trusted" in str(info.value)
    assert "graph_plugins_untouched" not in sys.modules
    # a trusted package trusts its submodules, not a module whose name merely starts alike
    assert PluginPolicy(("pkg",)).trusts("pkg.sub.mod")
    assert not PluginPolicy(("pkg",)).trusts("pkgevil")


def test_a_plugin_raising_system_exit_is_a_function_error() -> None:
    graph = fn_graph("graph_plugins:exits", "a")
    assert "raised SystemExit" in function_error(lambda: graph.evaluate("R", [1]))


# --------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("expr", "args", "expected"),
    [
        ("A + B * C", (1, 2, 3), 7),
        ("(A + B) * C", (1, 2, 3), 9),
        ("A - B - C", (10, 3, 2), 5),
        ("A - (B - C)", (10, 3, 2), 9),
        ("-A ** 2", (3,), -9),
        ("(-A) ** 2", (3,), 9),
        ("A ** B ** C", (2, 3, 2), 512),
        ("A ** -1", (4,), 0.25),
        ("A // B", (7, 2), 3),
        ("A // B", (-7, 2), -4),
        ("A % B", (-7, 3), 2),
        ("A % B", (7.5, 2), 1.5),
        ("A / B", (7, 2), 3.5),
        ("+A - -B", (1, 2), 3),
        ("A * -2", (4,), -8),
        ("--A", (4,), 4),
        ("plant1.boiler.temp * 2", (21,), 42),
        ("sqrt(sqrt)", (9,), 3.0),
        ("abs(abs) + neg(A)", (-3, 1), 2),
        ("add(A, B, C) / mean(A, B, C)", (1, 2, 3), 3.0),
        ("mul(A, B, C) - sub(A, B)", (2, 3, 4), 25),
        ("div(A, B)", (1, 4), 0.25),
        ("min(A, B, C) + max(A, B, C)", (5, -2, 9), 7),
        ("round(A)", (2.7,), 3),
        ("round(A, 2)", (3.14159,), 3.14),
        ("round(A, B)", (1234, -2), 1200),
        ("clamp(A, 0, 10)", (15,), 10),
        ("clamp(A, 0, 10)", (-3,), 0),
        ("clamp(A, 0, 10)", (4.5,), 4.5),
        ("add(A)", (4,), 4),
        ("A # a comment", (4,), 4),
        ("2 ** 100 * A", (1,), float(2**100)),
    ],
)
def test_expression_values(expr: str, args: tuple[Value, ...], expected: Value) -> None:
    value = expr_graph(expr).evaluate("R", args)
    assert value == expected
    assert type(value) is type(expected)


def test_expression_args_in_order_of_first_appearance() -> None:
    graph = expr_graph("B + A * B + sqrt(c.d) - A")
    assert graph.nodes["R"].args == ("B", "A", "c.d")
    assert graph.evaluate("R", [1, 2, 16]) == 1 + 2 * 1 + 4.0 - 2
    assert expr_graph("add(x, y) + y").nodes["R"].args == ("x", "y")


def test_ints_stay_ints() -> None:
    assert type(expr_graph("A + B * 2 - C").evaluate("R", [1, 2, 3])) is int
    assert type(fn_graph("mul", "a", "b").evaluate("R", [3, 4])) is int
    assert type(fn_graph("div", "a", "b").evaluate("R", [6, 3])) is float
    assert type(fn_graph("mean", "a", "b").evaluate("R", [2, 2])) is float


# --------------------------------------------------------------------------- conditions, reductions


@pytest.mark.parametrize(
    ("expr", "args", "expected"),
    [
        ("T > 25", (30,), 1),
        ("T > 25", (25,), 0),
        ("T >= 25", (25,), 1),
        ("T < 2.5", (2,), 1),
        ("T <= -1", (0,), 0),
        ("T == 3", (3.0,), 1),
        ("T != 3", (3,), 0),
        ("0 <= T < 10", (0,), 1),
        ("0 <= T < 10", (10,), 0),
        ("A < B < C", (1, 2, 3), 1),
        ("A < B < C", (1, 3, 2), 0),
        ("A < B > C", (1, 3, 2), 1),
        ("A and B", (2, -1), 1),
        ("A and B", (2, 0), 0),
        ("A or B", (0, 0.0), 0),
        ("A or B", (0, 0.5), 1),
        ("not A", (0,), 1),
        ("not A", (-2,), 0),
        ("not A and B or C", (0, 1, 0), 1),
        ("A > 1 and not B", (2, 0), 1),
        ("(A > 1) + (B > 1)", (2, 3), 2),
        ("(T > 25) * 100", (26,), 100),
        ("where(A > B, A, B)", (1, 4), 4),
        ("where(A, 1.5, 2)", (0,), 2),
        # arguments in order of first appearance: D, then N; D is 0, and N / D never runs
        ("where(D != 0, N / D, 0)", (0, 1), 0),
        ("where(D != 0, N / D, 0)", (2, 1), 0.5),
        ("D != 0 and N / D > 2", (0, 1), 0),
        ("D == 0 or N / D > 2", (0, 1), 1),
        ("0 > D < N / D", (0, 1), 0),
        ("sum(V)", (4,), 4),
        ("len(V)", (4.5,), 1),
        ("vmean(V)", (4,), 4.0),
        ("`in` * 2", (3,), 6),
        ("dev1.out / dev1.in", (3, 4), 0.75),
        ("`dev1.in` - dev1.in", (3,), 0),
        ("line.if + line.else + `not`", (1, 2, 3), 6),
    ],
)
def test_conditions_and_logic(expr: str, args: tuple[Value, ...], expected: Value) -> None:
    value = expr_graph(expr).evaluate("R", args)
    assert value == expected
    assert type(value) is type(expected)  # 1 and 0 are numbers, never booleans


@pytest.mark.parametrize(
    ("expr", "args", "expected"),
    [
        ("V > 2", ((1, 2, 3),), (0, 0, 1)),
        ("V == W", ((1, 2), (1, 3)), (1, 0)),
        ("0 < V < 3", ((0, 1, 3),), (0, 1, 0)),
        ("V and W", ((0, 1, 2), 1), (0, 1, 1)),
        ("W and V", ((0, 1, 2), 1), (0, 1, 1)),
        ("V or 0", ((0, 3),), (0, 1)),
        ("not V", ((0, 3),), (1, 0)),
        ("where(V > 1, V, 0)", ((1, 2, 3),), (0, 2, 3)),
        ("where(V > 1, W, -W)", ((1, 2), (5, 6)), (-5, 6)),
        ("where(W, V, 0)", ((1, 0), (5, 6)), (5, 0)),
        ("sum(V)", ((1, 2, 3),), 6),
        ("sum(V)", ((1, 2.5),), 3.5),
        ("len(V)", ((7, 8, 9),), 3),
        ("vmin(V)", ((3, -1, 2),), -1),
        ("vmax(V)", ((3, -1, 2),), 3),
        ("vmean(V)", ((1, 2, 3, 4),), 2.5),
        ("any(V > 2)", ((1, 2, 3),), 1),
        ("all(V > 2)", ((1, 2, 3),), 0),
        ("sum(V > 2)", ((1, 5, 3),), 2),
        ("vmax(V) - vmin(V)", ((4, 9, 1),), 8),
        ("V - vmean(V)", ((1, 3),), (-1.0, 1.0)),
    ],
)
def test_conditions_and_reductions_on_vectors(
    expr: str, args: tuple[Value, ...], expected: Value
) -> None:
    value = expr_graph(expr).evaluate("R", args)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [
        ("where", (1, 5, 6), 5),
        ("where", ((1, 0), 5, (7, 8)), (5, 8)),
        ("sum", ((1, 2),), 3),
        ("len", ((1, 2),), 2),
        ("vmin", ((4, 2),), 2),
        ("vmax", ((4, 2),), 4),
        ("vmean", ((4, 2),), 3.0),
        ("any", ((0, 0),), 0),
        ("all", ((1, 2),), 1),
    ],
)
def test_new_functions_as_fn(fn: str, args: tuple[Value, ...], expected: Value) -> None:
    names = [f"a{i}" for i in range(len(args))]
    assert fn_graph(fn, *names).evaluate("R", args) == expected


def test_reductions_of_an_empty_vector() -> None:
    """No reading holds an empty vector, but a reduction given one fails cleanly."""
    from streamcalc.graph import BUILTINS

    for name in ("vmin", "vmax", "vmean"):
        message = function_error(lambda name=name: BUILTINS[name].apply([()]))
        assert message == f"{name} of an empty vector"
    assert BUILTINS["sum"].apply([()]) == 0
    assert BUILTINS["len"].apply([()]) == 0
    assert BUILTINS["any"].apply([()]) == 0
    assert BUILTINS["all"].apply([()]) == 1


@pytest.mark.parametrize(
    ("expr", "args", "expected"),
    [
        ("V > W", ((1, 2), (1, 2, 3)), "vector length mismatch: 2 and 3"),
        ("where(V, W, 0)", ((1, 0), (1, 2, 3)), "vector length mismatch"),
        ("where(V, 1 / W, 0)", ((1, 0), (1, 0)), "division by zero"),
        ("where(V, 1 / W, 0)", (1, 0), "division by zero"),
        ("A * 10 > 1", (1e308,), "overflow"),
        ("not (A * 10)", (1e308,), "overflow"),
        ("vmax(V * 10)", ((1e308, 1),), "overflow"),
        ("sum(V * 10)", ((1e308, 1),), "not finite"),
    ],
)
def test_condition_errors(expr: str, args: tuple[Value, ...], expected: str) -> None:
    graph = expr_graph(expr)
    assert expected in function_error(lambda: graph.evaluate("R", args))


def test_keyword_names_are_nodes_of_the_graph() -> None:
    """The issue's example: a device's power in and out."""
    graph = parse(
        '[nodes."dev1.eff"]\nexpr = "dev1.out / dev1.in"\n'
        '[nodes.alarm]\nexpr = "`dev1.eff` < 0.5 or `in` > 100"\n'
    )
    assert graph.inputs == {"dev1.in", "dev1.out", "in"}
    assert graph.nodes["alarm"].args == ("dev1.eff", "in")
    assert graph.evaluate("dev1.eff", [3, 4]) == 0.75
    assert graph.evaluate("alarm", [0.75, 101]) == 1


# --------------------------------------------------------------------------- vectors


@pytest.mark.parametrize(
    ("graph", "args", "expected"),
    [
        (("fn", "add", "C", "D", "E"), ((1, 2), (3, 4), 10), (14, 16)),
        (("fn", "mul", "C", "D"), ((1, 2, 3), 2), (2, 4, 6)),
        (("fn", "sub", "C", "D"), (10, (1, 2)), (9, 8)),
        (("fn", "min", "C", "D"), ((1, 5), (3, 2)), (1, 2)),
        (("fn", "max", "C", "D", "E"), ((1, 5), (3, 2), 4), (4, 5)),
        (("fn", "mean", "C", "D"), ((1, 2), (3, 6)), (2.0, 4.0)),
        (("fn", "abs", "C"), ((-1, 2.5),), (1, 2.5)),
        (("fn", "neg", "C"), ((-1, 2),), (1, -2)),
        (("fn", "div", "C", "D"), ((1, 2), (4, 8)), (0.25, 0.25)),
        (("expr", "C * F"), ((1, 2, 3), 2), (2, 4, 6)),
        (("expr", "C * F"), ((1, 2), (3, 4)), (3, 8)),
        (("expr", "-C + 1"), ((1, 2),), (0, -1)),
        (("expr", "sqrt(C)"), ((4, 9),), (2.0, 3.0)),
        (("expr", "round(C, 1)"), ((1.25, 2.04),), (1.2, 2.0)),
        (("expr", "clamp(C, 0, D)"), ((-1, 5, 20), (10, 4, 10)), (0, 4, 10)),
        (("expr", "C ** 2 // 3 % 2"), ((3, 4),), (1, 1)),
    ],
)
def test_vectors_element_wise(
    graph: tuple[str, ...], args: tuple[Value, ...], expected: Value
) -> None:
    compiled = expr_graph(graph[1]) if graph[0] == "expr" else fn_graph(*graph[1:])
    assert compiled.evaluate("R", args) == expected


@pytest.mark.parametrize(
    "graph",
    [fn_graph("add", "a", "b", "c"), expr_graph("a + b + c"), expr_graph("clamp(a, b, c)")],
    ids=["fn", "expr", "clamp"],
)
def test_vector_length_mismatch(graph: Graph) -> None:
    message = function_error(lambda: graph.evaluate("R", [(1, 2), 3, (1, 2, 3)]))
    assert message == "vector length mismatch: 2 and 3"


# --------------------------------------------------------------------------- function errors


@pytest.mark.parametrize(
    ("expr", "args", "expected"),
    [
        ("A / B", (1, 0), "division by zero"),
        ("A / B", (1.5, 0.0), "division by zero"),
        ("A // B", (1, 0), "division by zero"),
        ("A % B", (1, 0), "division by zero"),
        ("div(A, B)", ((1, 2), (1, 0)), "division by zero"),
        ("A ** -1", (0,), "division by zero"),
        ("A * 10", (1e308,), "not finite"),
        ("A * A", (1e200,), "not finite"),
        ("1 / (A * 10)", (1e308,), "overflow"),
        ("min(A * 10, 1)", (1e308,), "overflow"),
        ("clamp(A * 10, 0, 1)", (1e308,), "overflow"),
        ("(A * 10) ** 0", (1e308,), "overflow"),
        ("A ** 400", (10,), "overflow"),
        ("A ** 400", (10.0,), "overflow"),
        ("A ** 2", (2**62,), "value"),
        ("sqrt(A)", (-1,), "sqrt of a negative number"),
        ("A ** 0.5", (-8,), "fractional power of a negative number"),
        ("clamp(A, 10, 0)", (5,), "lower bound is above upper bound"),
        ("round(A, B)", (1.5, (1, 2)), "digits must be a scalar integer"),
        ("round(A, B)", (1.5, 0.5), "digits must be a scalar integer"),
        ("round(A, B)", (15, -(10**6)), "digits out of range"),
    ],
)
def test_function_errors(expr: str, args: tuple[Value, ...], expected: str) -> None:
    graph = expr_graph(expr)
    if expected == "value":
        assert graph.evaluate("R", args) == float(2**124)
        return
    assert expected in function_error(lambda: graph.evaluate("R", args))


def test_fn_node_errors() -> None:
    div = fn_graph("div", "a", "b")
    assert function_error(lambda: div.evaluate("R", [1, 0])) == "division by zero"
    add = fn_graph("add", "a", "b")
    assert "not finite" in function_error(lambda: add.evaluate("R", [1.7e308, 1.7e308]))
    assert "takes 2 arguments, got 1" in function_error(lambda: add.evaluate("R", [1]))
    assert "not a derived node" in function_error(lambda: add.evaluate("a", [1, 2]))
    assert "TypeError" in function_error(lambda: add.evaluate("R", [1, "x"]))  # type: ignore[list-item]


# --------------------------------------------------------------------------- stored definitions


def test_definitions_round_trip() -> None:
    graph = parse(SEED + node_toml("p.q", 'fn = "graph_plugins:efficiency"\nargs = ["A", "x"]'))
    defs = graph.definitions()
    assert set(defs) == {"A", "B", "p.q"}
    assert msgspec.json.decode(defs["B"]) == {
        "name": "B",
        "args": ["A", "F"],
        "fn": None,
        "expr": "A * F",
        "ttl_ms": 30_000,
        "mode": "latest",
    }
    from_bytes = Graph.from_definitions({name.encode(): text for name, text in defs.items()})
    for again in (Graph.from_definitions(defs), from_bytes):
        assert again == graph
        assert again.version_hash == graph.version_hash
        assert again.definitions() == defs
        assert again.nodes == graph.nodes
        assert again.parents == graph.parents
        assert again.evaluate("B", [2, 3]) == 6


def test_version_hash_is_stable_and_sensitive() -> None:
    reordered = node_toml("B", 'expr = "A * F"\nttl = 30\nmode = "latest"') + node_toml(
        "A", 'fn = "add"\nargs = ["C", "D", "E"]'
    )
    assert parse(reordered).version_hash == parse(SEED).version_hash
    changed = parse(SEED.replace('"30s"', '"31s"'))
    assert changed.version_hash != parse(SEED).version_hash
    assert len(parse(SEED).version_hash) == 40


def _stored(**changes: Any) -> dict[str | bytes, bytes]:
    fields = {"name": "A", "args": ["C"], "fn": "neg", "expr": None, "ttl_ms": 0, "mode": "consume"}
    fields.update(changes)
    return {"A": msgspec.json.encode(fields)}


@pytest.mark.parametrize(
    ("defs", "expected"),
    [
        ({}, "redis: no nodes defined"),
        ({"A": b"{"}, "redis: node A: bad stored definition"),
        (_stored(name="B"), "redis: node A: stored definition names 'B'"),
        (_stored(extra=1), "redis: node A: bad stored definition"),
        (_stored(ttl_ms=-5), "redis: node A: bad ttl"),
        (_stored(ttl_ms=True), "redis: node A: bad stored definition"),
        (_stored(mode="eager"), "redis: node A: bad mode"),
        (_stored(fn=None), "redis: node A: neither fn nor expr"),
        (_stored(expr="C + 1"), "redis: node A: both fn and expr"),
        (_stored(fn=None, expr="C + D"), "redis: node A: args do not match"),
        (_stored(args=["A"]), "redis: node A: cycle A -> A"),
        (_stored(fn="sub"), "redis: node A: wrong argument count"),
        ({b"\xff": b"{}"}, "redis: node name"),
    ],
)
def test_from_definitions_revalidates(defs: dict[str | bytes, bytes], expected: str) -> None:
    with pytest.raises(GraphError) as info:
        Graph.from_definitions(defs)
    assert str(info.value).startswith(expected), str(info.value)


def test_graph_constructor_refuses_duplicates() -> None:
    node = NodeDef("A", ("C",), fn="neg")
    with pytest.raises(GraphError, match="node A: defined twice"):
        Graph([node, node], "mem")


# --------------------------------------------------------------------------- files


def test_parse_graph_file(tmp_path: Path) -> None:
    path = tmp_path / "graph.toml"
    path.write_text(SEED)
    assert parse_graph_file(path) == parse(SEED)
    assert parse_graph_file(str(path)).nodes.keys() == {"A", "B"}
    path.write_text(SEED + node_toml("Z", 'fn = "nope"\nargs = ["C"]'))
    with pytest.raises(GraphError, match=f"^{path}: node Z: unknown function nope$"):
        parse_graph_file(path)


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(GraphError, match=f"^{missing}: cannot read file"):
        parse_graph_file(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[nodes]")
    with pytest.raises(GraphError, match="not UTF-8"):
        parse_graph_file(binary)


# --------------------------------------------------------------------------- renderings

DOTTED = SEED + node_toml("plant1.eff", 'expr = "plant1.out / (A + 1)"\nttl = 0')


def test_render_text() -> None:
    lines = render(parse(SEED), "text").splitlines()
    assert lines[0].split() == ["A", "=", "add(C,", "D,", "E)", "ttl=60s", "mode=consume"]
    assert lines[1].split() == ["B", "=", "A", "*", "F", "ttl=30s", "mode=latest"]
    assert lines[2] == "inputs: C, D, E, F"
    assert "ttl=never" in render(parse(DOTTED), "text")


def test_render_json_parses_back() -> None:
    graph = parse(DOTTED)
    text = render(graph, "json")
    assert text == render(parse(DOTTED), "json")
    document = msgspec.json.decode(text)
    assert document["inputs"] == ["C", "D", "E", "F", "plant1.out"]
    assert document["nodes"]["A"] == {"args": ["C", "D", "E"], "fn": "add", "mode": "consume"} | {
        "ttl_ms": 60_000
    }
    assert document["nodes"]["plant1.eff"]["expr"] == "plant1.out / (A + 1)"
    rebuilt = [
        msgspec.convert({"name": name, **fields}, NodeDef)
        for name, fields in document["nodes"].items()
    ]
    assert Graph(rebuilt) == graph


def test_render_dot() -> None:
    graph = parse(DOTTED)
    dot = render(graph, "dot")
    lines = dot.splitlines()
    assert lines[0] == "digraph streamcalc {"
    assert lines[-1] == "}"
    assert '  "plant1.out" [shape=ellipse];' in lines
    assert '  "C" -> "A" [label="0"];' in lines
    assert '  "E" -> "A" [label="2"];' in lines
    assert '  "A" -> "plant1.eff" [label="1"];' in lines
    edges = [line for line in lines if " -> " in line]
    assert len(edges) == sum(len(node.args) for node in graph.nodes.values())
    assert dot.count("{") == dot.count("}") == 1


def test_render_mermaid() -> None:
    graph = parse(DOTTED)
    lines = render(graph, "mermaid").splitlines()
    assert lines[0] == "flowchart LR"
    shapes: dict[str, bool] = {}
    ids: dict[str, str] = {}
    for line in lines[1:]:
        if "-->" in line:
            continue
        match = re.fullmatch(r'(n\d+)(\(\[|\[)"([^"]*)"(\]\)|\])', line.strip())
        assert match is not None, line
        name = match[3].split(" = ")[0]
        ids[name] = match[1]
        shapes[name] = match[2] == "(["
    assert set(ids) == set(graph.nodes) | graph.inputs
    assert all(shapes[name] for name in graph.inputs)
    assert not any(shapes[name] for name in graph.nodes)
    edges = [line.strip() for line in lines if "-->" in line]
    assert f'{ids["C"]} -->|"0"| {ids["A"]}' in edges
    assert f'{ids["A"]} -->|"1"| {ids["plant1.eff"]}' in edges
    assert len(edges) == sum(len(node.args) for node in graph.nodes.values())


def test_render_every_format_and_refuse_others() -> None:
    graph = parse(SEED)
    for fmt in FORMATS:
        assert render(graph, fmt)
    with pytest.raises(UsageError, match="unknown format 'svg'"):
        render(graph, "svg")


# --------------------------------------------------------------------------- property tests

# A tiny independent model of expressions: trees of small ints, node names,
# unary minus, parentheses and + - *, rendered with the fewest parentheses.
Tree = tuple[Any, ...]
NAMES = ("a", "b", "c.d", "sqrt")
_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2}

trees: st.SearchStrategy[Tree] = st.recursive(
    st.one_of(
        st.tuples(st.just("num"), st.integers(0, 9)),
        st.tuples(st.just("name"), st.sampled_from(NAMES)),
    ),
    lambda inner: st.one_of(
        st.tuples(st.just("neg"), inner),
        st.tuples(st.just("paren"), inner),
        st.tuples(st.just("bin"), st.sampled_from(sorted(_OPS)), inner, inner),
    ),
    max_leaves=12,
)


def reference(tree: Tree, env: dict[str, int]) -> int:
    kind = tree[0]
    if kind == "num":
        return int(tree[1])
    if kind == "name":
        return env[tree[1]]
    if kind == "neg":
        return -reference(tree[1], env)
    if kind == "paren":
        return reference(tree[1], env)
    return _OPS[tree[1]](reference(tree[2], env), reference(tree[3], env))


def source(tree: Tree) -> tuple[str, int]:
    """The tree as expression text, and the precedence of its outermost form."""
    kind = tree[0]
    if kind in ("num", "name"):
        return str(tree[1]), 4
    if kind == "paren":
        return f"({source(tree[1])[0]})", 4
    if kind == "neg":
        text, precedence = source(tree[1])
        return ("-" + (text if precedence >= 3 else f"({text})")), 3
    op = tree[1]
    precedence = _PRECEDENCE[op]
    left, left_precedence = source(tree[2])
    right, right_precedence = source(tree[3])
    if left_precedence < precedence:
        left = f"({left})"
    if right_precedence <= precedence:
        right = f"({right})"
    return f"{left} {op} {right}", precedence


def names_in(tree: Tree) -> set[str]:
    if tree[0] == "name":
        return {tree[1]}
    if tree[0] == "num":
        return set()
    return set().union(*(names_in(part) for part in tree[1:] if isinstance(part, tuple)))


envs = st.fixed_dictionaries({name: st.integers(-5, 5) for name in NAMES})


@settings(max_examples=300, deadline=None)
@given(trees, envs)
def test_expressions_match_reference(tree: Tree, env: dict[str, int]) -> None:
    text, _ = source(tree)
    if not names_in(tree):
        with pytest.raises(GraphError, match="uses no nodes"):
            expr_graph(text)
        return
    graph = expr_graph(text)
    args = graph.nodes["R"].args
    assert set(args) == names_in(tree)
    value = graph.evaluate("R", [env[name] for name in args])
    assert value == reference(tree, env)
    assert type(value) is int


@settings(max_examples=200, deadline=None)
@given(trees, st.lists(envs, min_size=3, max_size=3))
def test_vectors_match_scalars(tree: Tree, components: list[dict[str, int]]) -> None:
    """Evaluating on vectors equals evaluating each component on its own."""
    text, _ = source(tree)
    if not names_in(tree):
        return
    graph = expr_graph(text)
    args = graph.nodes["R"].args
    vectors: Sequence[Value] = [tuple(env[name] for env in components) for name in args]
    expected = tuple(reference(tree, env) for env in components)
    assert graph.evaluate("R", vectors) == expected


def test_a_deeply_nested_toml_is_a_graph_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(GraphError, match="nested too deeply"):
        parse_graph_file(path)


def test_a_plugin_reference_is_two_dotted_identifiers() -> None:
    for ref in ["a:\x1b[31mred", "a b:c", "a:b c", "a:", ":f", "a:b:c"]:
        with pytest.raises(GraphError, match=r"a plugin is written pkg\.module:function"):
            parse(node_toml("N", f'fn = "{ref}"\nargs = ["a"]'.replace("\x1b", "\\u001b")))


def test_graph_size_limits_refuse_and_warn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamcalc.cli import main
    from streamcalc.graph.validate import MAX_ARGS, MAX_DERIVED_NODES

    many = "".join(f'[nodes.N{i}]\nexpr = "X + {i}"\n' for i in range(MAX_DERIVED_NODES + 1))
    with pytest.raises(GraphError, match=f"at most {MAX_DERIVED_NODES}"):
        parse(many)
    args = ", ".join(f'"a{i}"' for i in range(MAX_ARGS + 1))
    with pytest.raises(GraphError, match=f"node N: {MAX_ARGS + 1} arguments"):
        parse(node_toml("N", f'fn = "add"\nargs = [{args}]'))
    near = ", ".join(f'"a{i}"' for i in range(MAX_ARGS - 10))
    path = tmp_path / "near.toml"
    path.write_text(node_toml("N", f'fn = "add"\nargs = [{near}]'))
    assert main(["graph", "check", str(path)]) == 0
    _, err = capsys.readouterr()
    assert f"warning: node N: {MAX_ARGS - 10} arguments, near the limit of {MAX_ARGS}" in err


# --------------------------------------------------------------------------- the whole language

#: Names with keyword segments and a keyword name: the model writes ``in`` as `in`.
LANGUAGE_NAMES = ("a", "b", "dev1.in", "in")
_scalars = st.integers(-2, 2)
#: Scalars and vectors of length 3 (and the odd length 2: a mismatch is a function error).
_values = st.one_of(
    _scalars,
    st.lists(_scalars, min_size=3, max_size=3).map(tuple),
    st.lists(_scalars, min_size=2, max_size=2).map(tuple),
)


@settings(max_examples=400, deadline=None)
@given(formula_trees(LANGUAGE_NAMES), st.fixed_dictionaries(dict.fromkeys(LANGUAGE_NAMES, _values)))
def test_language_matches_the_reference_model(tree: FormulaTree, env: dict[str, Any]) -> None:
    """Comparisons, logic, where, reductions and arithmetic, on scalars and vectors."""
    text = model.render(tree)
    used = model.names(tree)
    if not used:
        with pytest.raises(GraphError, match="uses no nodes"):
            expr_graph(text)
        return
    graph = expr_graph(text)
    assert list(graph.nodes["R"].args) == used
    args = [env[name] for name in used]
    try:
        expected = model.evaluate(tree, env)
    except (model.ModelError, ArithmeticError):
        with pytest.raises(FunctionError):
            graph.evaluate("R", args)
        return
    value = graph.evaluate("R", args)
    assert value == expected, text
    assert type(value) is type(expected), text


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("inputs", "derived", "expected"),
    [
        ({"total_ot"}, {"total_out"}, [("total_ot", "total_out")]),  # a letter dropped
        ({"total_outt"}, {"total_out"}, [("total_outt", "total_out")]),  # one added
        ({"totl_out"}, {"total_out"}, [("totl_out", "total_out")]),
        ({"toatl_out"}, {"total_out"}, [("toatl_out", "total_out")]),  # two swapped
        ({"total_oat"}, {"total_out"}, [("total_oat", "total_out")]),  # one changed
        ({"temp", "temo"}, set(), []),  # one changed between inputs: a family (a, b)
        ({"dev1.in", "dev2.in", "dev12.in"}, {"dev3.eff"}, []),  # digits only
        ({"boiler.temp", "boilr.temp"}, set(), [("boiler.temp", "boilr.temp")]),
        ({"C", "D", "E", "F"}, {"A", "B"}, []),  # short names: one letter is no typo
        ({"tmp"}, {"tap", "tmpx"}, [("tmp", "tmpx")]),
        ({"flow"}, {"power"}, []),
    ],
)
def test_near_misses(inputs: set[str], derived: set[str], expected: list[tuple[str, str]]) -> None:
    from streamcalc.graph.validate import near_misses

    assert near_misses(frozenset(inputs), frozenset(derived)) == expected


def test_inputs_table_declares_the_inputs() -> None:
    declared = '[inputs]\nnames = ["C", "D", "E", "F"]\n'
    graph = parse(declared + SEED)
    assert graph.declared_inputs == {"C", "D", "E", "F"}
    assert graph.inputs == {"C", "D", "E", "F"}
    assert parse(SEED).declared_inputs is None
    # The declaration is stored with the graph (workers treat every declared input as a
    # node) and is part of its version.
    assert graph.version_hash != parse(SEED).version_hash
    again = Graph.from_definitions(graph.stored())
    assert again.declared_inputs == graph.declared_inputs and again == graph
    assert Graph.from_definitions(parse(SEED).stored()).declared_inputs is None
    assert Graph.names_of(parse(declared.replace('"F"', '"F", "G"') + SEED).stored()) == {
        *"ABCDEFG"
    }


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (
            'names = ["C", "D", "E"]',
            "node B: argument F is neither a node nor declared in [inputs]",
        ),
        ('names = ["C", "D", "E", "FF"]', "(did you mean FF?)"),
        (
            'names = ["C", "D", "E", "F", "A"]',
            "node A: declared in [inputs] but defined in [nodes]",
        ),
        ('names = ["C", "D", "E", "F", "1x"]', "bad input name '1x' in [inputs]"),
        ('names = ["C", "C"]', "input C is declared twice"),
        ('names = "C"', "[inputs] names must be a list of node names"),
        ("names = [1]", "[inputs] names must be a list of node names"),
        ('list = ["C"]', "unknown key 'list' in [inputs] (allowed: names)"),
    ],
)
def test_inputs_table_errors(inputs: str, expected: str) -> None:
    message = graph_error(f"[inputs]\n{inputs}\n{SEED}")
    assert expected in message, message


def test_input_warnings() -> None:
    from streamcalc.graph.validate import input_warnings

    graph = parse('[nodes.total_out]\nexpr = "a + b"\n[nodes.eff]\nexpr = "total_ot / a"\n')
    (warning,) = input_warnings(graph)
    assert warning.startswith("input total_ot is close to node total_out: a typo?")
    graph = parse('[inputs]\nnames = ["a", "b", "spare"]\n[nodes.s]\nexpr = "a + b"\n')
    assert input_warnings(graph) == ("input spare is declared in [inputs] but no node uses it",)
    assert graph.inputs == {"a", "b", "spare"}  # declared: a node, even if no node uses it


# --------------------------------------------------------------------------- nothing else compiles

_PIECES = [
    "a",
    "b.c",
    "dev1.in",
    "in",
    "if",
    "else",
    "not",
    "and",
    "or",
    "lambda",
    "is",
    "for",
    "`",
    "`in`",
    "`x.y`",
    "__import__",
    "__class__",
    "os",
    "sum",
    "where",
    "len",
    "vmin",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    ":",
    ";",
    "=",
    ":=",
    "'",
    '"',
    "#",
    "\\",
    "*",
    "**",
    "+",
    "-",
    "/",
    "//",
    "%",
    "@",
    "<",
    "<=",
    "==",
    "!=",
    ">",
    ">=",
    "~",
    "&",
    "|",
    "^",
    "<<",
    "1",
    "0.5",
    "1e999",
    "0x1f",
    "1j",
    "True",
    "None",
    " ",
    "\n",
]
_ALLOWED_AST = (
    ast.Expression,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Constant,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.BoolOp,
    ast.Call,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.And,
    ast.Or,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Eq,
    ast.NotEq,
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=12).map("".join))
def test_only_the_whitelist_compiles(text: str) -> None:
    """Any text: an ExpressionError, or a formula made of allowed forms only, whose
    evaluation fails (if at all) with a FunctionError."""
    from streamcalc.graph.expr import ExpressionError, compile_expression
    from streamcalc.graph.quoting import rewrite

    try:
        compiled = compile_expression(text)
    except ExpressionError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    tree = ast.parse(rewrite(text.strip()).text, mode="eval")
    assert all(isinstance(node, _ALLOWED_AST) for node in ast.walk(tree)), text
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        assert isinstance(call.func, ast.Name) and call.func.id in BUILTINS and not call.keywords
    for constant in (n for n in ast.walk(tree) if isinstance(n, ast.Constant)):
        assert type(constant.value) in (int, float)
    graph = Graph([NodeDef("R", compiled.args, expr=text)])
    for value in (0, 2, (1, 0, 3)):
        with contextlib.suppress(FunctionError):
            graph.evaluate("R", [value] * len(compiled.args))
