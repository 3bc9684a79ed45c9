"""The worker process's garbage-collector settings (streamcalc.worker.tune_gc)."""

from __future__ import annotations

import gc

from streamcalc.worker import GC_YOUNG_THRESHOLD, tune_gc


def test_tune_gc_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
