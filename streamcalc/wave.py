"""Glitch-free waves (SPEC S1-S8), evaluated in Python against a batch's view of slot state.

Pure: no I/O. A :class:`BatchView` overlays the worker's cached slot state so a
batch can be thrown away and recomputed when its commit finds that another
worker moved a slot. :func:`run_wave` applies one entry to it, one wave at a
time, and records everything the commit has to write in a :class:`BatchResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from heapq import heappop, heappush

import msgspec

from streamcalc import faults
from streamcalc.errors import FunctionError
from streamcalc.graph import Graph
from streamcalc.messages import Entry
from streamcalc.values import Value

#: One argument slot: never filled (None), or (ts, value); value None = emptied, ts kept.
Slot = tuple[int, Value | None] | None
Slots = list[Slot]

_slots_encoder = msgspec.json.Encoder()
_slots_decoder = msgspec.json.Decoder(
    list[tuple[int, int | float | tuple[int | float, ...] | None] | None]
)


def encode_slots(slots: Slots) -> bytes:
    """The JSON text of a node's slots, as stored in ``sc:{NS}:slots``."""
    return _slots_encoder.encode(slots)


def decode_slots(blob: bytes | None, arity: int) -> Slots:
    """Slots from their stored JSON; a missing or mis-sized state means empty slots."""
    if not blob:
        return [None] * arity
    slots: Slots = list(_slots_decoder.decode(blob))
    if len(slots) != arity:
        return [None] * arity
    return slots


class BatchView:
    """Copy-on-write view of slot state for one batch attempt.

    ``read`` holds every node whose state the batch looked at (their versions are
    checked at commit), ``changed`` the nodes whose slots it wrote.
    """

    __slots__ = ("base", "changed", "read")

    def __init__(self, base: Mapping[str, Slots]) -> None:
        self.base = base
        self.read: dict[str, Slots] = {}
        self.changed: set[str] = set()

    def slots(self, node: str) -> Slots:
        """The batch's working slots of ``node`` (copied from the base on first use)."""
        slots = self.read.get(node)
        if slots is None:
            slots = list(self.base[node])
            self.read[node] = slots
        return slots


@dataclass(slots=True)
class BatchResult:
    """What a batch of waves produced, in the order the commit writes it."""

    fired: list[tuple[str, Value, int, str]] = field(default_factory=list)
    """(node, value, ts, source entry id) for every fired value, in wave order."""
    latest: dict[str, tuple[int, Value]] = field(default_factory=dict)
    """Newest (ts, value) per node seen in the batch (ties: the later one wins, S1)."""
    function_errors: list[tuple[Entry, str, str]] = field(default_factory=list)
    """(entry, node, message) for every node whose function failed (S8)."""
    readings: int = 0
    late: int = 0
    expired: int = 0


class WavePlan:
    """The graph's tables for the hot path, built once per graph.

    ``feeds``: node -> ((derived parent, argument position, parent's rank), ...);
    ``derived``: derived node -> (ttl in ms, consume mode?, its evaluate function).
    """

    __slots__ = ("derived", "feeds", "graph")

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.feeds: dict[str, tuple[tuple[str, int, int], ...]] = {
            node: tuple((parent, position, graph.rank[parent]) for parent, position in fed)
            for node, fed in graph.parents.items()
        }
        self.derived: dict[str, tuple[int, bool, Callable[[list[Value]], Value]]] = {
            name: (node.ttl_ms, node.mode == "consume", graph.function(name))
            for name, node in graph.nodes.items()
        }


def run_wave(plan: WavePlan, entry: Entry, view: BatchView, result: BatchResult) -> None:
    """Apply one entry as one glitch-free wave (S5): readings first, then derived nodes by rank."""
    ts = entry.ts
    dirty: list[tuple[int, str]] = []
    queued: set[str] = set()
    for node, value in entry.readings:
        _offer(plan, view, result, node, value, ts, dirty, queued)
    result.readings += len(entry.readings)
    while dirty:
        _, node = heappop(dirty)
        _evaluate(plan, entry, view, result, node, dirty, queued)


def _offer(
    plan: WavePlan,
    view: BatchView,
    result: BatchResult,
    node: str,
    value: Value,
    ts: int,
    dirty: list[tuple[int, str]],
    queued: set[str],
) -> None:
    """Apply a value of ``node`` to its latest value (S1) and to every slot it feeds (S2)."""
    latest = result.latest
    known = latest.get(node)
    if known is None or ts >= known[0]:
        latest[node] = (ts, value)
    read = view.read
    for parent, position, rank in plan.feeds.get(node, ()):
        slots = read.get(parent)
        if slots is None:
            slots = read[parent] = list(view.base[parent])
        slot = slots[position]
        if slot is not None and ts < slot[0]:
            result.late += 1
            continue
        slots[position] = (ts, value)
        if parent not in queued:
            queued.add(parent)
            view.changed.add(parent)
            heappush(dirty, (rank, parent))


def _evaluate(
    plan: WavePlan,
    entry: Entry,
    view: BatchView,
    result: BatchResult,
    node: str,
    dirty: list[tuple[int, str]],
    queued: set[str],
) -> None:
    """Expire old slots (S3), fire when complete, and consume (S4) or keep the slots."""
    ttl_ms, consume, evaluate = plan.derived[node]
    slots = view.read[node]
    args: list[Value] = []
    t_max = -1
    for slot in slots:
        if slot is not None and slot[1] is not None:
            args.append(slot[1])
            if slot[0] > t_max:
                t_max = slot[0]
    complete = len(args) == len(slots)
    if ttl_ms:
        cutoff = t_max - ttl_ms
        for i, slot in enumerate(slots):
            if slot is not None and slot[1] is not None and slot[0] < cutoff:
                slots[i] = (slot[0], None)
                result.expired += 1
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
    result.fired.append((node, value, t_max, entry.id))
    if faults.ENABLED:
        faults.reached("mid_wave")
    _offer(plan, view, result, node, value, t_max, dirty, queued)
