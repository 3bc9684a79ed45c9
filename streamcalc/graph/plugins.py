"""Plugins: ``fn = "pkg.module:callable"`` resolved to a formula running user code under a timeout.

Whoever can write to Redis is not thereby trusted to run code on a worker: a
:class:`PluginPolicy` says which modules a process trusts (``--plugins``, a
module and its submodules) and whether it imports them at all. The default
imports nothing: a graph with plugin nodes can be checked and stored, and only
a process told to trust a plugin's module imports it. Nothing here reads the
environment: the policy comes from :class:`~streamcalc.settings.Settings`.
"""

from __future__ import annotations

import importlib
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeAlias

import msgspec

from streamcalc.errors import FunctionError
from streamcalc.graph.functions import Formula, describe
from streamcalc.settings import DEFAULT_FUNCTION_TIMEOUT_S
from streamcalc.values import Value

Plugin: TypeAlias = Callable[[list[Value]], object]
"""A user's plugin callable: ``f(args: list) -> value`` (docs/graph-file.md, Plugins)."""


class UnknownFunction(Exception):
    """A function reference that names no usable function; the message says why."""


class PluginPolicy(msgspec.Struct, frozen=True):
    """Which plugin modules a process trusts, and whether it imports them.

    ``trusted``: module names; each trusts its submodules too. ``load``: import
    and resolve trusted plugins (a worker, or ``graph check --plugins``); when
    False nothing is imported and plugin nodes are only checked for their form.
    ``timeout_s``: a plugin call is cut off after this long (0: never).
    """

    trusted: tuple[str, ...] = ()
    load: bool = False
    timeout_s: float = DEFAULT_FUNCTION_TIMEOUT_S

    def trusts(self, module: str) -> bool:
        """True when ``module`` is a trusted module or a submodule of one."""
        return any(module == t or module.startswith(t + ".") for t in self.trusted)

    def formula(self, ref: str) -> Formula:
        """The formula of plugin ``ref`` under this policy; UnknownFunction if refused."""
        module = ref.partition(":")[0]
        if _PLUGIN_REF.fullmatch(ref) is None:
            raise UnknownFunction(
                f"unknown function {ref}: a plugin is written pkg.module:function"
            )
        if not self.load:
            return _not_loaded(ref)
        if not self.trusts(module):
            raise UnknownFunction(
                f"plugin {ref}: module {module} is not trusted here "
                "(start with --plugins or STREAMCALC_PLUGINS naming it)"
            )
        return resolve_plugin(ref, self.timeout_s)


_PLUGIN_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)


def trusted_modules(text: str) -> tuple[str, ...]:
    """The modules of ``--plugins MOD[,MOD...]``; ValueError for a name that is no module name."""
    modules = tuple(part.strip() for part in text.split(",") if part.strip())
    for module in modules:
        if not all(piece.isidentifier() for piece in module.split(".")):
            raise ValueError(f"bad module name {module!r} in --plugins")
    return modules


#: Import no plugin: a graph can be checked and stored, not run.
NO_PLUGINS = PluginPolicy()


def _not_loaded(ref: str) -> Formula:
    def run(args: Sequence[Value]) -> object:
        raise FunctionError(f"{ref} is not loaded in this process (no --plugins)")

    return run


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


#: The plugin call running in this process's main thread: (ref, start, timeout), or None.
_running: tuple[str, float, float] | None = None


def blocked_call() -> str:
    """What blocks this process, or "": a plugin call that has run past its timeout by
    as long again (at least a second) is blocked where the timer cannot cut it off (in
    C code: ``signal.sigwait``, a C extension's sleep), and will not return by itself."""
    running = _running
    if running is None:
        return ""
    ref, started, timeout_s = running
    ran = time.monotonic() - started
    if not timeout_s or ran <= timeout_s + max(timeout_s, 1.0):
        return ""
    return f"plugin {ref} blocked for {ran:.0f}s, past its timeout of {timeout_s:g}s"


def _plugin_formula(ref: str, plugin: Plugin, timeout_s: float) -> Formula:
    """The formula calling ``plugin`` with a list of argument values, its failures and
    overruns (longer than ``timeout_s``; 0 = no limit) turned into FunctionErrors."""

    def run(args: Sequence[Value]) -> object:
        global _running
        # The timer needs the main thread (signals); workers run there. Elsewhere, no limit.
        timed = timeout_s > 0 and threading.current_thread() is threading.main_thread()
        if timed:
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            _running = (ref, time.monotonic(), timeout_s)
        try:
            return plugin(list(args))
        except FunctionError:
            raise
        except _PluginTimeout:
            raise FunctionError(f"{ref} timed out after {timeout_s:g}s") from None
        except BaseException as exc:  # user code: even SystemExit is that node's failure
            raise FunctionError(f"{ref} raised {describe(exc)}") from exc
        finally:
            if timed:
                _running = None
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)

    return run
