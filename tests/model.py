"""A small sequential reference model of SPEC S1-S8, written for clarity, not speed.

It knows nothing of batches, caches, versions or Redis: one entry at a time,
one full pass over the derived nodes in topological order per wave.

The test suite and the benchmark's checker (``benchmarks/reference.py`` loads this file)
both compare the engine with it, so it must stay independent of the engine's code.
"""

from __future__ import annotations

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
        if node not in self.nodes and node not in self.feeds:
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
