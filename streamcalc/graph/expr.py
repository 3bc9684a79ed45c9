"""Safe expressions: a whitelist walk over Python's AST, compiled into terms.

User text is only ever handed to ``ast.parse`` (after :mod:`~streamcalc.graph.quoting`
swapped the node names Python cannot read for placeholders); nothing is evaluated.
Allowed: numbers, node names, ``+ - * / // % **``, unary ``-``/``+``, comparisons
``< <= > >= == !=`` (chained as in Python: ``0 <= x < 10``), ``and``, ``or``,
``not`` and calls of the built-ins. Conditions are numbers: 0 is false, anything
else true, and every comparison or logical operator gives 1 or 0. Each allowed AST
form becomes a term: a small closure over the node's argument values, so
evaluating ``A * F`` costs one Python frame on scalars.
"""

from __future__ import annotations

import ast
import math
import operator
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from streamcalc.graph.functions import (
    BUILTINS,
    COMPARISONS,
    Builtin,
    Scalar2,
    Term,
    binary_term,
    floordiv,
    lift2,
    logical_and,
    logical_not,
    logical_or,
    mod,
    power,
    suggest_builtin,
    truediv,
    truth,
    unary_term,
    where,
)
from streamcalc.graph.model import valid_node_name
from streamcalc.graph.quoting import QuotingError, Rewritten, bare_keyword, rewrite
from streamcalc.values import Number, Value

#: One parse at a time in a process: ``warnings.catch_warnings`` swaps process-wide state,
#: and CPython 3.11 can fail parses in concurrent threads ("SystemError: AST constructor
#: recursion depth mismatch", CPython gh-106905), e.g. workers of one process loading graphs.
_PARSING = threading.Lock()

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
    ast.Invert: "~",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}

_HINTS: dict[type[ast.AST], str] = {
    ast.IfExp: ": use where(cond, a, b)",
}

_COMPARE: dict[type[ast.cmpop], Scalar2] = {
    ast.Lt: COMPARISONS["<"],
    ast.LtE: COMPARISONS["<="],
    ast.Gt: COMPARISONS[">"],
    ast.GtE: COMPARISONS[">="],
    ast.Eq: COMPARISONS["=="],
    ast.NotEq: COMPARISONS["!="],
}
_AND = lift2(logical_and)
_OR = lift2(logical_or)

