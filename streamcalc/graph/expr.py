"""Safe arithmetic expressions: a whitelist walk over Python's AST, compiled into terms.

User text is only ever handed to ``ast.parse``; nothing is evaluated. Each
allowed AST form becomes a term: a small closure over the node's argument values, so
evaluating ``A * F`` costs one Python frame on scalars.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from streamcalc.graph.functions import (
    BUILTINS,
    Builtin,
    Scalar2,
    Term,
    binary_term,
    floordiv,
    mod,
    power,
    suggest_builtin,
    truediv,
    unary_term,
)
from streamcalc.graph.model import valid_node_name
from streamcalc.values import Number, Value

MAX_LENGTH = 4096
# Evaluation recurses once per level; a bound keeps far from the interpreter's limit.
MAX_DEPTH = 100

_BINARY: dict[type[ast.operator], Scalar2] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: truediv,
    ast.FloorDiv: floordiv,
    ast.Mod: mod,
    ast.Pow: power,
}

_REFUSED_OPERATORS: dict[type[ast.AST], str] = {
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Not: "not",
    ast.Invert: "~",
}

_REFUSED_FORMS: dict[type[ast.AST], str] = {
    ast.Compare: "comparison",
    ast.BoolOp: "boolean operator",
    ast.IfExp: "conditional expression",
    ast.Lambda: "lambda",
    ast.Subscript: "subscript",
    ast.Slice: "slice",
    ast.Starred: "starred expression",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Set: "set",
    ast.Dict: "dict",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator expression",
    ast.NamedExpr: "assignment expression",
    ast.JoinedStr: "f-string",
    ast.Await: "await",
    ast.Attribute: "attribute access",
}


class ExpressionError(ValueError):
    """An expression that is not valid; the message says what was found and where."""


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """An expression's argument nodes (in order of first appearance) and its formula."""

    args: tuple[str, ...]
    formula: Term


def compile_expression(text: str) -> CompiledExpression:
    """Parse ``text`` and compile it, or raise ExpressionError saying what is not allowed."""
    text = text.strip()
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression too long ({len(text)} characters, at most {MAX_LENGTH})")
    if not text.isascii():
        # Python would NFKC-normalize identifiers; node names are ASCII, so refuse up front.
        column, char = next((i, c) for i, c in enumerate(text) if not c.isascii())
        raise ExpressionError(f"non-ASCII character {char!r} at column {column + 1}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"syntax error: {exc.msg}{where}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        # Huge literals and pathological nesting are refused by the parser itself.
        raise ExpressionError(f"cannot parse: {type(exc).__name__}") from None
    compiler = _Compiler()
    formula = compiler.compile(tree.body, 0)
    if not compiler.args:
        raise ExpressionError("expression uses no nodes")
    return CompiledExpression(tuple(compiler.args), formula)


def builtin_formula(builtin: Builtin, count: int) -> Term:
    """The formula of an ``fn`` node calling ``builtin`` on its ``count`` arguments in order."""
    direct = _specialized(builtin, [operator.itemgetter(i) for i in range(count)])
    # With no specialization the node's argument sequence already is the call's list.
    return direct if direct is not None else builtin.apply


def _specialized(builtin: Builtin, children: Sequence[Term]) -> Term | None:
    if len(children) == 1 and builtin.scalar1 is not None:
        return unary_term(builtin.scalar1, children[0])
    if len(children) == 2 and builtin.scalar2 is not None:
        return binary_term(builtin.scalar2, children[0], children[1])
    return None


def _constant(value: Number) -> Term:
    def run(args: Sequence[Value]) -> Value:
        return value

    return run


def _refusal(node: ast.AST) -> ExpressionError:
    column = getattr(node, "col_offset", None)
    where = f" at column {column + 1}" if column is not None else ""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str | bytes):
            what = "string literal"
        elif isinstance(value, bool) or value is None:
            what = repr(value)
        else:
            what = f"{type(value).__name__} literal {value!r}"
    elif isinstance(node, ast.BinOp | ast.UnaryOp):
        what = f"operator {_REFUSED_OPERATORS.get(type(node.op), type(node.op).__name__)}"
    else:
        what = _REFUSED_FORMS.get(type(node), type(node).__name__)
    return ExpressionError(f"{what} is not allowed{where}")


def _dotted_name(node: ast.expr) -> str | None:
    """``a.b.c`` for an Attribute chain ending in a Name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


class _Compiler:
    """One expression's walk: collects argument names while building terms."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._slots: dict[str, int] = {}

    def compile(self, node: ast.expr, depth: int) -> Term:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep")
        constant = _fold_constant(node, depth)
        if constant is not None:
            return _constant(constant)
        if isinstance(node, ast.Name | ast.Attribute):
            return self._name(node)
        if isinstance(node, ast.BinOp):
            scalar2 = _BINARY.get(type(node.op))
            if scalar2 is None:
                raise _refusal(node)
            left = self.compile(node.left, depth + 1)
            right = self.compile(node.right, depth + 1)
            return binary_term(scalar2, left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            scalar1 = operator.neg if isinstance(node.op, ast.USub) else operator.pos
            return unary_term(scalar1, self.compile(node.operand, depth + 1))
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        raise _refusal(node)

    def _name(self, node: ast.Name | ast.Attribute) -> Term:
        name = _dotted_name(node)
        if name is None:
            raise _refusal(node)
        if not valid_node_name(name):
            raise ExpressionError(f"bad node name {name!r}")
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = len(self.args)
            self.args.append(name)
        getter: Term = operator.itemgetter(slot)
        return getter

    def _call(self, node: ast.Call, depth: int) -> Term:
        if not isinstance(node.func, ast.Name):
            dotted = _dotted_name(node.func)
            what = f"call of {dotted}" if dotted else "call of an expression"
            raise ExpressionError(f"{what} is not allowed: only built-in functions can be called")
        name = node.func.id
        builtin = BUILTINS.get(name)
        if builtin is None:
            raise ExpressionError(f"unknown function {name}{suggest_builtin(name)}")
        if node.keywords:
            raise ExpressionError(f"keyword arguments are not allowed (in call of {name})")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise _refusal(arg)
        problem = builtin.arity_problem(len(node.args))
        if problem is not None:
            raise ExpressionError(problem)
        children = [self.compile(arg, depth + 1) for arg in node.args]
        direct = _specialized(builtin, children)
        if direct is not None:
            return direct
        apply = builtin.apply

        def run(args: Sequence[Value]) -> Value:
            return apply([child(args) for child in children])

        return run


def _fold_constant(node: ast.expr, depth: int) -> Number | None:
    """The value of a numeric literal, possibly signed (``-3``), else None."""
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ExpressionError(f"literal {value!r} is not finite")
            return value
        raise _refusal(node)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _fold_constant(node.operand, depth + 1)
        if inner is None:
            return None
        return -inner if isinstance(node.op, ast.USub) else inner
    return None
