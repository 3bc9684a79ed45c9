"""Slot state of one partition: how it is stored, the worker's bounded cache of it, batch views.

State is keyed (docs/keys-and-partitions.md): every (key, derived node) has its own slots.
Stored slots carry the generation of their node's definition, so a graph load
that changes a node makes its old slots of every key read as empty without
touching millions of fields. In the partition's ``slots`` hash, the empty key
has one field per derived node (the node's name: ``<generation> <json>``); a
non-empty key ``k`` has one field, ``k|`` (:func:`keys.key_field`), for all of
its nodes: ``{node: [generation, slots]}``. Its latest values are likewise one
field ``k|`` of the ``latest`` hash, ``{node: [ts, value]}``, which the worker
writes whole: it keeps the key's latest values in its cache with its slots, so
a commit writes two fields per key in place of one per (key, node).

A worker keeps the state it recently used in a :class:`StateCache`, least
recently used keys evicted first. Correctness never depends on the cache: one
worker at a time owns a partition (its lease fences every commit), the cache
is dropped whenever the partition is (re)acquired or the graph changes, and a
batch copies what it reads into its own :class:`BatchView` before it changes it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from streamcalc.graph import Graph
from streamcalc.keys import KEY_SEPARATOR, key_field, state_field
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


#: The latest values of one key: node -> (ts, value).
Latest = dict[str, tuple[int, Value]]

_StoredValue = int | float | tuple[int | float, ...]
_key_slots_decoder = msgspec.json.Decoder(
    dict[str, tuple[str, list[tuple[int, _StoredValue | None] | None]]]
)
_key_latest_decoder = msgspec.json.Decoder(dict[str, tuple[int, _StoredValue]])


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


def encode_key_slots(
    slots: Mapping[str, Slots], gens: Mapping[str, str], empty: Mapping[str, Slots]
) -> bytes:
    """The stored form of a non-empty key's slots: ``{node: [generation, slots]}``; the
    never filled ones (``empty``'s own lists) are left out."""
    return _slots_encoder.encode(
        {node: (gens[node], s) for node, s in slots.items() if s is not empty[node]}
    )


def decode_key_slots(
    blob: bytes | None, arities: Mapping[str, int], gens: Mapping[str, str]
) -> dict[str, Slots]:
    """A non-empty key's slots from their stored form, node by node: a node not in
    ``arities`` (not derived now), of another generation or mis-sized is left out
    (its slots read as empty). Text that does not decode raises TamperedState."""
    if not blob:
        return {}
    try:
        stored = _key_slots_decoder.decode(blob)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise TamperedState(f"stored slots do not decode: {exc}") from None
    return {
        node: slots
        for node, (gen, slots) in stored.items()
        if gens.get(node) == gen and len(slots) == arities[node]
    }


def encode_key_latest(latest: Latest) -> bytes:
    """The stored form of a non-empty key's latest values: ``{node: [ts, value]}``."""
    return _slots_encoder.encode(latest)


def decode_key_latest(blob: bytes | None) -> Latest:
    """A non-empty key's latest values from their stored form (TamperedState if they do
    not decode)."""
    if not blob:
        return {}
    try:
        return _key_latest_decoder.decode(blob)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise TamperedState(f"stored latest values do not decode: {exc}") from None


class KeyState:
    """The cached state of one key.

    The empty key's slots are loaded node by node (``covered``: the nodes whose
    downstream slots are all loaded); a non-empty key's are loaded ``whole``, with
    its latest values, so that its commit can write them whole.
    """

    __slots__ = ("covered", "latest", "slots", "whole")

    def __init__(self) -> None:
        self.slots: dict[str, Slots] = {}
        self.covered: set[str] = set()
        self.latest: Latest = {}
        self.whole = False


@dataclass(slots=True)
class Missing:
    """What a batch needs that the cache lacks: the empty key's derived nodes, whole keys."""

    nodes: list[str]
    keys: list[str]

    def __bool__(self) -> bool:
        return bool(self.nodes or self.keys)


class StateCache:
    """The slot state a worker recently used, at most ``capacity`` keys of it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        self._keys: OrderedDict[str, KeyState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        """True for a key whose state is cached: a key of a good entry of this partition."""
        return key in self._keys

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

    def missing(self, graph: Graph, entries: Iterable[Entry]) -> Missing:
        """The state the waves of ``entries`` may touch that is not cached: the empty
        key's derived nodes, and the non-empty keys (each loaded whole)."""
        nodes: list[str] = []
        keys: list[str] = []
        asked: set[str] = set()
        last_key: str | None = None
        state = KeyState()
        get = self.get
        for entry in entries:
            key = entry.key
            if key != last_key:
                last_key, state = key, get(key)
            if key:
                if not state.whole and key not in asked:
                    asked.add(key)
                    keys.append(key)
                continue
            covered = state.covered
            for node, _ in entry.readings:
                if node not in covered:
                    covered.add(node)
                    slots = state.slots
                    nodes += [d for d in graph.downstream(node) if d not in slots]
        return Missing(nodes, keys)

    def fill(self, node: str, slots: Slots) -> None:
        """Cache slots of the empty key read from Redis (unless a newer commit cached them)."""
        self.get("").slots.setdefault(node, slots)

    def fill_key(self, key: str, slots: dict[str, Slots], latest: Latest) -> None:
        """Cache a non-empty key's whole state read from Redis (unless a commit cached it)."""
        state = self.get(key)
        if not state.whole:
            state.slots, state.latest, state.whole = slots, latest, True

    def update(self, view: BatchView) -> None:
        """Cache the state a committed batch wrote."""
        cached = self._keys
        for key, scope in view.keys.items():
            if key:
                # A key evicted meanwhile stays out: it is read again, once committed.
                state = cached.get(key)
                if state is not None:
                    if scope.changed:
                        state.slots = scope.whole_slots
                    state.latest = scope.whole_latest
            elif scope.changed:
                working = scope.working
                self.get(key).slots.update((node, working[node]) for node in scope.changed)

    def evict(self, keep: int = 0) -> int:
        """Drop least recently used keys beyond the capacity, never the ``keep`` newest."""
        excess = min(len(self._keys) - self.capacity, len(self._keys) - keep)
        for _ in range(max(excess, 0)):
            self._keys.popitem(last=False)
        return max(excess, 0)

    def base(self, key: str) -> Mapping[str, Slots]:
        """The cached slots of ``key`` (read-only use: batches copy before they write)."""
        state = self._keys.get(key)
        return state.slots if state is not None else _EMPTY

    def state(self, key: str) -> KeyState | None:
        """The cached state of ``key`` (read-only use), None if it is not cached."""
        return self._keys.get(key)


class KeyView:
    """One key's part of a batch view: what run_wave reads and writes for that key.

    Slots are read from ``overlay`` (the working slots of the batch this one is
    speculated on, if any) and else from ``base`` (the cache), and copied into
    ``working`` before they change. A non-empty key's view starts from the whole
    state of the batch it is speculated on (or the cache's), and
    :meth:`BatchView.commit_whole` makes its whole state after the batch.
    """

    __slots__ = (
        "base",
        "changed",
        "latest",
        "overlay",
        "stored",
        "whole_latest",
        "whole_slots",
        "working",
    )

    def __init__(
        self,
        base: Mapping[str, Slots],
        overlay: Mapping[str, Slots] | None = None,
        stored: Latest | None = None,
    ):
        self.base = base
        self.overlay: Mapping[str, Slots] = overlay or _EMPTY
        self.working: dict[str, Slots] = {}
        """Slots the batch copied from the base; the batch works on these copies."""
        self.changed: set[str] = set()
        self.latest: dict[str, tuple[int, Value]] = {}
        """Newest (ts, value) per node of this key seen in the batch (ties: the later wins)."""
        self.stored: Latest = stored if stored is not None else {}
        """A non-empty key's latest values before the batch."""
        self.whole_slots: dict[str, Slots] = {}
        """A non-empty key's slots after the batch, when it changed them."""
        self.whole_latest: Latest = self.stored
        """A non-empty key's latest values after the batch."""

    def slots(self, node: str) -> Slots:
        """The batch's working slots of ``node`` (copied from the base on first use)."""
        slots = self.working.get(node)
        if slots is None:
            source = self.overlay.get(node)
            slots = self.working[node] = list(source if source is not None else self.base[node])
        return slots

    def after(self) -> tuple[Mapping[str, Slots], Latest]:
        """A non-empty key's whole state after the batch (once its commit is built)."""
        return (self.whole_slots if self.changed else self.base), self.whole_latest


_EMPTY: Mapping[str, Slots] = {}


class BatchView:
    """Copy-on-write view of a partition's slot state for one batch attempt, per key.

    With ``after`` (a batch whose commit is not yet known), the view starts from
    that batch's state, as if its commit had succeeded.
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
            if not key:
                overlay = after.working if after is not None else None
                view = KeyView(self._cache.base(key), overlay)
            elif after is not None:
                slots, latest = after.after()
                view = KeyView(slots, None, latest)
            else:
                state = self._cache.state(key)
                view = (
                    KeyView(_EMPTY) if state is None else KeyView(state.slots, None, state.latest)
                )
            self.keys[key] = view
        return view

    def detach(self) -> None:
        """Forget the batch this one was speculated on, once every key's view is made:
        else each batch's view would hold the one before it, and that one the one
        before, the whole turn long (every key view of every batch kept alive)."""
        self._after = None

    def fields(self) -> Iterable[tuple[str, str, Slots]]:
        """(state field, node, slots) of every changed node of the empty key, for the commit."""
        view = self.keys.get("")
        if view is not None:
            working = view.working
            for node in view.changed:
                yield state_field("", node), node, working[node]

    def commit_whole(
        self,
        gens: Mapping[str, str],
        empty: Mapping[str, Slots],
        writes: list[str],
        stored: list[str],
        key_ts: list[str],
        fresh: dict[str, int],
    ) -> None:
        """Make every non-empty key's whole state after the batch, and its commit.

        Adds (field, stored slots) to ``writes`` for a key whose slots changed,
        (field, stored latest values) to ``stored`` and (key, newest ts) to ``key_ts``
        for one with new values, and raises ``fresh`` (node -> newest ts). A value
        replaces a stored latest value only if its ts is not older.
        """
        for key, view in self.keys.items():
            if not key:
                continue
            field = key + KEY_SEPARATOR
            if view.changed:
                whole = view.whole_slots = {**view.base, **view.working}
                writes += (field, encode_key_slots(whole, gens, empty).decode())
            if view.latest:
                merged = view.whole_latest = dict(view.stored)
                newest = -1
                for node, value in view.latest.items():
                    ts = value[0]
                    known = merged.get(node)
                    if known is None or ts >= known[0]:
                        merged[node] = value
                    if ts > fresh.get(node, -1):
                        fresh[node] = ts
                    if ts > newest:
                        newest = ts
                stored += (field, encode_key_latest(merged).decode())
                key_ts += (key, str(newest))


# -- reading stored state (the commands and pages that show it) --------------------------------


def state_fields(key: str, nodes: Sequence[str]) -> list[str]:
    """The fields of the ``slots`` or ``latest`` hash that hold ``nodes``' state of ``key``:
    the nodes' own for the empty key, the key's one field otherwise."""
    return [key_field(key)] if key else list(nodes)


def read_slots(
    graph: Graph, key: str, nodes: Sequence[str], blobs: Sequence[bytes | None]
) -> tuple[dict[str, Slots], str]:
    """The stored slots of derived ``nodes`` of ``key``, from the HMGET of
    :func:`state_fields` (``blobs``), and why some read as empty ("" if none did not decode)."""
    definitions = graph.definitions()
    arities = {node: len(graph.nodes[node].args) for node in nodes}
    gens = {node: generation(definitions[node]) for node in nodes}
    problem = ""
    if key:
        try:
            found = decode_key_slots(
                blobs[0], arities, {n: gen.decode() for n, gen in gens.items()}
            )
        except TamperedState as exc:
            found, problem = {}, str(exc)
        return {node: found.get(node) or [None] * arities[node] for node in nodes}, problem
    slots: dict[str, Slots] = {}
    for node, blob in zip(nodes, blobs, strict=True):
        try:
            slots[node] = decode_slots(blob, arities[node], gens[node])
        except TamperedState as exc:
            slots[node], problem = [None] * arities[node], str(exc)
    return slots, problem
