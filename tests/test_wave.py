"""Pure unit tests of one wave (SPEC S1-S8) in ``streamcalc.wave``: no Redis, no worker.

Every call of the wave API goes through :func:`waves`, so that a change of its
signature (keyed state, a per-key view of slots) is a change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from helpers import SEED_UNSORTED

from streamcalc import wave
from streamcalc.errors import FunctionError
from streamcalc.graph import parse_graph_text
from streamcalc.messages import Entry
from streamcalc.state import KeyView, Slots
from streamcalc.values import Value
from streamcalc.wave import MAX_UNROLLED_ARGS, BatchResult, WavePlan, run_wave

T0 = 1_700_000_000_000


@dataclass
class Outcome:
    """What a run of waves produced; ``fired`` and ``errors`` name the wave by its index."""

    fired: list[tuple[str, Value, int, int]]
    """(node, value, ts, wave index) for every fired value, in order."""
    latest: dict[str, tuple[int, Value]]
    errors: list[tuple[int, str, str]]
    """(wave index, node, message) for every function error."""
    slots: dict[str, Slots]
    """Working slots of every derived node the waves touched."""
    changed: set[str]
    readings: int
    late: int
    expired: int

    def values(self) -> list[tuple[str, Value]]:
        """(node, value) of every fired value, in order."""
        return [(node, value) for node, value, _, _ in self.fired]


def waves(graph_toml: str, *entries: tuple[int, dict[str, Value]]) -> Outcome:
    """Run one wave per ``(ts, readings)`` entry, in order, in one batch from empty state.

    The entries have the empty key, so they share one key's view of the state (S11).
    """
    graph = parse_graph_text(graph_toml, "<test>")
    plan = WavePlan(graph)
    empty: dict[str, Slots] = {name: [None] * len(node.args) for name, node in graph.nodes.items()}
    view = KeyView(empty)
    result = BatchResult()
    ids = [f"{i + 1}-0" for i in range(len(entries))]
    for entry_id, (ts, readings) in zip(ids, entries, strict=True):
        run_wave(plan, Entry(entry_id, ts, tuple(readings.items())), view, result)
    index = {entry_id: i for i, entry_id in enumerate(ids)}
    return Outcome(
        fired=[(node, value, ts, index[src]) for node, value, ts, src, _ in result.fired],
        latest=dict(view.latest),
        errors=[
            (index[entry.id], node, message) for entry, node, message in result.function_errors
        ],
        slots={node: list(slots) for node, slots in view.working.items()},
        changed=set(view.changed),
        readings=result.readings,
        late=result.late,
        expired=result.expired,
    )


# -- S5: readings first, then rank order ---------------------------------------------------------


def test_seed_scenario_with_names_out_of_topological_order() -> None:
    got = waves(
        SEED_UNSORTED,
        (T0, {"C": 4, "D": 5}),
        (T0 + 1000, {"E": 6}),
        (T0 + 2000, {"C": 1, "D": 1, "E": 1, "F": 3}),
        (T0 + 3000, {"Z": 4, "F": 5}),
    )
    assert got.fired == [
        ("Z", 15, T0 + 1000, 1),
        ("Z", 3, T0 + 2000, 2),
        ("A", 9, T0 + 2000, 2),  # glitch-free: never 45 (15 * 3)
        ("A", 20, T0 + 3000, 3),  # the manual override of Z (S7)
    ]
    assert got.latest["Z"] == (T0 + 3000, 4)
    assert got.latest["A"] == (T0 + 3000, 20)
    assert got.latest["C"] == (T0 + 2000, 1)


@pytest.mark.parametrize(
    "readings",
    [
        {"C": 1, "D": 1, "E": 1, "F": 3},
        {"F": 3, "C": 1, "D": 1, "E": 1},
        {"F": 3, "E": 1, "D": 1, "C": 1},
    ],
    ids=["F-last", "F-first", "reversed"],
)
def test_rank_order_whatever_the_order_of_readings(readings: dict[str, Value]) -> None:
    got = waves(SEED_UNSORTED, (T0, {"C": 4, "D": 5, "E": 6}), (T0 + 1, readings))
    assert got.values() == [("Z", 15), ("Z", 3), ("A", 9)]


def test_a_deep_chain_named_backwards_fires_each_node_once_in_rank_order() -> None:
    # N0 = X + 1 is computed first, N9 last; names sort the other way round.
    chain = '[nodes.N9]\nexpr = "X + 1"\n' + "".join(
        f'[nodes.N{9 - i}]\nexpr = "N{10 - i} + X"\nmode = "latest"\n' for i in range(1, 10)
    )
    got = waves(chain, (T0, {"X": 1}), (T0 + 1, {"X": 2}))
    assert [n for n, _, _, w in got.fired if w == 0] == [f"N{9 - i}" for i in range(10)]
    assert [v for _, v, _, w in got.fired if w == 0] == list(range(2, 12))
    assert [v for _, v, _, w in got.fired if w == 1] == list(range(3, 23, 2))


def test_all_readings_of_an_entry_are_applied_before_any_node_is_evaluated() -> None:
    graph = '[nodes.S]\nexpr = "X + Y"\nmode = "latest"\n'
    got = waves(graph, (T0, {"X": 100, "Y": 10}), (T0 + 1, {"X": 1, "Y": 2}))
    assert got.values() == [("S", 110), ("S", 3)]  # never X=1 with the old Y (11)


def test_a_diamond_fires_its_bottom_once_per_wave_with_both_new_sides() -> None:
    graph = (
        '[defaults]\nmode = "latest"\n'
        '[nodes.B]\nexpr = "X + 1"\n'
        '[nodes.A]\nexpr = "X * 10"\n'
        '[nodes.AA]\nexpr = "A + B"\n'
    )
    got = waves(graph, (T0, {"X": 1}), (T0 + 1, {"X": 2}))
    assert sorted(got.fired[:2]) == [("A", 10, T0, 0), ("B", 2, T0, 0)]
    assert got.fired[2] == ("AA", 12, T0, 0)
    assert sorted(got.fired[3:5]) == [("A", 20, T0 + 1, 1), ("B", 3, T0 + 1, 1)]
    assert got.fired[5:] == [("AA", 23, T0 + 1, 1)]


# -- S1: latest values ---------------------------------------------------------------------------


def test_latest_value_replaced_only_by_an_equal_or_newer_ts() -> None:
    got = waves(
        '[nodes.S]\nexpr = "X + 1"\n[nodes.T]\nexpr = "Y * 2"\nmode = "latest"\n',
        (T0 + 500, {"X": 10}),
        (T0 + 100, {"X": 99}),  # older: the latest value stays
        (T0 + 100, {"Y": 1}),
        (T0 + 100, {"Y": 2}),  # same ts: the later one wins
        (T0 + 100, {"humidity": 3}),  # not a node of the graph: not stored (S1)
    )
    assert got.latest["X"] == (T0 + 500, 10)
    assert got.latest["Y"] == (T0 + 100, 2)
    assert got.latest["S"] == (T0 + 500, 11)
    assert "humidity" not in got.latest
    assert got.readings == 5


def test_a_fired_value_updates_the_latest_value_only_when_newer() -> None:
    got = waves(
        '[nodes.S]\nexpr = "X + 1"\n',
        (T0 + 500, {"S": 7}),  # a manual override at 500
        (T0 + 100, {"X": 1}),  # fires S = 2 at ts 100: older than the override
    )
    assert got.values() == [("S", 2)]
    assert got.latest["S"] == (T0 + 500, 7)


# -- S2: slots and late values -------------------------------------------------------------------


def test_a_late_value_changes_no_slot_and_triggers_nothing() -> None:
    got = waves(
        '[nodes.S]\nfn = "sub"\nargs = ["X", "Y"]\nmode = "latest"\n',
        (T0 + 500, {"X": 10}),
        (T0 + 600, {"Y": 1}),
        (T0 + 100, {"X": 99}),  # late for S's slot: S does not fire
        (T0 + 550, {"Y": 7}),  # late too
        (T0 + 700, {"Y": 2}),
    )
    assert [(v, ts) for _, v, ts, _ in got.fired] == [(9, T0 + 600), (8, T0 + 700)]
    assert got.late == 2
    assert got.slots["S"] == [(T0 + 500, 10), (T0 + 700, 2)]


def test_a_consumed_slot_keeps_its_ts_so_older_values_stay_late() -> None:
    got = waves(
        '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\n',
        (T0 + 500, {"X": 1, "Y": 1}),
        (T0 + 400, {"X": 5, "Y": 5}),  # older than the consumed slots: late
        (T0 + 500, {"X": 2, "Y": 2}),  # equal ts is not late
    )
    assert got.values() == [("S", 2), ("S", 4)]
    assert got.late == 2


def test_a_value_fills_every_slot_of_its_argument() -> None:
    got = waves('[nodes.S]\nfn = "mul"\nargs = ["X", "X", "Y"]\n', (T0, {"X": 3, "Y": 2}))
    assert got.values() == [("S", 18)]


def test_a_node_no_slot_of_which_took_a_value_is_not_evaluated() -> None:
    graph = '[nodes.S]\nexpr = "X + Y"\nmode = "latest"\n[nodes.P]\nexpr = "Q * 2"\n'
    got = waves(graph, (T0, {"X": 1, "Y": 2}), (T0 + 1, {"other": 5}))
    assert got.values() == [("S", 3)]
    assert got.changed == {"S"}
    assert "P" not in got.slots


# -- S3: validity (TTL) --------------------------------------------------------------------------


def test_slots_older_than_the_ttl_expire_and_keep_their_ts() -> None:
    got = waves(
        '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\nttl = "1s"\n',
        (T0, {"X": 1}),
        (T0 + 1001, {"Y": 10}),  # X is 1001 ms older than Y: expired
        (T0 + 1500, {"X": 2}),  # Y is 500 ms older: valid
    )
    assert got.fired == [("S", 12, T0 + 1500, 2)]  # ts = the newest slot's
    assert got.expired == 1
    assert got.slots["S"] == [(T0 + 1500, None), (T0 + 1001, None)]


def test_expiry_empties_the_slot_for_good() -> None:
    got = waves(
        '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\nttl = "1s"\nmode = "latest"\n',
        (T0, {"X": 1}),
        (T0 + 2000, {"Y": 10}),  # X expired and emptied
        (T0 + 2001, {"Y": 20}),  # X is still empty: nothing fires
    )
    assert got.fired == []
    assert got.expired == 1
    assert got.slots["S"] == [(T0, None), (T0 + 2001, 20)]


def test_exactly_ttl_apart_is_valid_and_ttl_zero_never_expires() -> None:
    graph = (
        '[nodes.S]\nfn = "add"\nargs = ["X", "Y"]\nttl = "100ms"\n'
        '[nodes.N]\nfn = "add"\nargs = ["X", "Y"]\nttl = "0s"\n'
    )
    got = waves(
        graph,
        (T0, {"X": 1}),
        (T0 + 100, {"Y": 2}),  # exactly ttl: S fires
        (T0 + 200, {"X": 3}),
        (T0 + 10_000_000, {"Y": 4}),  # only N: ttl 0 has no limit
    )
    assert sorted((n, v, ts) for n, v, ts, _ in got.fired) == [
        ("N", 3, T0 + 100),
        ("N", 7, T0 + 10_000_000),
        ("S", 3, T0 + 100),
    ]
    assert got.expired == 1  # S's X (200) when Y came at 10,000,000


# -- S4: modes -----------------------------------------------------------------------------------


def test_consume_fires_only_on_a_fresh_complete_set() -> None:
    got = waves(
        '[nodes.S]\nexpr = "X + Y"\nmode = "consume"\n',
        (T0, {"X": 1, "Y": 2}),
        (T0 + 1, {"X": 10}),  # Y was consumed: nothing fires
        (T0 + 2, {"X": 20}),
        (T0 + 3, {"Y": 30}),
    )
    assert got.values() == [("S", 3), ("S", 50)]
    assert got.slots["S"] == [(T0 + 2, None), (T0 + 3, None)]


def test_latest_keeps_the_slots_and_fires_on_every_update() -> None:
    got = waves(
        '[nodes.S]\nexpr = "X + Y"\nmode = "latest"\n',
        (T0, {"X": 1}),
        (T0 + 1, {"Y": 2}),
        (T0 + 2, {"X": 10}),
        (T0 + 3, {"Y": 20}),
    )
    assert got.values() == [("S", 3), ("S", 12), ("S", 30)]
    assert got.slots["S"] == [(T0 + 2, 10), (T0 + 3, 20)]


# -- S7: manual override -------------------------------------------------------------------------


def test_a_reading_of_a_derived_node_propagates_and_leaves_its_slots_alone() -> None:
    got = waves(
        SEED_UNSORTED,
        (T0, {"C": 1, "D": 2}),  # Z waits for E
        (T0 + 1, {"Z": 4, "F": 5}),
    )
    assert got.fired == [("A", 20, T0 + 1, 1)]
    assert got.latest["Z"] == (T0 + 1, 4)
    assert got.slots["Z"] == [(T0, 1), (T0, 2), None]


# -- S8: function errors -------------------------------------------------------------------------


def test_a_function_error_is_reported_and_its_slots_kept_in_consume_mode() -> None:
    graph = '[nodes.Q]\nfn = "div"\nargs = ["X", "Y"]\n[nodes.P]\nexpr = "Q + 1"\n'
    got = waves(graph, (T0, {"X": 1, "Y": 0}), (T0 + 1, {"Y": 4}))
    assert got.errors == [(0, "Q", "division by zero")]
    assert got.values() == [("Q", 0.25), ("P", 1.25)]  # X=1 was kept for the second wave


def test_the_rest_of_the_wave_goes_on_after_a_function_error() -> None:
    graph = (
        '[nodes.Q]\nfn = "div"\nargs = ["X", "Y"]\n'
        '[nodes.P]\nexpr = "Q + 1"\n'
        '[nodes.S]\nexpr = "X + Y"\n'
    )
    got = waves(graph, (T0, {"X": 1, "Y": 0}))
    assert got.values() == [("S", 1)]
    assert [(w, n) for w, n, _ in got.errors] == [(0, "Q")]
    assert "Q" not in got.latest


def test_a_non_finite_result_is_a_function_error() -> None:
    got = waves('[nodes.S]\nexpr = "X * Y"\n', (T0, {"X": 1e300, "Y": 1e300}))
    assert got.fired == []
    ((wave, node, message),) = got.errors
    assert (wave, node) == (0, "S")
    assert "finite" in message


def test_vectors_of_different_lengths_are_a_function_error() -> None:
    graph = '[nodes.S]\nexpr = "X + Y"\nmode = "latest"\n'
    got = waves(graph, (T0, {"X": (1, 2), "Y": (10, 20)}), (T0 + 1, {"Y": (1, 2, 3)}))
    assert got.values() == [("S", (11, 22))]
    assert [(w, n) for w, n, _ in got.errors] == [(1, "S")]


# -- the generated wave code -----------------------------------------------------------------------


def test_generated_code_takes_dotted_names_repeated_arguments_and_many_arguments() -> None:
    many = ", ".join(f'"x{i}"' for i in range(MAX_UNROLLED_ARGS + 4))  # the generic path only
    got = waves(
        '[nodes."plant1.boiler.sq"]\n'
        'expr = "plant1.boiler.temp * plant1.boiler.temp - 1"\n'
        "[nodes.twice]\n"
        'fn = "add"\n'
        'args = ["plant1.boiler.sq", "plant1.boiler.sq"]\n'
        "[nodes.total]\n"
        'fn = "add"\n'
        'mode = "latest"\n'
        f"args = [{many}]\n",
        (T0, {"plant1.boiler.temp": 3, **{f"x{i}": i for i in range(MAX_UNROLLED_ARGS + 4)}}),
        (T0 + 1, {"plant1.boiler.temp": 4, "x0": 100}),
    )
    total = sum(range(MAX_UNROLLED_ARGS + 4))
    assert got.values() == [
        ("plant1.boiler.sq", 8),
        ("total", total),  # rank 1, after plant1.boiler.sq by name
        ("twice", 16),
        ("plant1.boiler.sq", 15),
        ("total", total + 100),  # latest mode: the other slots are kept
        ("twice", 30),
    ]
    assert got.slots["twice"] == [(T0 + 1, None), (T0 + 1, None)]  # consumed


@pytest.mark.parametrize(
    ("expr", "readings", "expected"),
    [
        ("X * X * X * X", {"X": 2**62}, float(2**248)),  # an int past 2^63 becomes a float
        ("X * Y - 1", {"X": (1, 2), "Y": 3}, (2, 5)),  # a vector: element-wise, not Python's
        ("-X + Y * 0.5", {"X": 1, "Y": (2, 4.5)}, (0.0, 1.25)),
        ("X - Y + Y", {"X": 2, "Y": 2**62}, 2),
    ],
)
def test_a_formula_written_out_for_numbers_equals_its_function(
    expr: str, readings: dict[str, Value], expected: Value
) -> None:
    graph = parse_graph_text(f'[nodes.S]\nexpr = "{expr}"\n', "<test>")
    assert graph.scalar_formula("S") is not None
    got = waves(f'[nodes.S]\nexpr = "{expr}"\n', (T0, readings))
    assert got.values() == [("S", expected)]
    assert type(got.values()[0][1]) is type(expected)
    assert got.values()[0][1] == graph.evaluate("S", [readings[n] for n in graph.nodes["S"].args])


def test_a_formula_written_out_that_overflows_is_the_function_error_of_its_function() -> None:
    toml = '[nodes.S]\nexpr = "X * X * Y"\n'
    got = waves(toml, (T0, {"X": 1e200, "Y": 2}), (T0 + 1, {"X": 10**200, "Y": 1.5}))
    graph = parse_graph_text(toml, "<test>")
    expected = []
    for args in ([1e200, 2], [10**200, 1.5]):
        with pytest.raises(FunctionError) as raised:
            graph.evaluate("S", args)
        expected.append(str(raised.value))
    assert [message for _, _, message in got.errors] == expected
    assert "overflow" in expected[1] and "finite" in expected[0]


def test_formulas_past_the_shape_limit_are_evaluated_by_their_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wave, "MAX_SHAPES", 1)
    toml = '[nodes.P]\nexpr = "X + Y"\n[nodes.Q]\nexpr = "X * Y"\n[nodes.R]\nexpr = "X - Y"\n'
    plan = WavePlan(parse_graph_text(toml, "<test>"))
    assert [shape[3] for shape in plan.shapes] == ["(v0 + v1)", None]
    assert waves(toml, (T0, {"X": 3, "Y": 4})).values() == [("P", 7), ("Q", 12), ("R", -1)]
