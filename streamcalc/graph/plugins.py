"""Plugins: ``fn = "pkg.module:callable"`` resolved to a formula running user code under a timeout.

The timeout is the compiling worker's (``Settings.function_timeout_s``), handed
down through ``Graph(..., function_timeout_s=...)``; nothing here reads the
environment.
"""

from __future__ import annotations

import importlib
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TypeAlias

from streamcalc.errors import FunctionError
from streamcalc.graph.functions import Formula, describe
from streamcalc.settings import DEFAULT_FUNCTION_TIMEOUT_S
from streamcalc.values import Value

Plugin: TypeAlias = Callable[[list[Value]], object]
"""A user's plugin callable: ``f(args: list) -> value`` (SPEC section 3)."""


class UnknownFunction(Exception):
    """A function reference that names no usable function; the message says why."""


def resolve_plugin(ref: str, timeout_s: float = DEFAULT_FUNCTION_TIMEOUT_S) -> Formula:
    """Import ``pkg.mod:func`` and wrap it as a formula cut off after ``timeout_s`` (0: never).

    Raises UnknownFunction when the module cannot be imported, lacks the
    attribute, or the attribute is not callable.
    """
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        raise UnknownFunction(f"unknown function {ref}: a plugin is written pkg.module:function")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # importing runs user code: any failure means "unusable"
        raise UnknownFunction(
            f"unknown function {ref}: cannot import module {module_name} ({describe(exc)})"
        ) from None
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise UnknownFunction(f"unknown function {ref}: {module_name} has no attribute {attr}")
        target = getattr(target, attr)
    if not callable(target):
        raise UnknownFunction(f"unknown function {ref}: {attr_path} is not callable")
    return _plugin_formula(ref, target, timeout_s)


class _PluginTimeout(BaseException):
    """Raised into a hanging plugin by SIGALRM; a BaseException, so ``except Exception`` in
    the plugin cannot swallow it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _PluginTimeout


def _plugin_formula(ref: str, plugin: Plugin, timeout_s: float) -> Formula:
    """The formula calling ``plugin`` with a list of argument values, its failures and
    overruns (longer than ``timeout_s``; 0 = no limit) turned into FunctionErrors."""

    def run(args: Sequence[Value]) -> object:
        # The timer needs the main thread (signals); workers run there. Elsewhere, no limit.
        timed = timeout_s > 0 and threading.current_thread() is threading.main_thread()
        if timed:
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return plugin(list(args))
        except FunctionError:
            raise
        except _PluginTimeout:
            raise FunctionError(f"{ref} timed out after {timeout_s:g}s") from None
        except Exception as exc:  # user code: whatever it raises is that node's failure
            raise FunctionError(f"{ref} raised {describe(exc)}") from exc
        finally:
            if timed:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)

    return run
