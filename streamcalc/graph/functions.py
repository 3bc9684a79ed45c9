"""The arithmetic of node functions: element-wise operations on numbers and vectors, the built-ins.

Everything here works on Values that are already finite (slots hold normalized
values). Python's own exceptions (ZeroDivisionError, OverflowError) are left to
propagate; the Graph's node function turns every failure into a one-line
FunctionError. Scalar operands take a fast path that costs one ``isinstance``
per operand. Plugins are resolved in ``plugins``.
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import TypeAlias

from streamcalc.errors import FunctionError
from streamcalc.graph.model import one_line
from streamcalc.values import Number, Value, Vector

Formula: TypeAlias = Callable[[Sequence[Value]], object]
"""A derived node's compiled ``fn`` or ``expr``: argument values in slot order -> raw result.

The Graph wraps each formula into the node's function, which checks the
argument count, turns failures into FunctionErrors and normalizes the result.
"""

Term: TypeAlias = Callable[[Sequence[Value]], Value]
"""A compiled part of an expression or a built-in's body, applied to the node's argument values."""

Scalar1: TypeAlias = Callable[[Number], Number]
Scalar2: TypeAlias = Callable[[Number, Number], Number]

# |x| ** n is at least 2 ** ((bits(x) - 1) * n); past 2 ** 1024 no float holds it,
# so refuse before Python spends time and memory on an enormous exact int.
_FLOAT_MAX_EXP = 1024
# round(int, -n) computes 10 ** n exactly; a bound keeps a bad argument cheap.
_ROUND_DIGITS_LIMIT = 400


# ---------------------------------------------------------------------------
# element-wise machinery


def _length_mismatch(a: Vector, b: Vector) -> FunctionError:
    return FunctionError(f"vector length mismatch: {len(a)} and {len(b)}")


def zip2(scalar: Scalar2, a: Value, b: Value) -> Vector:
    """Apply ``scalar`` element-wise; a scalar operand broadcasts over a vector."""
    if isinstance(a, tuple):
        if isinstance(b, tuple):
            if len(a) != len(b):
                raise _length_mismatch(a, b)
            return tuple(map(scalar, a, b))
        return tuple([scalar(x, b) for x in a])
    assert isinstance(b, tuple)
    return tuple([scalar(a, y) for y in b])


def broadcast(scalar: Callable[..., Number], values: Sequence[Value]) -> Value:
    """Apply an n-ary ``scalar`` element-wise over any mix of scalars and equal-length vectors."""
    vectors = [v for v in values if isinstance(v, tuple)]
    if not vectors:
        return scalar(*values)
    first = vectors[0]
    for other in vectors[1:]:
        if len(other) != len(first):
            raise _length_mismatch(first, other)
    size = len(first)
    columns = [v if isinstance(v, tuple) else (v,) * size for v in values]
    return tuple(map(scalar, *columns))


def lift2(scalar: Scalar2) -> Callable[[Value, Value], Value]:
    """Make a binary scalar function element-wise on vectors, with scalar broadcast."""

    def op(a: Value, b: Value) -> Value:
        if isinstance(a, tuple) or isinstance(b, tuple):
            return zip2(scalar, a, b)
        return scalar(a, b)

    return op


def unary_term(scalar: Scalar1, operand: Term) -> Term:
    """Term computing ``scalar(operand)`` element-wise (one Python frame on scalars)."""

    def run(args: Sequence[Value]) -> Value:
        a = operand(args)
        if isinstance(a, tuple):
            return tuple(map(scalar, a))
        return scalar(a)

    return run


def binary_term(scalar: Scalar2, left: Term, right: Term) -> Term:
    """Term computing ``scalar(left, right)`` element-wise (one Python frame on scalars)."""

    def run(args: Sequence[Value]) -> Value:
        a = left(args)
        b = right(args)
        if isinstance(a, tuple) or isinstance(b, tuple):
            return zip2(scalar, a, b)
        return scalar(a, b)

    return run


def fold(scalar: Scalar2) -> Term:
    """N-ary function combining its arguments left to right with element-wise ``scalar``."""
    lifted = lift2(scalar)

    def run(args: Sequence[Value]) -> Value:
        for value in args:
            if isinstance(value, tuple):
                return reduce(lifted, args)
        # All scalars: reduce with the scalar op directly, no per-step type checks.
        return reduce(scalar, args)  # type: ignore[arg-type]

    return run


# ---------------------------------------------------------------------------
# scalar operations


def check_finite(x: Number) -> None:
    """Refuse an infinite or NaN intermediate, which only an earlier overflow can produce.

    Called by the operations that could otherwise turn it back into a finite
    result (``1 / inf == 0``, ``min(inf, 5) == 5``, ``inf ** 0 == 1``), so an
    overflow anywhere in an expression is an error, not a silent wrong value.
    """
    if isinstance(x, float) and not math.isfinite(x):
        raise FunctionError("overflow: an intermediate result is not finite")


def truediv(a: Number, b: Number) -> Number:
    """``a / b`` (always a float)."""
    check_finite(a)
    check_finite(b)
    return a / b


def floordiv(a: Number, b: Number) -> Number:
    """``a // b`` with Python's floor semantics."""
    check_finite(a)
    check_finite(b)
    return a // b


