"""Glitch-free waves (docs/semantics.md), evaluated in Python against one key's view of slot state.

Pure: no I/O, and no knowledge of partitions or of other keys. :func:`run_wave`
applies one entry to the :class:`~streamcalc.state.KeyView` of the entry's key,
one wave at a time, and records what the commit has to write in a
:class:`BatchResult` (fired values carry the entry's key through).

The hot path is built once per graph (:class:`WavePlan`): for every node, a
closure that applies one of its values to its latest value and to each slot it
feeds; for every derived node, a fire function compiled from Python source
generated per shape of node (its arity, mode, ttl and formula): it fires the
node when all its slots are filled and none has expired, with the slot checks
unrolled and a formula of numbers and ``+ - *`` written out (see
``Graph.scalar_formula``), then applies the fired value. Anything else (a slot
empty, consumed or expired) takes the one generic path, :func:`_fire_slowly`.
The source holds no node name: only the validated formula's operators and
numeric literals (``repr``); nothing an entry or Redis holds becomes code.
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
    """The graph's wave code, built once per graph.

    ``apply``: node -> the function that applies one of its values (every node of the graph);
    ``fire``: index of a derived node in ``graph.order`` -> the function that evaluates it
    (a wave's dirty nodes are these indices, so a heap of ints pops them in (rank, name)
    order); ``derived``: derived node -> (ttl in ms, consume mode?, its evaluate function);
    ``generations``: derived node -> generation of its definition (stored with its slots);
    ``known``: every node name of the graph.
    """

    __slots__ = ("apply", "derived", "fire", "generations", "graph", "known", "shapes")

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
        index = {name: j for j, name in enumerate(graph.order)}
        self.apply: dict[str, Apply] = {
            name: _applier(
                name, tuple((p, pos, index[p]) for p, pos in graph.parents.get(name, ()))
            )
            for name in sorted(self.known)
        }
        self.shapes: dict[tuple[int, bool, bool, str | None], Callable[..., Fire]] = {}
        """The compiled fire functions' factories, one per shape of derived node."""
        self.fire: list[Fire] = [self._fire(name) for name in graph.order]

    def _fire(self, node: str) -> Fire:
        ttl_ms, consume, evaluate = self.derived[node]
        apply = self.apply[node]

        def slow(
            entry: Entry, view: KeyView, result: BatchResult, dirty: list[int], queued: set[int]
        ) -> None:
            _fire_slowly(node, ttl_ms, consume, evaluate, apply, entry, view, result, dirty, queued)

        arity = len(self.graph.nodes[node].args)
        if arity > MAX_UNROLLED_ARGS:
            return slow
        scalar = self.graph.scalar_formula(node)
        if scalar is not None and len(self.shapes) >= MAX_SHAPES:
            scalar = None  # past so many formulas, the node's function evaluates it
        shape = (arity, consume, bool(ttl_ms), scalar)
        factory = self.shapes.get(shape)
        if factory is None:
            factory = self.shapes[shape] = _compile_shape(*shape)
        fire: Fire = factory(node, ttl_ms, evaluate, slow, apply)
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


def _applier(node: str, feeds: tuple[tuple[str, int, int], ...]) -> Apply:
    """The function that applies a value of ``node`` at ``ts``: its latest value, then
    every slot it feeds (``feeds``: derived node, argument position, index in the order)
    unless the slot holds a newer ts (late); a changed slot queues its node once a wave."""

    def apply(
        value: Value,
        ts: int,
        view: KeyView,
        result: BatchResult,
        dirty: list[int],
        queued: set[int],
    ) -> None:
        latest = view.latest
        known = latest.get(node)
        if known is None or ts >= known[0]:
            latest[node] = (ts, value)
        working = view.working
        for parent, position, index in feeds:
            slots = working.get(parent)
            if slots is None:
                slots = _copy_slots(view, parent)
            slot = slots[position]
            if slot is not None and ts < slot[0]:
                result.late += 1
                continue
            slots[position] = (ts, value)
            if index not in queued:
                queued.add(index)
                view.changed.add(parent)
                heappush(dirty, index)

    def apply_latest(
        value: Value,
        ts: int,
        view: KeyView,
        result: BatchResult,
        dirty: list[int],
        queued: set[int],
    ) -> None:
        latest = view.latest
        known = latest.get(node)
        if known is None or ts >= known[0]:
            latest[node] = (ts, value)

    return apply if feeds else apply_latest  # a node that feeds nothing: its latest value only


#: At most this many distinct formulas are written out (each compiles its own code).
MAX_SHAPES = 500


def _compile_shape(arity: int, consume: bool, ttl: bool, scalar: str | None) -> Callable[..., Fire]:
    """The factory ``make(node, ttl_ms, evaluate, slow, apply)`` of the fire functions of
    every derived node of one shape: its arity, mode, whether it has a ttl, and its
    formula written out (or None). Compiled from :func:`_shape_source`."""
    namespace: dict[str, Any] = {"faults": faults, "FunctionError": FunctionError}
    source = _shape_source(arity, consume, ttl, scalar)
    # The source is built from the validated graph alone (see the module doc).
    exec(compile(source, f"<wave: {arity} arguments>", "exec"), namespace)
    factory: Callable[..., Fire] = namespace["make"]
    return factory


def _shape_source(arity: int, consume: bool, ttl: bool, scalar: str | None) -> str:
    """``make``: fire ``node`` when every slot holds a value and none expired (else
    ``slow`` decides), consume its slots in consume mode, then apply the fired value."""
    n = arity
    slot_names = ", ".join(f"s{k}" for k in range(n)) + ("," if n == 1 else "")
    values = ", ".join(f"v{k}" for k in range(n))
    lines = [
        "def make(node, ttl_ms, evaluate, slow, apply):",
        "  def fire(entry, view, result, dirty, queued):",
        "    slots = view.working[node]",
        f"    {slot_names} = slots",
        f"    if {' or '.join(f's{k} is None' for k in range(n))}:",
        "        return slow(entry, view, result, dirty, queued)",
    ]
    lines += [f"    t{k}, v{k} = s{k}" for k in range(n)]
    lines += [
        f"    if {' or '.join(f'v{k} is None' for k in range(n))}:",
        "        return slow(entry, view, result, dirty, queued)",
        "    t_max = t0",
    ]
    for k in range(1, n):
        lines += [f"    if t{k} > t_max:", f"        t_max = t{k}"]
    if ttl:
        lines.append("    t_min = t0")
        for k in range(1, n):
            lines += [f"    if t{k} < t_min:", f"        t_min = t{k}"]
        lines += [
            "    if t_min < t_max - ttl_ms:",
            "        return slow(entry, view, result, dirty, queued)",
        ]
    call = [
        "    try:",
        f"        value = evaluate([{values}])",
        "    except FunctionError as exc:",
        "        result.function_errors.append((entry, node, str(exc)))",
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
    if consume:
        lines += [f"    slots[{k}] = (t{k}, None)" for k in range(n)]
    lines += [
        "    result.fired.append((node, value, t_max, entry.id, entry.key))",
        "    if faults.ENABLED:",
        "        faults.reached('mid_wave')",
        "    apply(value, t_max, view, result, dirty, queued)",
        "  return fire",
    ]
    return "\n".join(lines) + "\n"
