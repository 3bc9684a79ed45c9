"""Plugin functions for tests/test_ownership.py, referenced as ``pause_plugins:NAME``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

#: The value that makes :func:`pause_once` stop its process.
PAUSE_AT = 777


def pause_once(args: list[float]) -> float:
    """The identity, except that it stops its own process (SIGSTOP) the first time it sees
    :data:`PAUSE_AT`: inside a wave, with the batch read and not committed. The file named
    by ``STREAMCALC_TEST_PAUSE`` records that it happened, so the next owner goes on."""
    mark = os.environ.get("STREAMCALC_TEST_PAUSE", "")
    if args[0] == PAUSE_AT and mark and not Path(mark).exists():
        Path(mark).touch()
        os.kill(os.getpid(), signal.SIGSTOP)
    return args[0]