def mod(a: Number, b: Number) -> Number:
    """``a % b`` with Python's sign-of-divisor semantics."""
    check_finite(a)
    check_finite(b)
    return a % b


def power(a: Number, b: Number) -> Number:
    """``a ** b``; exact for small int powers, an error where no float could hold the result."""
    check_finite(a)
    check_finite(b)
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        if b > 1 and (abs(a).bit_length() - 1) * b >= _FLOAT_MAX_EXP:
            raise FunctionError("overflow")
        exact: int = a**b
        return exact
    result: object = a**b
    if isinstance(result, complex):
        raise FunctionError("fractional power of a negative number")
    assert isinstance(result, int | float)
    return result


def sqrt(x: Number) -> Number:
    """Square root (a float); negative numbers are an error, not NaN."""
    if x < 0:
        raise FunctionError("sqrt of a negative number")
    return math.sqrt(x)


def minimum(a: Number, b: Number) -> Number:
    """The smaller of two numbers."""
    check_finite(a)
    check_finite(b)
    return b if b < a else a


def maximum(a: Number, b: Number) -> Number:
    """The larger of two numbers."""
    check_finite(a)
    check_finite(b)
    return b if b > a else a


def clamp(x: Number, lo: Number, hi: Number) -> Number:
    """``x`` limited to ``[lo, hi]``; ``lo > hi`` is an error."""
    check_finite(x)
    check_finite(lo)
    check_finite(hi)
    if lo > hi:
        raise FunctionError("clamp: lower bound is above upper bound")
    return lo if x < lo else hi if x > hi else x


def _round0(x: Number) -> Number:
    check_finite(x)
    return round(x)


def _round_digits(digits: Value) -> int:
    # A computed digit count may arrive as 2.0; anything else is a caller's mistake.
    if isinstance(digits, float) and digits.is_integer():
        digits = int(digits)
    if not isinstance(digits, int):
        raise FunctionError("round: digits must be a scalar integer")
    if abs(digits) > _ROUND_DIGITS_LIMIT:
        limit = _ROUND_DIGITS_LIMIT
        raise FunctionError(f"round: digits out of range (-{limit} to {limit})")
    return digits


# ---------------------------------------------------------------------------
# comparisons and logic: results are the numbers 1 and 0, never booleans


def truth(x: Number) -> bool:
    """A number as a condition: 0 is false, anything else is true."""
    check_finite(x)
    return x != 0


def _comparison(test: Callable[[Number, Number], bool]) -> Scalar2:
    def compare(a: Number, b: Number) -> Number:
        check_finite(a)
        check_finite(b)
        return 1 if test(a, b) else 0

    return compare


COMPARISONS: Mapping[str, Scalar2] = {
    "<": _comparison(operator.lt),
    "<=": _comparison(operator.le),
    ">": _comparison(operator.gt),
    ">=": _comparison(operator.ge),
    "==": _comparison(operator.eq),
    "!=": _comparison(operator.ne),
}


def logical_and(a: Number, b: Number) -> Number:
    """1 when both are true (non-zero), else 0."""
    return 1 if truth(a) and truth(b) else 0


def logical_or(a: Number, b: Number) -> Number:
    """1 when either is true (non-zero), else 0."""
    return 1 if truth(a) or truth(b) else 0


def logical_not(a: Number) -> Number:
    """1 for 0, 0 for anything else."""
    return 0 if truth(a) else 1


def select(condition: Number, a: Number, b: Number) -> Number:
    """``a`` where ``condition`` is true (non-zero), else ``b``."""
    return a if truth(condition) else b


def where(condition: Value, a: Term, b: Term, args: Sequence[Value]) -> Value:
    """``where(condition, a, b)``: with a scalar condition, one branch, the other never
    evaluated (``where(d != 0, n / d, 0)`` is safe); with a vector, element-wise."""
    if isinstance(condition, tuple):
        return broadcast(select, [condition, a(args), b(args)])
    return a(args) if truth(condition) else b(args)


def _where(args: Sequence[Value]) -> Value:
    return where(args[0], _SECOND, _THIRD, args)


