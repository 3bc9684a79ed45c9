"""The benchmark workloads (*seed*, *wide*, *deep*, *keyed*), each with its graph as the model
sees it.

Each workload is a graph file plus a list of input entries with strictly rising
``@ts``, and the same graph as plain Python functions for the reference model of the semantics
(:mod:`benchmarks.reference`, the test suite's model, which shares no code with the engine):
the harness replays the entries through it and compares every derived value the engine wrote
to ``sc:{NS}:out`` with the model's.

- *seed*: A = add(C, D, E), B = mul(A, F) (consume mode); every entry carries C, D, E, F,
  so every entry fires A and B.
- *wide*: 1,000 inputs ``x0000..x0999``, 2,000 single-level derived nodes ``w0000..w1999``,
  each an expression over 2-5 distinct inputs, latest mode; entries of 10 distinct readings.
  A derived node fires on every entry that carries one of its inputs once all of its inputs
  have been seen (about 68 derived values an entry once warmed up).
- *deep*: a chain of 8 levels ``L1..L8``, ``L1 = base * 0.5 + s1``, ``Lk = L(k-1) * 0.5 + sk``
  (consume mode); every entry carries ``base`` and ``s1..s8``, so every entry fires all 8.
- *keyed*: the seed's graph as a template over 10,000 device keys in a namespace of
  8 partitions; each entry carries C, D, E, F and the ``@key`` of a device drawn at
  random, so every entry fires A and B of its own device. The only workload with ``P > 1``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import SEED_GRAPH_TOML, seed_workload
from benchmarks.reference import Model, ModelNode

Number = int | float
Fn = Callable[[Sequence[Number]], Number]

#: Default event time of entry 0 (a fixed instant: runs are reproducible; ``@ts`` is event time).
BASE_TS_MS = 1_700_000_000_000

WIDE_INPUTS = 1000
WIDE_DERIVED = 2000
WIDE_READINGS = 10
DEEP_LEVELS = 8
KEYED_KEYS = 10_000
KEYED_PARTITIONS = 8


@dataclass(frozen=True, slots=True)
class Entry:
    """One input entry: its event time, readings (node, value) and key ("" = unkeyed)."""

    ts: int
    readings: tuple[tuple[str, Number], ...]
    key: str = ""

    def xadd_fields(self) -> list[str]:
        """Flat field list for XADD: node, JSON value, ..., ``@ts``, ts (, ``@key``, key)."""
        out: list[str] = []
        for node, value in self.readings:
            out += [node, repr(value)]
        out += ["@ts", str(self.ts)]
        if self.key:
            out += ["@key", self.key]
        return out


@dataclass(slots=True)
class Workload:
    """A graph file, its entries, and the model nodes that describe the graph independently."""

    name: str
    graph_toml: str
    nodes: dict[str, ModelNode]
    entries: list[Entry]
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    partitions: int = 1  # the namespace is loaded with this many partitions

    @property
    def readings_per_entry(self) -> float:
        """Mean readings an entry."""
        if not self.entries:
            return 0.0
        return sum(len(e.readings) for e in self.entries) / len(self.entries)

    def xadd_rows(self, count: int) -> list[list[str]]:
        """XADD fields of the first ``count`` entries (at least one, at most all)."""
        return [e.xadd_fields() for e in self.entries[: max(1, count)]]

    def model(self) -> Model:
        """A fresh model of this workload's graph (empty state): one per key."""
        return Model(dict(self.nodes))


# -- seed -------------------------------------------------------------------------------------


def _add(args: Sequence[Number]) -> Number:
    return sum(args)


def _mul(args: Sequence[Number]) -> Number:
    out: Number = 1
    for a in args:
        out *= a
    return out


def seed(n: int, *, rng_seed: int = 0, base_ts: int = BASE_TS_MS) -> Workload:
    """The seed's graph; entries from :func:`benchmarks.common.seed_workload` (C, D, E, F)."""
    entries = [
        Entry(e.ts, tuple(e.readings().items()))
        for e in seed_workload(n, seed=rng_seed, start_ts_ms=base_ts)
    ]
    nodes = {
        "A": ModelNode(["C", "D", "E"], 60_000, "consume", _add),
        "B": ModelNode(["A", "F"], 60_000, "consume", _mul),
    }
    return Workload(
        "seed",
        SEED_GRAPH_TOML,
        nodes,
        entries,
        "A = add(C, D, E), B = mul(A, F), consume; every entry carries C, D, E, F",
        {"entries": n},
    )


# -- wide -------------------------------------------------------------------------------------


_OPS: dict[str, Callable[[Number, Number], Number]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}


def _fold_fn(ops: tuple[str, ...]) -> Fn:
    """``((a op1 b) op2 c) ...`` as a Python function of the ordered args."""
    funcs = [_OPS[o] for o in ops]

    def fn(args: Sequence[Number]) -> Number:
        acc = args[0]
        for f, x in zip(funcs, args[1:], strict=True):
            acc = f(acc, x)
        return acc

    return fn


