"""The checker's model: the test suite's reference model of the semantics (``tests/model.py``).

One model, written from the semantics and sharing no code with the engine, judges both the tests
and the benchmark. The tests import it as the top-level module ``model`` (pytest puts
``tests/`` on ``sys.path``); the benchmark loads the same file by its path under a name of its
own, so that ``tests/`` (its ``conftest``, ``helpers``, ...) never goes on the harness's path.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

_PATH = Path(__file__).resolve().parents[1] / "tests" / "model.py"
_NAME = "streamcalc_reference_model"


def _load() -> ModuleType:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the reference model from {_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module  # dataclasses look their module up while building a class
    spec.loader.exec_module(module)
    return module


_model = _load()
Model = _model.Model
ModelNode = _model.ModelNode

#: One fired value as the checker compares it: (node, value, ts).
Fired = tuple[str, Any, int]


def wave(model: Any, src: str, ts: int, readings: Sequence[tuple[str, Any]]) -> list[Fired]:
    """Apply one entry to ``model`` and return the values its wave fired, in firing order."""
    model.apply(src, ts, readings)
    fired = [(name, value, t) for name, value, t, _src in model.out]
    model.out.clear()  # the checker needs one wave at a time, not the whole history
    return fired
