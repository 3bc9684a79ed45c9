"""Differential test: random graphs and entries, one worker, output equal to the reference model."""

from __future__ import annotations

import json
import math
from typing import Any

import redis
from formulas import formula_trees
from helpers import dead_letters, drain, load, outputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model import Model, ModelNode, evaluate, names, render

from streamcalc.keys import Keys
from streamcalc.store import latest_values

INPUTS = ["I0", "I1", "I2", "I3"]
FORMS = ["add", "mul", "sub", "div", "max", "expr", "formula"]
# Names of derived nodes in the order they are drawn (each may use the ones before it).
# Listed in reverse name order, so that the examples hypothesis shrinks towards name their
# nodes against the topological order; permutations mix them up. Name order is no
# evaluation order (S5): an engine that evaluates by name emits glitches here.
DERIVED_NAMES = ["zz", "Y", "X.v", "Mid", "B_2", "A"]


@st.composite
def graph_specs(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    """Random DAGs over four inputs: fn and expr forms, both modes, several event-time TTLs.

    A ``formula`` node is a random tree of the whole language (comparisons, logic,
    where, reductions) over up to three of the nodes before it.
    """
    nodes: dict[str, dict[str, Any]] = {}
    derived = draw(st.permutations(DERIVED_NAMES))
    for k in range(draw(st.integers(1, 5))):
        pool = INPUTS + derived[:k]
        form = draw(st.sampled_from(FORMS))
        if form == "formula":
            used = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
            tree = draw(formula_trees(used, max_leaves=6).filter(names))
            nodes[derived[k]] = {
                "form": form,
                "tree": tree,
                "args": names(tree),
                "ttl": draw(st.sampled_from([0, 3, 10, 50])),
                "mode": draw(st.sampled_from(["consume", "latest"])),
            }
            continue
        arity = 2 if form in ("sub", "div", "mul", "expr") else draw(st.integers(1, 3))
        args = draw(st.lists(st.sampled_from(pool), min_size=arity, max_size=arity, unique=True))
        spec: dict[str, Any] = {
            "form": form,
            "args": args,
            "ttl": draw(st.sampled_from([0, 3, 10, 50])),
            "mode": draw(st.sampled_from(["consume", "latest"])),
        }
        if form == "expr":
            spec["coef"] = draw(st.lists(st.integers(-3, 3), min_size=2, max_size=2))
            spec["const"] = draw(st.integers(-5, 5))
        nodes[derived[k]] = spec
    return nodes


@st.composite
def entry_lists(draw: st.DrawFn, derived: list[str]) -> list[dict[str, Any]]:
    """Entries with out-of-order ``@ts``, the odd manual override and the odd bad value."""
    ts = 1_000_000
    entries = []
    for _ in range(draw(st.integers(1, 14))):
        ts += draw(st.integers(-20, 30))
        names = draw(st.lists(st.sampled_from(INPUTS), min_size=1, max_size=4, unique=True))
        readings: dict[str, Any] = {n: draw(st.integers(-3, 5)) for n in names}
        if derived and draw(st.integers(0, 9)) == 0:
            readings[draw(st.sampled_from(derived))] = draw(st.integers(-3, 5))
        bad = draw(st.integers(0, 14)) == 0
        entries.append({"readings": readings, "ts": ts, "bad": bad})
    return entries


def toml_of(spec: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, node in spec.items():
        lines.append(f'[nodes."{name}"]')
        if node["form"] == "formula":
            lines.append(f"expr = {json.dumps(render(node['tree']))}")
        elif node["form"] == "expr":
            (a, b), (ca, cb) = node["args"], node["coef"]
            lines.append(f'expr = "{a} * ({ca}) + {b} * ({cb}) + ({node["const"]})"')
        else:
            lines.append(f'fn = "{node["form"]}"')
            lines.append("args = [" + ", ".join(f'"{a}"' for a in node["args"]) + "]")
        lines.append(f'ttl = "{node["ttl"]}ms"')
        lines.append(f'mode = "{node["mode"]}"')
    return "\n".join(lines) + "\n"


def model_of(spec: dict[str, dict[str, Any]], declared: set[str] | None = None) -> Model:
    def func(node: dict[str, Any]) -> Any:
        form = node["form"]
        if form == "add":
            return sum
        if form == "mul":
            return lambda v: v[0] * v[1]
        if form == "sub":
            return lambda v: v[0] - v[1]
        if form == "div":
            return lambda v: v[0] / v[1]
        if form == "max":
            return max
        if form == "formula":
            return lambda v: evaluate(node["tree"], dict(zip(node["args"], v, strict=True)))
        ca, cb = node["coef"]
        return lambda v: v[0] * ca + v[1] * cb + node["const"]

    return Model(
        {
            name: ModelNode(list(node["args"]), node["ttl"], node["mode"], func(node))
            for name, node in spec.items()
        },
        declared=declared or set(),
    )


def _wave_order(rows: list[tuple[str, Any, int, str]]) -> list[str]:
    order: list[str] = []
    for _, _, _, src in rows:
        if not order or order[-1] != src:
            order.append(src)
    return order


def _by_src(rows: list[tuple[str, Any, int, str]]) -> dict[str, dict[tuple[str, int], Any]]:
    grouped: dict[str, dict[tuple[str, int], Any]] = {}
    for node, value, ts, src in rows:
        wave = grouped.setdefault(src, {})
        assert (node, ts) not in wave, f"{node} fired twice in wave {src}"
        wave[(node, ts)] = value
    return grouped


def _assert_topological(fired: list[str], spec: dict[str, dict[str, Any]]) -> None:
    for i, node in enumerate(fired):
        for arg in spec[node]["args"]:
            assert arg not in fired[i + 1 :], f"{node} fired before its argument {arg}"


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return bool(a == b)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_one_worker_equals_the_model(redis_url: str, r: redis.Redis, data: st.DataObject) -> None:
    spec = data.draw(graph_specs(), label="graph")
    entries = data.draw(entry_lists(list(spec)), label="entries")
    batch = data.draw(st.integers(1, 8), label="batch")
    # Declared inputs: the ones no node uses are nodes too (their latest values are kept).
    declare = data.draw(st.booleans(), label="declare the inputs")
    ns = "d" + str(abs(hash((repr(spec), repr(entries), batch))))
    keys = Keys(ns)
    r.delete(*keys.all())
    declared = '[inputs]\nnames = ["I0", "I1", "I2", "I3"]\n' if declare else ""
    load(r, ns, declared + toml_of(spec))
    model = model_of(spec, set(INPUTS) if declare else None)
    for entry in entries:
        fields: dict[str, Any] = {k: str(v) for k, v in entry["readings"].items()}
        fields["@ts"] = str(entry["ts"])
        if entry["bad"]:
            fields[INPUTS[0]] = "true"
        entry_id = r.xadd(keys.input, fields).decode()
        if entry["bad"]:
            model.reject(entry_id)
        else:
            model.apply(entry_id, entry["ts"], list(entry["readings"].items()))

    drain(redis_url, ns, batch=batch)

    got = outputs(r, keys)
    # Waves appear in stream order; within a wave any topological order is right (S5).
    assert _wave_order(got) == _wave_order(model.out)
    for src, values in _by_src(model.out).items():
        engine = _by_src(got)[src]
        assert sorted(engine) == sorted(values)
        assert all(same(engine[k], v) for k, v in values.items())
        _assert_topological([n for n, _, _, s in got if s == src], spec)
    dead = sorted((d["@src"], d.get("@node")) for d in dead_letters(r, keys))
    assert dead == sorted(model.dead, key=lambda d: (d[0], d[1] or ""))
    latest = latest_values(r, keys)
    assert latest.keys() == model.latest.keys()
    for node, (ts, value) in model.latest.items():
        assert latest[node][0] == ts
        assert same(latest[node][1], value)
    assert r.xpending(keys.input, "streamcalc")["pending"] == 0
    r.delete(*keys.all())
