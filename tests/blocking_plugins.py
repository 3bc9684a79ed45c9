"""Plugin functions for tests/test_blocked_plugin.py, referenced as ``blocking_plugins:NAME``."""

from __future__ import annotations

import signal

#: The value on which :func:`block_in_c` blocks.
BLOCK_AT = 666


def block_in_c(args: list[float]) -> float:
    """The identity, except that on :data:`BLOCK_AT` it waits in C for a signal nobody sends
    (``signal.sigwait``): no Python code runs, so no timer can cut it off, and SIGTERM's
    handler never runs either."""
    if args[0] == BLOCK_AT:
        signal.sigwait({signal.SIGUSR2})
    return args[0]


def slow(args: list[float]) -> float:
    """The identity, a fifth of a second later: valid work that takes its time."""
    import time

    time.sleep(0.2)
    return args[0]
