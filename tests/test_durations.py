"""The one duration parser: its units, and where a bare number is refused or read as seconds."""

from __future__ import annotations

import pytest

from streamcalc.cli import main
from streamcalc.durations import MAX_MS, UNITS_MS, duration_ms
from streamcalc.graph import parse_duration_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0", 0),
        ("500ms", 500),
        ("1.5s", 1500),
        ("10m", 600_000),
        ("2d", 172_800_000),
        ("1w", 604_800_000),
        (" 3 h ", 10_800_000),
    ],
)
def test_every_unit_of_the_table(text: str, ms: int) -> None:
    assert duration_ms(text) == ms


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("5000", "no unit"),
        ("5y", "unknown unit 'y'"),
        ("-1s", "negative"),
        ("0.4ms", "shorter than 1ms"),
        (f"{MAX_MS + 1}ms", "too long"),
        ("soon", "not a duration"),
        (5, "expected text"),
    ],
)
def test_bad_durations_say_why(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        duration_ms(value)


def test_a_graph_ttl_number_is_seconds_and_its_units_are_the_specs() -> None:
    assert parse_duration_ms(5) == 5000 == duration_ms(5, number_unit="s")
    assert parse_duration_ms("1h") == UNITS_MS["h"]
    with pytest.raises(ValueError, match="unknown unit 'd' \\(use ms, s, m or h\\)"):
        parse_duration_ms("2d")


@pytest.mark.parametrize(
    "args",
    [
        ["history", "X", "--since", "5000"],
        ["trim", "--max-age", "60"],
        ["dead", "purge", "--older-than", "7"],
        ["worker", "--retain", "1.5"],
    ],
)
def test_a_bare_number_is_not_a_duration_on_the_command_line(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert main([*args, "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"streamcalc: error: bad {args[-2]} '{args[-1]}': no unit")
    assert err.count("\n") == 1
