"""Slot state of one partition: how it is stored, the worker's bounded cache of it, batch views.

State is keyed (docs/keys-and-partitions.md): every (key, derived node) has its own slots. In Redis
they are one field of the partition's ``slots`` hash (:func:`keys.state_field`),
whose value starts with the generation of the node's definition, so a graph
load that changes a node makes its old slots of every key read as empty
without touching millions of fields.

A worker keeps the state it recently used in a :class:`StateCache`, least
recently used keys evicted first. Correctness never depends on the cache: one
worker at a time owns a partition (its lease fences every commit), the cache
is dropped whenever the partition is (re)acquired or the graph changes, and a
batch copies what it reads into its own :class:`BatchView` before it changes it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import msgspec

from streamcalc.graph import Graph
from streamcalc.keys import state_field
from streamcalc.messages import Entry
from streamcalc.values import Value

#: One argument slot: never filled (None), or (ts, value); value None = emptied, ts kept.
Slot = tuple[int, Value | None] | None
Slots = list[Slot]

_slots_encoder = msgspec.json.Encoder()
_slots_decoder = msgspec.json.Decoder(
    list[tuple[int, int | float | tuple[int | float, ...] | None] | None]
)


def generation(definition: bytes) -> bytes:
    """A short digest of a node's canonical definition; stored slots carry it."""
    return hashlib.blake2b(definition, digest_size=6).hexdigest().encode()


def encode_slots(slots: Slots, gen: bytes) -> bytes:
    """The stored form of a node's slots: ``<generation> <json>``."""
    return gen + b" " + _slots_encoder.encode(slots)


class TamperedState(ValueError):
    """Stored state that streamcalc did not write (it reads as empty; the worker says so)."""


def decode_slots(blob: bytes | None, arity: int, gen: bytes) -> Slots:
    """Slots from their stored form; missing, mis-sized or another generation's means empty.

    Stored text that does not decode raises TamperedState (the caller logs it and
    treats the slots as empty): whoever wrote it, it must not stop the worker.
    """
    if not blob:
        return [None] * arity
    stored_gen, _, text = blob.partition(b" ")
    if stored_gen != gen:
        return [None] * arity
    try:
        slots: Slots = list(_slots_decoder.decode(text))
    except msgspec.DecodeError as exc:
        raise TamperedState(f"stored slots do not decode: {exc}") from None
    if len(slots) != arity:
        return [None] * arity
    return slots


class KeyState:
    """The cached slots of one key, and the nodes whose downstream slots are all loaded."""

    __slots__ = ("covered", "slots")

    def __init__(self) -> None:
        self.slots: dict[str, Slots] = {}
        self.covered: set[str] = set()


class StateCache:
    """The slot state a worker recently used, at most ``capacity`` keys of it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        self._keys: OrderedDict[str, KeyState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        """Forget everything (a new graph, or the partition changed hands)."""
        self._keys.clear()

    def get(self, key: str) -> KeyState:
        """The state of ``key``, created empty if not cached; marks it recently used."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = KeyState()
        else:
            self._keys.move_to_end(key)
        return state

    def missing(self, graph: Graph, entries: Iterable[Entry]) -> list[tuple[str, str]]:
        """The (key, derived node) states the waves of ``entries`` may touch that are not cached."""
        needed: list[tuple[str, str]] = []
        last_key: str | None = None
        state = KeyState()
        for entry in entries:
            if entry.key != last_key:
                last_key, state = entry.key, self.get(entry.key)
            covered = state.covered
            for node, _ in entry.readings:
                if node not in covered:
                    covered.add(node)
                    slots = state.slots
                    needed += [(entry.key, d) for d in graph.downstream(node) if d not in slots]
        return needed

    def fill(self, key: str, node: str, slots: Slots) -> None:
        """Cache slots read from Redis (unless a newer commit already cached them)."""
        self.get(key).slots.setdefault(node, slots)

    def update(self, changed: Iterable[tuple[str, Iterable[tuple[str, Slots]]]]) -> None:
        """Cache the slots a committed batch wrote (see :meth:`BatchView.changed`)."""
        for key, nodes in changed:
            self.get(key).slots.update(nodes)

    def evict(self, keep: int = 0) -> int:
        """Drop least recently used keys beyond the capacity, never the ``keep`` newest."""
        excess = min(len(self._keys) - self.capacity, len(self._keys) - keep)
        for _ in range(max(excess, 0)):
            self._keys.popitem(last=False)
        return max(excess, 0)

    def base(self, key: str) -> dict[str, Slots]:
        """The cached slots of ``key`` (read-only use: batches copy before they write)."""
        state = self._keys.get(key)
        return state.slots if state is not None else {}


class KeyView:
    """One key's part of a batch view: what run_wave reads and writes for that key.

    Slots are read from ``overlay`` (the working slots of the batch this one is
    speculated on, if any) and else from ``base`` (the cache), and copied into
    ``working`` before they change.
    """

    __slots__ = ("base", "changed", "latest", "overlay", "working")

    def __init__(self, base: Mapping[str, Slots], overlay: Mapping[str, Slots] | None = None):
        self.base = base
        self.overlay: Mapping[str, Slots] = overlay or _EMPTY
        self.working: dict[str, Slots] = {}
        """Slots the batch copied from the base; the batch works on these copies."""
        self.changed: set[str] = set()
        self.latest: dict[str, tuple[int, Value]] = {}
        """Newest (ts, value) per node of this key seen in the batch (ties: the later wins)."""

    def slots(self, node: str) -> Slots:
        """The batch's working slots of ``node`` (copied from the base on first use)."""
        slots = self.working.get(node)
        if slots is None:
            source = self.overlay.get(node)
            slots = self.working[node] = list(source if source is not None else self.base[node])
        return slots


_EMPTY: Mapping[str, Slots] = {}


class BatchView:
    """Copy-on-write view of a partition's slot state for one batch attempt, per key.

    With ``after`` (a batch whose commit is not yet known), the view starts from
    that batch's working state, as if its commit had succeeded.
    """

    __slots__ = ("_after", "_cache", "keys")

    def __init__(self, cache: StateCache, after: BatchView | None = None) -> None:
        self._cache = cache
        self._after = after
        self.keys: dict[str, KeyView] = {}

    def scope(self, key: str) -> KeyView:
        """The view of ``key``'s state."""
        view = self.keys.get(key)
        if view is None:
            after = self._after.keys.get(key) if self._after is not None else None
            overlay = after.working if after is not None else None
            view = self.keys[key] = KeyView(self._cache.base(key), overlay)
        return view

    def changed(self) -> Iterable[tuple[str, Iterable[tuple[str, Slots]]]]:
        """(key, ((node, new slots), ...)) for every key and node whose slots the batch changed."""
        for key, view in self.keys.items():
            if view.changed:
                working = view.working
                yield key, [(node, working[node]) for node in view.changed]

    def fields(self) -> Iterable[tuple[str, str, Slots]]:
        """(state field, node, slots) of every changed node, for the commit."""
        for key, view in self.keys.items():
            prefix = state_field(key, "")
            working = view.working
            for node in view.changed:
                yield prefix + node, node, working[node]