_REFUSED_FORMS: dict[type[ast.AST], str] = {
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
    source, tree = _parse(text)
    compiler = _Compiler(source)
    formula = compiler.compile(tree.body, 0)
    if not compiler.args:
        raise ExpressionError("expression uses no nodes")
    return CompiledExpression(tuple(compiler.args), formula)


#: The operators whose Python meaning on two numbers is exactly the formula's.
_SCALAR_OPERATORS: dict[type[ast.operator], str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


def scalar_source(text: str, args: Sequence[str]) -> str | None:
    """The Python source of a valid expression over ``v0``, ``v1``, ... (``args[i]`` is
    ``vi``) for scalar arguments, or None unless it uses only numbers, node names,
    ``+ - *`` and unary ``-``/``+``: then Python's own operators compute exactly what its
    formula does, and the wave can run it without a call per operator. Nothing of the
    text but those forms and the literals' values (``repr``) enters the source."""
    try:
        source, tree = _parse(text.strip())
        return _scalar(tree.body, source, list(args), 0)
    except (ExpressionError, ValueError):
        return None


def _scalar(node: ast.expr, source: Rewritten, args: list[str], depth: int) -> str | None:
    constant = _fold_constant(node, depth, source)
    if constant is not None:
        return f"({constant!r})"
    if isinstance(node, ast.Name | ast.Attribute):
        name = _dotted_name(node, source)
        return f"v{args.index(name)}" if name in args else None
    if isinstance(node, ast.BinOp) and type(node.op) in _SCALAR_OPERATORS:
        left = _scalar(node.left, source, args, depth + 1)
        right = _scalar(node.right, source, args, depth + 1)
        if left is None or right is None:
            return None
        return f"({left} {_SCALAR_OPERATORS[type(node.op)]} {right})"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _scalar(node.operand, source, args, depth + 1)
        sign = "-" if isinstance(node.op, ast.USub) else "+"
        return None if operand is None else f"({sign}{operand})"
    return None


def _parse(text: str) -> tuple[Rewritten, ast.Expression]:
    """The rewritten text and its AST, or ExpressionError."""
    try:
        source = rewrite(text)
    except QuotingError as exc:
        raise ExpressionError(str(exc)) from None
    try:
        with _PARSING, warnings.catch_warnings():
            # "1if x": Python warns and parses on; here it is a syntax error, not a stray line.
            warnings.simplefilter("error", SyntaxWarning)
            tree = ast.parse(source.text, mode="eval")
    except SyntaxError as exc:
        where = f" at column {source.column(exc.offset - 1) + 1}" if exc.offset else ""
        raise ExpressionError(f"syntax error: {exc.msg}{where}{_keyword_hint(text)}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        # Huge literals and pathological nesting are refused by the parser itself.
        raise ExpressionError(f"cannot parse: {type(exc).__name__}") from None
    return source, tree


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


def _keyword_hint(text: str) -> str:
    word = bare_keyword(text)
    if word is None:
        return ""
    return f" ({word} is a Python keyword: write a node of that name in backquotes, `{word}`)"


def _refusal(node: ast.AST, source: Rewritten | None = None) -> ExpressionError:
    column = getattr(node, "col_offset", None)
    if column is not None and source is not None and getattr(node, "lineno", 1) == 1:
        column = source.column(column)
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
    elif isinstance(node, ast.Compare):
        refused = next(op for op in node.ops if type(op) not in _COMPARE)
        what = f"operator {_REFUSED_OPERATORS.get(type(refused), type(refused).__name__)}"
    else:
        what = _REFUSED_FORMS.get(type(node), type(node).__name__)
    hint = _HINTS.get(type(node), "")
    return ExpressionError(f"{what} is not allowed{where}{hint}")


def _dotted_name(node: ast.expr, source: Rewritten) -> str | None:
    """``a.b.c`` for an Attribute chain ending in a Name, else None (placeholders mapped back)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(source.names.get(part, part) for part in reversed(parts))


class _Compiler:
    """One expression's walk: collects argument names while building terms."""

    def __init__(self, source: Rewritten) -> None:
        self.args: list[str] = []
        self._slots: dict[str, int] = {}
        self._source = source

    def compile(self, node: ast.expr, depth: int) -> Term:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep")
        constant = _fold_constant(node, depth, self._source)
        if constant is not None:
            return _constant(constant)
        if isinstance(node, ast.Name | ast.Attribute):
            return self._name(node)
        if isinstance(node, ast.BinOp):
            scalar2 = _BINARY.get(type(node.op))
            if scalar2 is None:
                raise _refusal(node, self._source)
            left = self.compile(node.left, depth + 1)
            right = self.compile(node.right, depth + 1)
            return binary_term(scalar2, left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            scalar1 = operator.neg if isinstance(node.op, ast.USub) else operator.pos
            return unary_term(scalar1, self.compile(node.operand, depth + 1))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return unary_term(logical_not, self.compile(node.operand, depth + 1))
        if isinstance(node, ast.Compare):
            return self._compare(node, depth)
        if isinstance(node, ast.BoolOp):
            children = [self.compile(value, depth + 1) for value in node.values]
            return _boolean(isinstance(node.op, ast.And), children)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        raise _refusal(node, self._source)

    def _compare(self, node: ast.Compare, depth: int) -> Term:
        """``a < b``, or a chain ``a < b <= c`` meaning ``a < b and b <= c`` (as in Python)."""
        scalars = [_COMPARE.get(type(op)) for op in node.ops]
        if None in scalars:
            raise _refusal(node, self._source)
        tests = [s for s in scalars if s is not None]
        operands = [self.compile(part, depth + 1) for part in (node.left, *node.comparators)]
        if len(tests) == 1:
            return binary_term(tests[0], operands[0], operands[1])
        return _chain(tests, operands)

    def _name(self, node: ast.Name | ast.Attribute) -> Term:
        name = _dotted_name(node, self._source)
        if name is None:
            raise _refusal(node, self._source)
        if not valid_node_name(name):
            raise ExpressionError(f"bad node name {name!r}")
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = len(self.args)
            self.args.append(name)
        getter: Term = operator.itemgetter(slot)
        return getter

    def _call(self, node: ast.Call, depth: int) -> Term:
        if not isinstance(node.func, ast.Name) or node.func.id in self._source.names:
            dotted = _dotted_name(node.func, self._source)
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
                raise _refusal(arg, self._source)
        problem = builtin.arity_problem(len(node.args))
        if problem is not None:
            raise ExpressionError(problem)
        children = [self.compile(arg, depth + 1) for arg in node.args]
        if name == "where":
            return _where(*children)
        direct = _specialized(builtin, children)
        if direct is not None:
            return direct
        apply = builtin.apply

        def run(args: Sequence[Value]) -> Value:
            return apply([child(args) for child in children])

        return run


def _where(condition: Term, a: Term, b: Term) -> Term:
    """``where(c, a, b)`` evaluating only the chosen branch when ``c`` is a scalar."""

    def run(args: Sequence[Value]) -> Value:
        return where(condition(args), a, b, args)

    return run


def _boolean(conjunction: bool, children: Sequence[Term]) -> Term:
    """``a and b and ...`` (or ``or``): 1 or 0, element-wise on vectors.

    As in Python, a scalar result decides early: the rest is not evaluated
    (``d != 0 and n / d > 2`` is safe when d is 0).
    """
    combine = _AND if conjunction else _OR

    def run(args: Sequence[Value]) -> Value:
        result: Value = 1 if conjunction else 0
        for child in children:
            if not isinstance(result, tuple) and truth(result) is not conjunction:
                return result
            result = combine(result, child(args))
        return result

    return run


def _chain(tests: Sequence[Scalar2], operands: Sequence[Term]) -> Term:
    """``a < b <= c``: each comparison of neighbours, joined by ``and``; each operand
    evaluated once, and (as in Python) no further once a scalar comparison is false."""
    lifted = [lift2(test) for test in tests]

    def run(args: Sequence[Value]) -> Value:
        result: Value = 1
        left = operands[0](args)
        for test, operand in zip(lifted, operands[1:], strict=True):
            if not isinstance(result, tuple) and result == 0:
                return 0
            right = operand(args)
            result = _AND(result, test(left, right))
            left = right
        return result

    return run


def _fold_constant(node: ast.expr, depth: int, source: Rewritten) -> Number | None:
    """The value of a numeric literal, possibly signed (``-3``), else None."""
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ExpressionError(f"literal {value!r} is not finite")
            return value
        raise _refusal(node, source)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _fold_constant(node.operand, depth + 1, source)
        if inner is None:
            return None
        return -inner if isinstance(node.op, ast.USub) else inner
    return None
