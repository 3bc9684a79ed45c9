"""Pure unit tests of input entries (SPEC section 2) in ``streamcalc.messages``: no Redis.

Assertions are on an Entry's attributes, never on the whole struct, so that new
fields (a key) need no change here; every call goes through :func:`decode`.
"""

from __future__ import annotations

import pytest

from streamcalc.errors import EntryError
from streamcalc.messages import MAX_FIELDS, MAX_VALUE_BYTES, MAX_VECTOR_LEN, Entry, decode_entry

ENTRY_ID = b"1700000000123-4"
ID_MS = 1700000000123


def decode(*pairs: tuple[str | bytes, str | bytes], entry_id: bytes = ENTRY_ID) -> Entry:
    """Decode an entry given as (field, value) pairs, in the flat list form Redis returns."""
    fields: list[bytes] = []
    for field, value in pairs:
        fields += [_bytes(field), _bytes(value)]
    return decode_entry(entry_id, fields)


def rejected(*pairs: tuple[str | bytes, str | bytes]) -> str:
    """The one-line reason an entry is refused (the test fails if it is accepted)."""
    with pytest.raises(EntryError) as caught:
        decode(*pairs)
    reason = str(caught.value)
    assert reason and "\n" not in reason
    return reason


def _bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


# -- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4", 4),
        ("-1.5e3", -1500.0),
        ("0.25", 0.25),
        ("-0", 0),
        ("1E3", 1000.0),
        (" 7 ", 7),
        ("[1, 2, 3]", (1, 2, 3)),
        ("[1.5,-2e1]", (1.5, -20.0)),
        ("[0]", (0,)),
    ],
)
def test_a_finite_number_or_vector_is_a_reading(text: str, value: object) -> None:
    entry = decode(("C", text))
    assert entry.readings == (("C", value),)
    assert type(entry.readings[0][1]) is type(value)


@pytest.mark.parametrize("number", [2**53 + 1, 2**63 - 1, -(2**63) + 1])
def test_an_integer_up_to_int64_is_kept_exactly(number: int) -> None:
    ((_, value),) = decode(("C", str(number))).readings
    assert type(value) is int and value == number


@pytest.mark.parametrize("text", [str(2**63), str(2**64 + 1), str(-(2**63)), "1" + "0" * 400])
def test_an_integer_beyond_int64_is_refused_not_rounded(text: str) -> None:
    reason = rejected(("C", text))
    assert reason == (
        "bad value for 'C': integer beyond +-(2^63 - 1) would lose digits "
        "(write it as a float, e.g. 1.8e19, to mean one)"
    )
    assert rejected(("C", f"[1, {text}]")).startswith("bad value for 'C': integer beyond")
    ((_, value),) = decode(("C", "1.8446744073709552e19")).readings  # as a float it is fine
    assert value == 2.0**64


@pytest.mark.parametrize(
    "text",
    [
        "true",
        "null",
        '"7"',
        "{}",
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        "[]",
        "[[1]]",
        "[1, [2]]",
        "[1, true]",
        '[1, "2"]',
        "[1, 1e400]",
        "",
        "1 2",
        "01",
        "0x10",
        "[1, 2",
        "\xff",
    ],
)
def test_anything_else_is_a_bad_value(text: str) -> None:
    assert "C" in rejected(("X", "1"), ("C", text))


def test_one_bad_value_refuses_the_whole_entry() -> None:
    rejected(("X", "1"), ("Y", "2"), ("Z", "true"), ("W", "3"))


def test_every_reading_is_kept_in_field_order() -> None:
    entry = decode(("C", "4"), ("D", "5"), ("plant1.boiler.temp", "[1, 2]"), ("_x", "0"))
    assert entry.readings == (("C", 4), ("D", 5), ("plant1.boiler.temp", (1, 2)), ("_x", 0))
    assert entry.id == ENTRY_ID.decode()


# -- node names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["1bad", "a-b", "a b", "a.", ".a", "a..b", "a.1b", "é", "a:b", "", b"\xff", b"a\x00"]
)
def test_a_field_that_is_not_a_node_name_is_refused(name: str | bytes) -> None:
    assert "name" in rejected((name, "1"))


def test_a_node_name_has_at_most_128_characters() -> None:
    longest = "n" * 128
    assert decode((longest, "1")).readings == ((longest, 1),)
    assert "name" in rejected(("n" * 129, "1"))
    dotted = ".".join(["abc"] * 32)  # 127 characters
    assert decode((dotted, "1")).readings == ((dotted, 1),)


# -- @ts, @src and the other @ fields -------------------------------------------------------------


def test_without_ts_the_entry_id_time_is_the_ts() -> None:
    assert decode(("C", "1")).ts == ID_MS
    assert decode(("C", "1"), entry_id=b"5-0").ts == 5


@pytest.mark.parametrize("text", ["0", "1700000000000", "05", str(ID_MS + 300_000)])
def test_ts_is_a_non_negative_integer_of_milliseconds(text: str) -> None:
    entry = decode(("C", "1"), ("@ts", text))
    assert entry.ts == int(text)
    assert entry.readings == (("C", 1),)  # @ts is not a reading


