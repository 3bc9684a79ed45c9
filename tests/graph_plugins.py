"""Plugin functions that tests/test_graph.py references as ``graph_plugins:NAME``."""

from __future__ import annotations

NOT_CALLABLE = 42


def efficiency(args: list[float]) -> float:
    """A good plugin: power out over power in."""
    power_in, power_out = args
    return power_out / power_in


def explode(args: list[float]) -> float:
    """A plugin that raises, with a message spanning lines."""
    raise RuntimeError("boom\nsecond line")


def not_a_number(args: list[float]) -> float:
    """A plugin that returns NaN."""
    return float("nan")


def doubled(args: list[float]) -> list[float]:
    """A plugin returning a list, which becomes a vector."""
    return [2 * value for value in args]


def text(args: list[float]) -> str:
    """A plugin returning something that is not a value."""
    return "7"


class Namespace:
    """Holds a function reached by a dotted attribute path."""

    @staticmethod
    def total(args: list[float]) -> float:
        return sum(args)


def hang(args: list[float]) -> float:
    """A plugin that never returns."""
    while True:
        pass


def stubborn(args: list[float]) -> float:
    """A plugin that hangs and swallows every ordinary exception."""
    import time

    while True:
        try:
            time.sleep(10)
        except Exception:
            continue


def nap(args: list[float]) -> float:
    """A plugin that takes a second, longer than a short timeout allows."""
    import time

    time.sleep(1)
    return args[0]


def exits(args: list[float]) -> float:
    """A plugin that tries to end the worker."""
    raise SystemExit(3)
