"""Keyed scenarios on P partitions: write keyed entries, keep one reference model per key, check.

The per-key reference is tests/model.py's :class:`Model`, one instance per key
(S11: the graph is a template, every key has its own state). Entries go either
directly to their key's partition or through the routing stream ``sc:{NS}:in``.
A routed entry carries a unique ``@src`` tag (SPEC section 2: accepted and
carried, no effect on semantics), so its arrival in its partition can be
traced: the model names a routed entry's wave by its tag, a direct entry's wave
by its entry ID. :meth:`KeyedRun.check` then compares everything per key.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from helpers import idle
from model import Model
from test_crash import MODEL_NODES
from test_differential import _assert_topological, _by_src, _wave_order, same

from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys, Namespace, partition_of
from streamcalc.messages import decode_output, id_ms
from streamcalc.store import latest_values, read_range, store_graph

Row = tuple[str, Any, int, str]  # node, value, ts, src (as outputs() and Model.out have them)

#: An @key the router refuses (a space is not allowed): a dead letter of sc:{NS}:dead.
BAD_KEY = "not a key"


def partitioned(r: redis.Redis, toml: str, partitions: int) -> str:
    """A fresh namespace with ``partitions`` partitions and the graph ``toml``; returns its name."""
    ns = "k" + uuid.uuid4().hex[:12]
    store_graph(r, ns, parse_graph_text(toml, "<test>"), partitions=partitions)
    return ns


@dataclass
class Spec:
    """One entry to write."""

    key: str
    readings: dict[str, Any]
    ts: int | None = None
    """``@ts``; None: the entry carries none (its ts is its entry ID's time)."""
    routed: bool = False
    """Written to ``sc:{NS}:in`` rather than to the key's partition."""
    bad: bool = False
    """A bad value (``true``): the whole entry is a dead letter (S8)."""
    misplaced: bool = False
    """Direct only: written to a partition the key does not belong to (a dead letter there)."""
    bad_key: bool = False
    """Routed only: an ``@key`` the router refuses."""


@dataclass
class _Routed:
    routing_id: str
    key: str
    fields: dict[str, str]
    bad_key: bool


class KeyedRun:
    """The entries written to one partitioned namespace and what each key's model says of them."""

    def __init__(self, r: redis.Redis, ns: str, partitions: int, new_model: Callable[[], Model]):
        self.r = r
        self.ns = ns
        self.partitions = partitions
        self.namespace = Namespace(ns)
        self.new_model = new_model
        self.models: dict[str, Model] = {}
        self.direct: dict[tuple[int, str], str] = {}
        """(partition, entry ID) -> key of every entry written directly to a partition."""
        self.routed: dict[str, _Routed] = {}
        """tag -> the routed entry, in routing order."""
        self.dead_elsewhere: set[tuple[str, str]] = set()
        """(dead stream, @src) of dead letters no key's model knows: misplaced and bad-@key."""
        self._tags = itertools.count()

    def keys_of(self, p: int | None) -> Keys:
        """The keys of partition ``p`` (None: the namespace's own, with the routing stream)."""
        return self.namespace.root if p is None else self.namespace.partition(p, self.partitions)

    def model(self, key: str) -> Model:
        """The reference model of ``key``."""
        if key not in self.models:
            self.models[key] = self.new_model()
        return self.models[key]

    def write(self, specs: Iterable[Spec]) -> None:
        """XADD the entries in one pipeline and feed them to their keys' models in that order."""
        pipe = self.r.pipeline(transaction=False)
        planned: list[tuple[Spec, dict[str, str], str, int]] = []
        for spec in specs:
            fields, tag, target = self._fields(spec)
            stream = self.namespace.root.input if spec.routed else self.keys_of(target).input
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
            planned.append((spec, fields, tag, target))
        for (spec, fields, tag, target), raw_id in zip(planned, pipe.execute(), strict=True):
            self._record(spec, fields, tag, target, raw_id.decode())

    def _fields(self, spec: Spec) -> tuple[dict[str, str], str, int]:
        """The entry's fields, its tag (routed) and the partition it is written to (direct)."""
        fields = {node: str(value) for node, value in spec.readings.items()}
        if spec.bad:
            fields[next(iter(fields))] = "true"
        if spec.ts is not None:
            fields["@ts"] = str(spec.ts)
        if spec.bad_key:
            fields["@key"] = BAD_KEY
        elif spec.key:
            fields["@key"] = spec.key
        if spec.routed:
            tag = f"q{next(self._tags)}"
            fields["@src"] = tag
            return fields, tag, -1
        target = partition_of(spec.key, self.partitions)
        if spec.misplaced:
            target = (target + 1) % self.partitions
        return fields, "", target

    def _record(
        self, spec: Spec, fields: dict[str, str], tag: str, target: int, entry_id: str
    ) -> None:
        """Remember a written entry and feed it to its key's model."""
        if spec.routed:
            self.routed[tag] = _Routed(entry_id, spec.key, fields, spec.bad_key)
            src = tag
            if spec.bad_key:
                self.dead_elsewhere.add((self.namespace.root.dead, entry_id))
                return
        else:
            self.direct[(target, entry_id)] = spec.key
            src = entry_id
            if spec.misplaced:
                self.dead_elsewhere.add((self.keys_of(target).dead, entry_id))
                return
        model = self.model(spec.key)
        if spec.bad:
            model.reject(src)
        else:
            ts = spec.ts if spec.ts is not None else id_ms(entry_id)
            model.apply(src, ts, list(spec.readings.items()))

    # -- waiting -------------------------------------------------------------------------------

    def all_idle(self) -> bool:
        """Routing stream and every partition delivered to the end, nothing pending."""
        streams = [None, *range(self.partitions)] if self.routed else range(self.partitions)
        keys = [self.keys_of(p) for p in streams]
        return all(idle(self.r, k) for k in keys if self.r.exists(k.input))

    def wait_idle(self, timeout: float) -> None:
        """Wait until :meth:`all_idle`, or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.all_idle():
            if time.monotonic() > deadline:
                raise AssertionError(f"not everything was processed within {timeout}s")
            time.sleep(0.02)

    # -- checking ------------------------------------------------------------------------------

    def check(self, nodes: Sequence[str]) -> None:
        """Everything per key equals the key's model; every routed entry moved exactly once."""
        src_of = self._check_inputs()
        self._check_outputs(src_of)
        self._check_dead_letters(src_of)
        for key, model in self.models.items():
            got = latest_values(self.r, self.namespace.of_key(key, self.partitions), [*nodes], key)
            assert got.keys() == model.latest.keys(), f"key {key!r}: latest values of other nodes"
            for node, (ts, value) in model.latest.items():
                assert got[node][0] == ts and same(got[node][1], value), (key, node)
        assert self.all_idle(), "entries left pending or undelivered"

    def _check_inputs(self) -> dict[tuple[int, str], str]:
        """The partitions hold exactly the direct and the routed entries; returns their srcs."""
        src_of: dict[tuple[int, str], str] = {}
        arrived: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
        order: dict[str, list[str]] = defaultdict(list)  # key -> tags in partition order
        for p in range(self.partitions):
            for raw_id, raw in read_range(self.r, self.keys_of(p).input):
                entry_id = raw_id.decode()
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                if (p, entry_id) in self.direct:
                    src_of[(p, entry_id)] = entry_id
                    continue
                tag = fields.get("@src", "")
                assert tag in self.routed, f"partition {p} holds {entry_id} {fields}: not written"
                arrived[tag].append((p, fields))
                order[self.routed[tag].key].append(tag)
                src_of[(p, entry_id)] = tag
        expected_order: dict[str, list[str]] = defaultdict(list)
        for tag, entry in self.routed.items():
            places = arrived.get(tag, [])
            if entry.bad_key:
                assert places == [], f"{tag} with a bad @key was routed to a partition"
                continue
            expected_order[entry.key].append(tag)
            assert len(places) == 1, f"routed {tag} ({entry.routing_id}) arrived {len(places)}x"
            p, fields = places[0]
            assert p == partition_of(entry.key, self.partitions), f"{tag} in partition {p}"
            want = {**entry.fields, "@ts": entry.fields.get("@ts", str(id_ms(entry.routing_id)))}
            assert fields == want, f"routed {tag} changed on the way"
        assert order == expected_order, "routed entries of a key arrived out of order"
        return src_of

    def _check_outputs(self, src_of: dict[tuple[int, str], str]) -> None:
        got: dict[str, list[Row]] = defaultdict(list)
        emitted: Counter[tuple[str, str, str]] = Counter()
        for p in range(self.partitions):
            for _, fields in read_range(self.r, self.keys_of(p).output):
                out = decode_output(fields)
                assert partition_of(out.key, self.partitions) == p, f"{out} in partition {p}"
                assert (p, out.src) in src_of, f"{out}: no such input entry in partition {p}"
                emitted[(out.src, out.key, out.node)] += 1
                got[out.key].append((out.node, out.value, out.ts, src_of[(p, out.src)]))
        twice = [triple for triple, count in emitted.items() if count > 1]
        assert twice == [], f"{len(twice)} (@src, @key, node) emitted twice: {twice[:5]}"
        unknown = set(got) - set(self.models)
        assert not unknown, f"outputs of keys nobody wrote: {unknown}"
        for key, model in self.models.items():
            assert_same_waves(key, got.get(key, []), model)

    def _check_dead_letters(self, src_of: dict[tuple[int, str], str]) -> None:
        got: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        elsewhere: list[tuple[str, str]] = []
        for p in [None, *range(self.partitions)]:
            keys = self.keys_of(p)
            for _, raw in read_range(self.r, keys.dead):
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                src = fields["@src"]
                if (keys.dead, src) in self.dead_elsewhere:
                    elsewhere.append((keys.dead, src))
                    continue
                assert p is not None and (p, src) in src_of, f"unexpected dead letter {fields}"
                got[fields.get("@key", "")].append((src_of[(p, src)], fields.get("@node")))
        assert sorted(elsewhere) == sorted(self.dead_elsewhere), "misplaced or bad-@key entries"
        for key, model in self.models.items():
            want = sorted(model.dead, key=lambda d: (d[0], d[1] or ""))
            assert sorted(got.pop(key, []), key=lambda d: (d[0], d[1] or "")) == want, key
        assert not got, f"dead letters of unknown keys: {dict(got)}"


def assert_same_waves(key: str, got: list[Row], model: Model) -> None:
    """``got`` has the model's waves in its order, each with the same values (S5, S10, S11)."""
    assert _wave_order(got) == _wave_order(model.out), f"key {key!r}: waves lost, added or moved"
    engine, args = _by_src(got), {name: {"args": node.args} for name, node in model.nodes.items()}
    for src, values in _by_src(model.out).items():
        assert sorted(engine[src]) == sorted(values), f"key {key!r}, wave {src}"
        assert all(same(engine[src][k], v) for k, v in values.items()), f"key {key!r}, wave {src}"
        _assert_topological([n for n, _, _, s in got if s == src], args)


def random_specs(
    rng: random.Random,
    n: int,
    keys: Sequence[str],
    clock: dict[str, int],
    routed_keys: Collection[str] = (),
) -> list[Spec]:
    """``n`` entries of test_crash's inputs over ``keys``, each key's ``@ts`` out of order.

    ``clock`` holds each key's running event time; a key missing from it carries
    no ``@ts`` (its ts is its entry ID's time). Entries of ``routed_keys`` go
    through the routing stream, the others straight to their partition.
    """
    specs = []
    for _ in range(n):
        key = rng.choice(keys)
        readings = {k: rng.randint(-5, 9) for k in rng.sample(["X", "Y", "Z"], rng.randint(1, 3))}
        ts = None
        if key in clock:
            clock[key] += rng.randint(-15, 20)
            ts = clock[key]
        specs.append(Spec(key, readings, ts, routed=key in routed_keys))
    return specs


def crash_model() -> Model:
    """test_crash's graph (depth 4, both modes, a TTL out-of-order entries run into), one key."""
    return Model(dict(MODEL_NODES))


#: Every node of test_crash's graph, inputs and derived.
CRASH_NODES = ["X", "Y", "Z", *MODEL_NODES]