def _elements(name: str, value: Value, *, empty_ok: bool) -> Vector:
    """A reduction's operand as a vector: a scalar is a vector of one element."""
    items = value if isinstance(value, tuple) else (value,)
    if not items and not empty_ok:
        raise FunctionError(f"{name} of an empty vector")
    for x in items:
        check_finite(x)
    return items


def _reduction(name: str, reduce_: Callable[[Vector], Number], *, empty_ok: bool) -> Term:
    def run(args: Sequence[Value]) -> Value:
        return reduce_(_elements(name, args[0], empty_ok=empty_ok))

    return run


def _vmean(items: Vector) -> Number:
    return truediv(sum(items), len(items))


_REDUCTIONS: tuple[tuple[str, Callable[[Vector], Number], bool], ...] = (
    ("sum", sum, True),
    ("len", len, True),
    ("vmin", min, False),
    ("vmax", max, False),
    ("vmean", _vmean, False),
    ("any", lambda items: 1 if any(map(truth, items)) else 0, True),
    ("all", lambda items: 1 if all(map(truth, items)) else 0, True),
)


_FIRST: Term = operator.itemgetter(0)
_SECOND: Term = operator.itemgetter(1)
_THIRD: Term = operator.itemgetter(2)
_ROUND0 = unary_term(_round0, _FIRST)


def _round(args: Sequence[Value]) -> Value:
    if len(args) == 1:
        return _ROUND0(args)
    digits = _round_digits(args[1])

    def scalar(x: Number) -> Number:
        check_finite(x)
        return round(x, digits)

    return unary_term(scalar, _FIRST)(args)


def _clamp(args: Sequence[Value]) -> Value:
    return broadcast(clamp, args)


_SUM = fold(operator.add)
_DIV = lift2(truediv)


def _mean(args: Sequence[Value]) -> Value:
    return _DIV(_SUM(args), len(args))


# ---------------------------------------------------------------------------
# built-ins


@dataclass(frozen=True, slots=True)
class Builtin:
    """A built-in function: its arity and its forms.

    ``apply`` takes the evaluated arguments. ``scalar1``/``scalar2`` are the
    element-wise scalar forms a one- or two-argument call can be compiled to
    directly, skipping the generic n-ary path.
    """

    name: str
    min_args: int
    max_args: int | None
    apply: Term
    scalar1: Scalar1 | None = None
    scalar2: Scalar2 | None = None

    def arity_problem(self, count: int) -> str | None:
        """Why ``count`` arguments are wrong for this function, or None if they are fine."""
        if self.min_args <= count and (self.max_args is None or count <= self.max_args):
            return None
        if self.max_args is None:
            wanted = f"at least {self.min_args}"
        elif self.max_args == self.min_args:
            wanted = f"exactly {self.min_args}"
        else:
            wanted = f"{self.min_args} or {self.max_args}"
        plural = "" if wanted.endswith(" 1") else "s"
        return f"{self.name} takes {wanted} argument{plural}, got {count}"


def _nary(name: str, scalar2: Scalar2) -> Builtin:
    return Builtin(name, 1, None, fold(scalar2), scalar2=scalar2)


def _unary(name: str, scalar1: Scalar1) -> Builtin:
    return Builtin(name, 1, 1, unary_term(scalar1, _FIRST), scalar1=scalar1)


def _binary(name: str, scalar2: Scalar2) -> Builtin:
    return Builtin(name, 2, 2, binary_term(scalar2, _FIRST, _SECOND), scalar2=scalar2)


BUILTINS: Mapping[str, Builtin] = {
    b.name: b
    for b in (
        _nary("add", operator.add),
        _nary("mul", operator.mul),
        _nary("min", minimum),
        _nary("max", maximum),
        Builtin("mean", 1, None, _mean),
        _binary("sub", operator.sub),
        _binary("div", truediv),
        _unary("abs", abs),
        _unary("neg", operator.neg),
        _unary("sqrt", sqrt),
        Builtin("round", 1, 2, _round, scalar1=_round0),
        Builtin("clamp", 3, 3, _clamp),
        Builtin("where", 3, 3, _where),
        *(
            Builtin(name, 1, 1, _reduction(name, reduce_, empty_ok=empty_ok))
            for name, reduce_, empty_ok in _REDUCTIONS
        ),
    )
}


# ---------------------------------------------------------------------------
# messages


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, short enough for a dead letter's ``@error``."""
    text = one_line(str(exc))
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def suggest_builtin(name: str) -> str:
    """`` (did you mean X?)`` for a near miss of a built-in name, else the empty string."""
    close = difflib.get_close_matches(name, list(BUILTINS), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