@pytest.mark.parametrize(
    "text", ["-5", "1.5", "1e3", "", " 5", "5 ", "+5", "abc", "0x10", "1" * 19, "١٢"]
)
def test_a_bad_ts_refuses_the_entry(text: str) -> None:
    assert "@ts" in rejected(("C", "1"), ("@ts", text))


def test_ts_is_at_most_2_to_the_53_minus_1() -> None:
    fields = [b"C", b"1", b"@ts", str(2**53 - 1).encode()]
    assert decode_entry(ENTRY_ID, fields, max_future_ms=0).ts == 2**53 - 1
    with pytest.raises(EntryError, match="at most 2"):
        decode_entry(ENTRY_ID, [b"C", b"1", b"@ts", str(2**53).encode()], max_future_ms=0)


def test_a_ts_far_ahead_of_the_entry_is_refused() -> None:
    micros = str(ID_MS * 1000).encode()  # microseconds: the classic producer mistake
    with pytest.raises(EntryError, match="ahead of the entry's time"):
        decode_entry(ENTRY_ID, [b"C", b"1", b"@ts", micros])
    ahead = [b"C", b"1", b"@ts", str(ID_MS + 60_001).encode()]
    with pytest.raises(EntryError, match="limit 60 s"):
        decode_entry(ENTRY_ID, ahead, max_future_ms=60_000)
    assert decode_entry(ENTRY_ID, ahead, max_future_ms=60_001).ts == ID_MS + 60_001
    assert decode_entry(ENTRY_ID, ahead, max_future_ms=0).ts == ID_MS + 60_001  # 0: no limit


def test_ts_may_come_anywhere_among_the_fields() -> None:
    assert decode(("@ts", "42"), ("C", "1"), ("D", "2")).ts == 42


def test_src_is_carried_and_changes_nothing_else() -> None:
    plain = decode(("C", "1"), ("@ts", "42"))
    entry = decode(("@src", "1699-0"), ("C", "1"), ("@ts", "42"))
    assert entry.src == "1699-0"
    assert plain.src is None
    assert (entry.id, entry.ts, entry.readings) == (plain.id, plain.ts, plain.readings)


def test_an_output_entry_is_a_valid_input_entry() -> None:
    entry = decode(("A", "15"), ("@ts", "1700000001000"), ("@src", "1700000001000-0"))
    assert (entry.ts, entry.readings, entry.src) == (1700000001000, (("A", 15),), "1700000001000-0")


@pytest.mark.parametrize("field", ["@foo", "@error", "@TS", "@", "@ts ", "@node"])
def test_an_unknown_reserved_field_refuses_the_entry(field: str) -> None:
    assert "reserved" in rejected(("C", "1"), (field, "1"))


# -- duplicates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["C", "@ts", "@src"])
def test_a_field_that_appears_twice_refuses_the_entry(field: str) -> None:
    assert "twice" in rejected(("C", "1"), (field, "2"), (field, "3"))


def test_a_repeated_reading_with_the_same_value_is_still_refused() -> None:
    assert "twice" in rejected(("C", "1"), ("C", "1"))


# -- empty and deleted entries -------------------------------------------------------------------


def test_an_entry_without_readings_is_refused() -> None:
    assert "no readings" in rejected(("@ts", "5"))
    assert "no readings" in rejected(("@src", "1-0"))


def test_an_entry_deleted_before_processing_is_refused() -> None:
    with pytest.raises(EntryError, match="deleted"):
        decode_entry(ENTRY_ID, None)


# -- limits --------------------------------------------------------------------------------------


def test_at_most_1024_fields_including_the_reserved_ones() -> None:
    assert MAX_FIELDS == 1024
    readings = [(f"n{i}", "1") for i in range(MAX_FIELDS - 1)]
    entry = decode(*readings, ("@ts", "5"))
    assert len(entry.readings) == MAX_FIELDS - 1
    assert "too many fields" in rejected(*readings, ("@ts", "5"), ("@src", "1-0"))
    assert "too many fields" in rejected(*[(f"n{i}", "1") for i in range(MAX_FIELDS + 1)])


def test_the_json_text_of_a_value_has_at_most_64_kib() -> None:
    assert MAX_VALUE_BYTES == 64 * 1024
    padded = " " * (MAX_VALUE_BYTES - 1) + "7"
    assert decode(("C", padded)).readings == (("C", 7),)
    assert "bytes" in rejected(("C", " " + padded))


def test_a_vector_has_at_most_4096_elements() -> None:
    assert MAX_VECTOR_LEN == 4096
    longest = "[" + ",".join(["1"] * MAX_VECTOR_LEN) + "]"
    ((_, value),) = decode(("V", longest)).readings
    assert value == (1,) * MAX_VECTOR_LEN
    too_long = "[" + ",".join(["1"] * (MAX_VECTOR_LEN + 1)) + "]"
    assert "elements" in rejected(("V", too_long))


def test_a_deeply_nested_value_is_refused_not_a_crash() -> None:
    rejected(("C", "[" * 10_000 + "]" * 10_000))
