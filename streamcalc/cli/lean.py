"""Keep redis-py's parts a one-shot command never uses from loading at start.

``import redis`` runs ``from redis import asyncio``, which imports the whole
asyncio client (``redis.asyncio.client``, ``.cluster``, ``.connection``,
``.sentinel``); and ``redis.utils`` imports :mod:`importlib.metadata` only to
look up its own version for ``CLIENT SETINFO`` (the client the CLI makes names
that version itself: :func:`streamcalc.store.connect`). ``send`` and
``values`` use neither, yet they would cost them about a sixth of their start.
:func:`lean_redis` puts both packages in place without running them: their
submodules still import as usual (the sync client needs
``redis.asyncio.observability``), and the first use of anything else in them
runs the package then, so a caller that does want them sees no difference.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

#: What a one-shot command defers, each a package (name, the parent it is found under).
DEFERRED = ("redis.asyncio", "importlib.metadata")


class DeferredPackage(types.ModuleType):
    """A package whose code has not run yet: the first attribute it lacks runs it, in place."""

    def __getattr__(self, name: str) -> object:
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        self.__class__ = types.ModuleType  # type: ignore[assignment]  # an ordinary module now
        spec.loader.exec_module(self)
        return getattr(self, name)


def defer_package(name: str) -> None:
    """Register package ``name`` without running it (nothing if it is imported already)."""
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    where = sys.modules.get(parent) or importlib.util.find_spec(parent)  # neither runs the parent
    locations = getattr(where, "__path__", None) or getattr(
        where, "submodule_search_locations", None
    )
    spec = importlib.machinery.PathFinder.find_spec(name, locations)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not a package here: leave it to the ordinary import
    module = importlib.util.module_from_spec(spec)
    module.__class__ = DeferredPackage
    sys.modules[name] = module
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)


def lean_redis() -> None:
    """Before redis-py is first imported: defer what a one-shot command does not use.

    A no-op once redis is imported (a caller in the same process may already use it).
    """
    if "redis" in sys.modules:
        return
    for name in DEFERRED:
        defer_package(name)