def _fold_expr(args: Sequence[str], ops: Sequence[str]) -> str:
    text = args[0]
    for i, (op, arg) in enumerate(zip(ops, args[1:], strict=True)):
        text = f"{text} {op} {arg}" if i == 0 else f"({text}) {op} {arg}"
    return text


def wide(
    n: int,
    *,
    inputs: int = WIDE_INPUTS,
    derived: int = WIDE_DERIVED,
    readings: int = WIDE_READINGS,
    rng_seed: int = 0,
    base_ts: int = BASE_TS_MS,
) -> Workload:
    """``derived`` latest-mode expressions over 2-5 of ``inputs`` inputs; ``readings`` each."""
    rng = random.Random(rng_seed)
    in_names = [f"x{i:04d}" for i in range(inputs)]
    lines = ['[defaults]\nttl = "60s"\nmode = "latest"\n']
    nodes: dict[str, ModelNode] = {}
    for j in range(derived):
        name = f"w{j:04d}"
        args = tuple(rng.sample(in_names, rng.randint(2, 5)))
        ops = tuple(rng.choice("+-*") for _ in args[1:])
        lines.append(f'[nodes.{name}]\nexpr = "{_fold_expr(args, ops)}"\n')
        nodes[name] = ModelNode(list(args), 60_000, "latest", _fold_fn(ops))
    entries = [
        Entry(base_ts + i, tuple((x, rng.randint(1, 9)) for x in rng.sample(in_names, readings)))
        for i in range(n)
    ]
    return Workload(
        "wide",
        "\n".join(lines),
        nodes,
        entries,
        f"{inputs} inputs, {derived} derived exprs over 2-5 inputs, latest; "
        f"{readings} readings an entry",
        {"entries": n, "inputs": inputs, "derived": derived, "readings": readings},
    )


# -- deep -------------------------------------------------------------------------------------


def _half_plus(args: Sequence[Number]) -> Number:
    return args[0] * 0.5 + args[1]


def deep(
    n: int, *, levels: int = DEEP_LEVELS, rng_seed: int = 0, base_ts: int = BASE_TS_MS
) -> Workload:
    """A chain ``Lk = L(k-1) * 0.5 + sk`` of ``levels`` levels over ``base``; all inputs each."""
    rng = random.Random(rng_seed)
    lines = ['[defaults]\nttl = "60s"\nmode = "consume"\n']
    nodes: dict[str, ModelNode] = {}
    prev = "base"
    for k in range(1, levels + 1):
        name = f"L{k}"
        lines.append(f'[nodes.{name}]\nexpr = "{prev} * 0.5 + s{k}"\n')
        nodes[name] = ModelNode([prev, f"s{k}"], 60_000, "consume", _half_plus)
        prev = name
    inputs = ["base"] + [f"s{k}" for k in range(1, levels + 1)]
    entries = [Entry(base_ts + i, tuple((x, rng.randint(1, 9)) for x in inputs)) for i in range(n)]
    return Workload(
        "deep",
        "\n".join(lines),
        nodes,
        entries,
        f"chain of {levels} levels, each over the previous one and an input; "
        f"every entry carries base and s1..s{levels}",
        {"entries": n, "levels": levels},
    )


# -- keyed ------------------------------------------------------------------------------------


def keyed(
    n: int,
    *,
    keys: int = KEYED_KEYS,
    partitions: int = KEYED_PARTITIONS,
    rng_seed: int = 0,
    base_ts: int = BASE_TS_MS,
) -> Workload:
    """The seed's graph over ``keys`` device keys (``dev-00000``...), ``partitions`` partitions.

    The readings are the seed workload's; each entry belongs to a device drawn at random. The
    ``@ts`` rise strictly over all entries, so they rise strictly per key too.
    """
    rng = random.Random(rng_seed + 1)
    names = [f"dev-{k:05d}" for k in range(keys)]
    base = seed(n, rng_seed=rng_seed, base_ts=base_ts)
    entries = [Entry(e.ts, e.readings, rng.choice(names)) for e in base.entries]
    return Workload(
        "keyed",
        SEED_GRAPH_TOML,
        base.nodes,
        entries,
        f"the seed's graph over {keys:,} device keys (@key), {partitions} partitions; "
        "every entry carries C, D, E, F of one device",
        {"entries": n, "keys": keys, "partitions": partitions},
        partitions,
    )


BUILDERS: dict[str, Callable[..., Workload]] = {
    "seed": seed,
    "wide": wide,
    "deep": deep,
    "keyed": keyed,
}


def build(name: str, n: int, **kwargs: Any) -> Workload:
    """The workload ``name`` with ``n`` entries."""
    return BUILDERS[name](n, **kwargs)
