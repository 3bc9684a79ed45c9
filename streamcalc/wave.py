"""Glitch-free waves (docs/semantics.md), evaluated in Python against one key's view of slot state.

Pure: no I/O, and no knowledge of partitions or of other keys. :func:`run_wave`
applies one entry to the :class:`~streamcalc.state.KeyView` of the entry's key,
one wave at a time, and records what the commit has to write in a
:class:`BatchResult` (fired values carry the entry's key through).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from heapq import heappop, heappush

from streamcalc import faults
from streamcalc.errors import FunctionError
from streamcalc.graph import Graph
from streamcalc.messages import Entry
from streamcalc.state import KeyView, Slot, generation
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


class WavePlan:
    """The graph's tables for the hot path, built once per graph.

    ``feeds``: node -> ((derived parent, argument position, parent's rank), ...);
    ``derived``: derived node -> (ttl in ms, consume mode?, its evaluate function);
    ``generations``: derived node -> generation of its definition (stored with its slots);
    ``known``: every node name of the graph.
    """

    __slots__ = ("derived", "feeds", "generations", "graph", "known")

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
        self.known = frozenset(graph.nodes) | graph.inputs
        """Every node of the graph: a reading of any other name is unknown."""
        self.generations: dict[str, bytes] = {
            name: generation(text) for name, text in graph.definitions().items()
        }


#: Above every ts (an entry's @ts is at most 2^53 - 1).
_NO_TS = 2**63


def run_wave(plan: WavePlan, entry: Entry, view: KeyView, result: BatchResult) -> None:
    """Apply one entry as one glitch-free wave: readings first, then derived nodes by rank.

    ``view`` is the state of the entry's key: the wave reads and writes nothing else.
    """
    ts = entry.ts
    dirty: list[tuple[int, str]] = []
    queued: set[str] = set()
    known = plan.known
    for node, value in entry.readings:
        if node in known:
            _apply(plan, view, result, node, value, ts, dirty, queued)
        else:
            result.unknown += 1
    result.readings += len(entry.readings)
    while dirty:
        _, node = heappop(dirty)
        _expire_and_fire(plan, entry, view, result, node, dirty, queued)


def _apply(
    plan: WavePlan,
    view: KeyView,
    result: BatchResult,
    node: str,
    value: Value,
    ts: int,
    dirty: list[tuple[int, str]],
    queued: set[str],
) -> None:
    """Apply a value of ``node`` to its latest value and to every slot it feeds (unless late)."""
    latest = view.latest
    known = latest.get(node)
    if known is None or ts >= known[0]:
        latest[node] = (ts, value)
    working = view.working
    for parent, position, rank in plan.feeds.get(node, ()):
        slots = working.get(parent)
        if slots is None:
            source = view.overlay.get(parent)
            slots = working[parent] = list(source if source is not None else view.base[parent])
        slot = slots[position]
        if slot is not None and ts < slot[0]:
            result.late += 1
            continue
        slots[position] = (ts, value)
        if parent not in queued:
            queued.add(parent)
            view.changed.add(parent)
            heappush(dirty, (rank, parent))


def _expire_and_fire(
    plan: WavePlan,
    entry: Entry,
    view: KeyView,
    result: BatchResult,
    node: str,
    dirty: list[tuple[int, str]],
    queued: set[str],
) -> None:
    """Expire old slots (TTL), fire when complete, and consume or keep the slots (mode)."""
    ttl_ms, consume, evaluate = plan.derived[node]
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
    _apply(plan, view, result, node, value, t_max, dirty, queued)


def _expire(slots: list[Slot], cutoff: int, result: BatchResult) -> None:
    """Empty every filled slot older than ``cutoff`` (expired by its TTL); each keeps its ts."""
    for i, slot in enumerate(slots):
        if slot is not None and slot[1] is not None and slot[0] < cutoff:
            slots[i] = (slot[0], None)
            result.expired += 1
