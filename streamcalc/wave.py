"""Glitch-free waves (docs/semantics.md), evaluated in Python against one key's view of slot state.

Pure: no I/O, and no knowledge of partitions or of other keys. :func:`run_wave`
applies one entry to the :class:`~streamcalc.state.KeyView` of the entry's key,
one wave at a time, and records what the commit has to write in a
:class:`BatchResult` (fired values carry the entry's key through).

The hot path is Python code generated once per graph (:class:`WavePlan`): for
every node, a function that applies one of its values to its latest value and to
each slot it feeds, with the slots, positions and ranks written in as constants;
for every derived node, a function that fires it when all its slots are filled
and none has expired (a formula of numbers and ``+ - *`` written out as Python
when every argument is a number, see ``Graph.scalar_formula``), and then applies
the fired value the same way. Anything
else (a slot empty, consumed or expired) takes the one generic path,
:func:`_fire_slowly`. The source is built from the validated graph only: node
names enter it as string literals (``repr``), numbers as ints, and nothing an
entry or Redis holds ever becomes code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

from streamcalc import faults
from streamcalc.errors import FunctionError
from streamcalc.graph import Graph
from streamcalc.messages import Entry
from streamcalc.state import KeyView, Slot, Slots, generation
from streamcalc.values import Value


@dataclass(slots=True)
class BatchResult:
    """What a batch of waves produced, in the order the commit writes it."""

    fired: list[tuple[str, Value, int, str, str]] = field(default_factory=list)
    """(node, value, ts, source entry id, key) for every fired value, in wave order."""
    function_errors: list[tuple[Entry, str, str]] = field(default_factory=list)
    """(entry, node, message) for every node whose function failed (a dead letter each)."""
    readings: int = 0
    unknown: int = 0
    """Readings of names that are not nodes of the graph: not stored, trigger nothing."""
    late: int = 0
    expired: int = 0


#: Applies a value of one node: (value, ts, view, result, dirty, queued).
Apply = Callable[[Value, int, KeyView, BatchResult, list[int], set[int]], None]
#: Evaluates one derived node in a wave: (entry, view, result, dirty, queued).
Fire = Callable[[Entry, KeyView, BatchResult, list[int], set[int]], None]

#: A derived node of more arguments than this fires through the generic path only.
MAX_UNROLLED_ARGS = 16

#: Above every ts (an entry's @ts is at most 2^53 - 1).
_NO_TS = 2**63
#: An int result of at least this magnitude is not kept as it is (see values.normalize).
_INT_LIMIT = 2**63


class WavePlan:
    """The graph's wave code, generated and compiled once per graph.

    ``apply``: node -> the function that applies one of its values (every node of the graph);
    ``fire``: index of a derived node in ``graph.order`` -> the function that evaluates it
    (a wave's dirty nodes are these indices, so a heap of ints pops them in (rank, name)
    order); ``derived``: derived node -> (ttl in ms, consume mode?, its evaluate function);
    ``generations``: derived node -> generation of its definition (stored with its slots);
    ``known``: every node name of the graph.
    """

    __slots__ = ("apply", "derived", "fire", "generations", "graph", "known", "source")

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.derived: dict[str, tuple[int, bool, Callable[[list[Value]], Value]]] = {
            name: (node.ttl_ms, node.mode == "consume", graph.function(name))
            for name, node in graph.nodes.items()
        }
        self.known = frozenset(graph.nodes) | graph.inputs
        """Every node of the graph: a reading of any other name is unknown."""
        self.generations: dict[str, bytes] = {
            name: generation(text) for name, text in graph.definitions().items()
        }
        nodes = sorted(self.known)
        self.source = _source(graph, nodes)
        """The generated Python source of ``apply`` and ``fire``."""
        self.apply: dict[str, Apply] = {}
        self.fire: list[Fire] = []
        self._compile(nodes)

    def _compile(self, nodes: list[str]) -> None:
        order = self.graph.order
        namespace: dict[str, Any] = {
            "F": [self.derived[name][2] for name in order],
            "heappush": heappush,
            "faults": faults,
            "FunctionError": FunctionError,
            "copy_slots": _copy_slots,
        }
        label = f"<wave of graph {self.graph.version_hash[:12]}>"
        # The source is built from the validated graph alone (see the module doc).
        exec(compile(self.source, label, "exec"), namespace)
        self.apply = {name: namespace[f"a_{i}"] for i, name in enumerate(nodes)}
        slow: list[Fire] = [self._slow(j, name) for j, name in enumerate(order)]
        namespace["SLOW"] = slow
        self.fire = [namespace.get(f"f_{j}", slow[j]) for j in range(len(order))]

    def _slow(self, index: int, node: str) -> Fire:
        ttl_ms, consume, evaluate = self.derived[node]
        apply = self.apply[node]

        def fire(
            entry: Entry, view: KeyView, result: BatchResult, dirty: list[int], queued: set[int]
        ) -> None:
            _fire_slowly(node, ttl_ms, consume, evaluate, apply, entry, view, result, dirty, queued)

        return fire


def run_wave(plan: WavePlan, entry: Entry, view: KeyView, result: BatchResult) -> None:
    """Apply one entry as one glitch-free wave: readings first, then derived nodes by rank.

    ``view`` is the state of the entry's key: the wave reads and writes nothing else.
    """
    ts = entry.ts
    dirty: list[int] = []
    queued: set[int] = set()
    apply = plan.apply
    unknown = 0
    for node, value in entry.readings:
        known = apply.get(node)
        if known is None:
            unknown += 1
        else:
            known(value, ts, view, result, dirty, queued)
    if unknown:
        result.unknown += unknown
    result.readings += len(entry.readings)
    if dirty:
        fire = plan.fire
        while dirty:
            fire[heappop(dirty)](entry, view, result, dirty, queued)


def _copy_slots(view: KeyView, node: str) -> Slots:
    """The batch's working copy of ``node``'s slots, made on its first change in the batch."""
    source = view.overlay.get(node)
    slots = view.working[node] = list(source if source is not None else view.base[node])
    return slots


def _fire_slowly(
    node: str,
    ttl_ms: int,
    consume: bool,
    evaluate: Callable[[list[Value]], Value],
    apply: Apply,
    entry: Entry,
    view: KeyView,
    result: BatchResult,
    dirty: list[int],
    queued: set[int],
) -> None:
    """Expire old slots (TTL), fire when complete, and consume or keep the slots (mode)."""
    slots = view.working[node]
    args: list[Value] = []
    t_max = -1
    t_min = _NO_TS
    for slot in slots:
        if slot is not None:
            value = slot[1]
            if value is not None:
                args.append(value)
                ts = slot[0]
                if ts > t_max:
                    t_max = ts
                if ts < t_min:
                    t_min = ts
    complete = len(args) == len(slots)
    if ttl_ms and t_min < t_max - ttl_ms:  # some slot expired (the oldest one at least)
        _expire(slots, t_max - ttl_ms, result)
        complete = False
    if not complete:
        return
    try:
        value = evaluate(args)
    except FunctionError as exc:
        result.function_errors.append((entry, node, str(exc)))
        return
    if consume:
        slots[:] = [(slot[0], None) for slot in slots]  # type: ignore[index]
    result.fired.append((node, value, t_max, entry.id, entry.key))
    if faults.ENABLED:
        faults.reached("mid_wave")
    apply(value, t_max, view, result, dirty, queued)


def _expire(slots: list[Slot], cutoff: int, result: BatchResult) -> None:
    """Empty every filled slot older than ``cutoff`` (expired by its TTL); each keeps its ts."""
    for i, slot in enumerate(slots):
        if slot is not None and slot[1] is not None and slot[0] < cutoff:
            slots[i] = (slot[0], None)
            result.expired += 1


# -- the generated code ------------------------------------------------------------------------


def _source(graph: Graph, nodes: list[str]) -> str:
    """Python source of ``a_<i>`` (apply a value of ``nodes[i]``) for every node and of
    ``f_<j>`` (fire ``graph.order[j]``) for every derived node of a few arguments."""
    index = {name: j for j, name in enumerate(graph.order)}
    lines: list[str] = []
    for i, name in enumerate(nodes):
        lines.append(f"def a_{i}(value, ts, view, result, dirty, queued):")
        lines += _apply_lines(graph, index, name, "    ")
        lines.append("")
    for j, name in enumerate(graph.order):
        node = graph.nodes[name]
        if len(node.args) <= MAX_UNROLLED_ARGS:
            lines += _fire_lines(graph, index, j, name)
            lines.append("")
    return "\n".join(lines)


def _apply_lines(graph: Graph, index: dict[str, int], name: str, pad: str) -> list[str]:
    """Statements applying ``value`` (of node ``name``, at ``ts``): its latest value, then
    every slot it feeds unless the slot holds a newer ts (late); a changed slot queues its
    node once per wave."""
    node = repr(name)
    lines = [
        f"{pad}latest = view.latest",
        f"{pad}known = latest.get({node})",
        f"{pad}if known is None or ts >= known[0]:",
        f"{pad}    latest[{node}] = (ts, value)",
    ]
    fed = graph.parents.get(name, ())
    if fed:
        lines.append(f"{pad}working = view.working")
    for parent, position in fed:
        p, j, pos = repr(parent), index[parent], int(position)
        lines += [
            f"{pad}slots = working.get({p})",
            f"{pad}if slots is None:",
            f"{pad}    slots = copy_slots(view, {p})",
            f"{pad}slot = slots[{pos}]",
            f"{pad}if slot is not None and ts < slot[0]:",
            f"{pad}    result.late += 1",
            f"{pad}else:",
            f"{pad}    slots[{pos}] = (ts, value)",
            f"{pad}    if {j} not in queued:",
            f"{pad}        queued.add({j})",
            f"{pad}        view.changed.add({p})",
            f"{pad}        heappush(dirty, {j})",
        ]
    return lines


def _fire_lines(graph: Graph, index: dict[str, int], j: int, name: str) -> list[str]:
    """``f_<j>``: fire derived node ``name`` when every slot holds a value and none expired
    (else ``SLOW[j]`` decides), consume its slots in consume mode, apply the fired value."""
    node = graph.nodes[name]
    n = len(node.args)
    ttl = int(node.ttl_ms)
    slot_names = ", ".join(f"s{k}" for k in range(n)) + ("," if n == 1 else "")
    values = ", ".join(f"v{k}" for k in range(n))
    lines = [
        f"def f_{j}(entry, view, result, dirty, queued):",
        f"    slots = view.working[{name!r}]",
        f"    {slot_names} = slots",
        f"    if {' or '.join(f's{k} is None' for k in range(n))}:",
        f"        return SLOW[{j}](entry, view, result, dirty, queued)",
    ]
    lines += [f"    t{k}, v{k} = s{k}" for k in range(n)]
    lines += [
        f"    if {' or '.join(f'v{k} is None' for k in range(n))}:",
        f"        return SLOW[{j}](entry, view, result, dirty, queued)",
        "    t_max = t0",
    ]
    for k in range(1, n):
        lines += [f"    if t{k} > t_max:", f"        t_max = t{k}"]
    if ttl:
        lines.append("    t_min = t0")
        for k in range(1, n):
            lines += [f"    if t{k} < t_min:", f"        t_min = t{k}"]
        lines += [
            f"    if t_min < t_max - {ttl}:",
            f"        return SLOW[{j}](entry, view, result, dirty, queued)",
        ]
    scalar = graph.scalar_formula(name)
    call = [
        "    try:",
        f"        value = F[{j}]([{values}])",
        "    except FunctionError as exc:",
        f"        result.function_errors.append((entry, {name!r}, str(exc)))",
        "        return",
    ]
    if scalar is None:
        lines += call
    else:
        # On numbers, the formula written out; its function decides anything else. Never
        # on a vector: Python's tuple * int repeats the tuple (a huge one for a big int).
        lines += [
            "    value = None",
            f"    if {' and '.join(f'type(v{k}) is not tuple' for k in range(n))}:",
            "        try:",
            f"            found = {scalar}",
            "        except Exception:",
            "            found = None",
            "        if type(found) is float:",
            "            if found - found == 0.0:",
            "                value = found",
            f"        elif type(found) is int and {-_INT_LIMIT} < found < {_INT_LIMIT}:",
            "            value = found",
            "    if value is None:",
        ]
        lines += ["    " + line for line in call]
    if node.mode == "consume":
        lines += [f"    slots[{k}] = (t{k}, None)" for k in range(n)]
    lines += [
        f"    result.fired.append(({name!r}, value, t_max, entry.id, entry.key))",
        "    if faults.ENABLED:",
        "        faults.reached('mid_wave')",
        "    ts = t_max",
    ]
    lines += _apply_lines(graph, index, name, "    ")
    return lines
