"""A small sequential reference model of SPEC S1-S8, written for clarity, not speed.

It knows nothing of batches, caches, versions or Redis: one entry at a time,
one full pass over the derived nodes in topological order per wave.

The test suite and the benchmark's checker (``benchmarks/reference.py`` loads this file)
both compare the engine with it, so it must stay independent of the engine's code.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Func = Callable[[list[Any]], Any]


@dataclass
class ModelNode:
    """A derived node as the model sees it."""

    args: list[str]
    ttl_ms: int
    mode: str
    func: Func


@dataclass
class Slot:
    """An argument slot: its ts survives consumption and expiry."""

    ts: int
    value: Any
    filled: bool = True


@dataclass
class Model:
    """The reference: feed entries with :meth:`apply`, read ``out``, ``dead`` and ``latest``."""

    nodes: dict[str, ModelNode]
    slots: dict[str, list[Slot | None]] = field(init=False)
    latest: dict[str, tuple[int, Any]] = field(default_factory=dict)
    out: list[tuple[str, Any, int, str]] = field(default_factory=list)
    dead: list[tuple[str, str | None]] = field(default_factory=list)
    order: list[str] = field(init=False)
    #: node -> the (derived node, argument position) slots its values go to, in topo order
    feeds: dict[str, list[tuple[str, int]]] = field(init=False)
    #: values that changed no slot because the slot holds a newer ts (S2)
    late: int = field(default=0, init=False)
    #: inputs a graph file's [inputs] declares: nodes of the graph even when nothing uses them
    declared: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.slots = {name: [None] * len(node.args) for name, node in self.nodes.items()}
        self.order = []
        placed: set[str] = set()
        while len(self.order) < len(self.nodes):
            for name in sorted(self.nodes):
                if name in placed:
                    continue
                if all(a in placed or a not in self.nodes for a in self.nodes[name].args):
                    self.order.append(name)
                    placed.add(name)
        self.feeds = {}
        for name in self.order:
            for i, arg in enumerate(self.nodes[name].args):
                self.feeds.setdefault(arg, []).append((name, i))

    def apply(self, src: str, ts: int, readings: Sequence[tuple[str, Any]]) -> None:
        """One wave (S5): all readings first, then each touched derived node in topo order."""
        touched: set[str] = set()
        for node, value in readings:
            self._deliver(node, value, ts, touched)
        for name in self.order:
            if name not in touched:
                continue
            node, slots = self.nodes[name], self.slots[name]
            filled = [s for s in slots if s is not None and s.filled]
            t_max = max(s.ts for s in filled)
            for s in filled:
                if node.ttl_ms and t_max - s.ts > node.ttl_ms:
                    s.filled = False  # expired: emptied, ts kept
            if not all(s is not None and s.filled for s in slots):
                continue
            try:
                value = node.func([s.value for s in slots if s is not None])
                ok = _finite(value)
            except (ArithmeticError, ValueError):
                ok = False
            if not ok:
                self.dead.append((src, name))
                continue
            if node.mode == "consume":
                for s in slots:
                    if s is not None:
                        s.filled = False
            self.out.append((name, value, t_max, src))
            self._deliver(name, value, t_max, touched)

    def reject(self, src: str) -> None:
        """A bad entry: dead-lettered whole, nothing applied."""
        self.dead.append((src, None))

    def _deliver(self, node: str, value: Any, ts: int, touched: set[str]) -> None:
        if node not in self.nodes and node not in self.feeds and node not in self.declared:
            return  # not a node of the graph: not stored, triggers nothing (S1)
        if node not in self.latest or ts >= self.latest[node][0]:
            self.latest[node] = (ts, value)
        for name, i in self.feeds.get(node, ()):
            slot = self.slots[name][i]
            if slot is None or ts >= slot.ts:
                self.slots[name][i] = Slot(ts, value)
                touched.add(name)
            else:
                self.late += 1


def _finite(value: Any) -> bool:
    if isinstance(value, tuple | list):
        return all(_finite(v) for v in value)
    return isinstance(value, int) or math.isfinite(value)


# ---------------------------------------------------------------------------
# The formula language, as a tree: an independent evaluator and its text.
#
# A tree is ("num", n), ("name", s), ("neg", t), ("bin", op, l, r) with op in + - * /,
# ("cmp", (op, ...), (operand, ...)) for a chain like a < b <= c, ("and", (t, ...)),
# ("or", (t, ...)), ("not", t), ("where", c, a, b), ("reduce", fn, t) with fn one of
# sum len vmin vmax vmean any all. Values are numbers or tuples of numbers.

Tree = tuple[Any, ...]
Val = Any

REDUCTIONS = ("sum", "len", "vmin", "vmax", "vmean", "any", "all")
CMP_OPS = ("<", "<=", ">", ">=", "==", "!=")


class ModelError(ValueError):
    """What the engine reports as a function error (a dead letter)."""


def _cmp(op: str, a: Any, b: Any) -> int:
    results = {
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
        "==": a == b,
        "!=": a != b,
    }
    return 1 if results[op] else 0


def _columns(values: Sequence[Val]) -> list[tuple[Any, ...]] | None:
    """The values as equal-length columns (scalars repeated), or None when all are scalars."""
    lengths = {len(v) for v in values if isinstance(v, tuple)}
    if not lengths:
        return None
    if len(lengths) > 1:
        raise ModelError("vector length mismatch")
    (n,) = lengths
    return [v if isinstance(v, tuple) else (v,) * n for v in values]


def elementwise(f: Callable[..., Any], *values: Val) -> Val:
    """``f`` applied to each position of the vectors (scalars broadcast), or to the scalars."""
    columns = _columns(values)
    if columns is None:
        return f(*values)
    return tuple(f(*row) for row in zip(*columns, strict=True))


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ZeroDivisionError
    return a / b


def _reduce(fn: str, value: Val) -> Any:
    items = list(value) if isinstance(value, tuple) else [value]
    if fn == "sum":
        return sum(items)
    if fn == "len":
        return len(items)
    if fn == "any":
        return 1 if any(x != 0 for x in items) else 0
    if fn == "all":
        return 1 if all(x != 0 for x in items) else 0
    if not items:
        raise ModelError(f"{fn} of an empty vector")
    if fn == "vmin":
        return min(items)
    if fn == "vmax":
        return max(items)
    return sum(items) / len(items)


def evaluate(tree: Tree, env: dict[str, Val]) -> Val:
    """The value of ``tree``; raises ModelError or ZeroDivisionError for a function error.

    As in Python, ``and``/``or`` and comparison chains stop at a scalar that decides
    them, and ``where`` with a scalar condition evaluates only the chosen branch.
    """
    kind = tree[0]
    if kind == "num":
        return tree[1]
    if kind == "name":
        return env[tree[1]]
    if kind == "neg":
        return elementwise(lambda x: -x, evaluate(tree[1], env))
    if kind == "bin":
        left, right = evaluate(tree[2], env), evaluate(tree[3], env)
        return elementwise(lambda a, b: _arith(tree[1], a, b), left, right)
    if kind == "not":
        return elementwise(lambda x: 1 if x == 0 else 0, evaluate(tree[1], env))
    if kind == "reduce":
        return _reduce(tree[1], evaluate(tree[2], env))
    return _condition(tree, env)


def _both(a: Any, b: Any) -> int:
    return 1 if a != 0 and b != 0 else 0


def _either(a: Any, b: Any) -> int:
    return 1 if a != 0 or b != 0 else 0


def _condition(tree: Tree, env: dict[str, Val]) -> Val:
    """``and``, ``or``, comparison chains and ``where``: the forms that may stop early."""
    kind = tree[0]
    if kind in ("and", "or"):
        want = kind == "and"
        result: Val = 1 if want else 0
        for part in tree[1]:
            if not isinstance(result, tuple) and (result != 0) is not want:
                return result
            result = elementwise(_both if want else _either, result, evaluate(part, env))
        return result
    if kind == "cmp":
        ops, operands = tree[1], tree[2]
        result = 1
        left = evaluate(operands[0], env)
        for op, operand in zip(ops, operands[1:], strict=True):
            if result == 0:
                return 0
            right = evaluate(operand, env)
            test = elementwise(lambda a, b, op=op: _cmp(op, a, b), left, right)
            result = elementwise(_both, result, test)
            left = right
        return result
    if kind == "where":
        condition = evaluate(tree[1], env)
        if not isinstance(condition, tuple):
            return evaluate(tree[2] if condition != 0 else tree[3], env)
        a, b = evaluate(tree[2], env), evaluate(tree[3], env)
        return elementwise(lambda c, x, y: x if c != 0 else y, condition, a, b)
    raise AssertionError(f"unknown tree {tree!r}")


def render(tree: Tree) -> str:
    """The tree as expression text: every compound form in parentheses."""
    kind = tree[0]
    if kind == "num":
        return str(tree[1])
    if kind == "name":
        # A name that is a Python keyword is written in backquotes (dotted ones need none).
        return f"`{tree[1]}`" if keyword.iskeyword(tree[1]) else str(tree[1])
    if kind == "neg":
        return f"(-{render(tree[1])})"
    if kind == "bin":
        return f"({render(tree[2])} {tree[1]} {render(tree[3])})"
    if kind == "not":
        return f"(not {render(tree[1])})"
    if kind in ("and", "or"):
        return "(" + f" {kind} ".join(render(part) for part in tree[1]) + ")"
    if kind == "cmp":
        text = render(tree[2][0])
        for op, operand in zip(tree[1], tree[2][1:], strict=True):
            text += f" {op} {render(operand)}"
        return f"({text})"
    if kind == "where":
        return f"where({render(tree[1])}, {render(tree[2])}, {render(tree[3])})"
    if kind == "reduce":
        return f"{tree[1]}({render(tree[2])})"
    raise AssertionError(f"unknown tree {tree!r}")


def names(tree: Tree) -> list[str]:
    """The node names of ``tree`` in order of first appearance in its text."""
    found: list[str] = []

    def walk(part: Any) -> None:
        if not isinstance(part, tuple):
            return
        if part and part[0] == "name":
            if part[1] not in found:
                found.append(part[1])
            return
        for item in part:
            walk(item)

    walk(tree)
    return found
