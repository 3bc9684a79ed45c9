"""The compiled graph: validated definitions, their shape, and each derived node's function."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TypeAlias, TypeVar

import msgspec

from streamcalc.errors import FunctionError
from streamcalc.graph.expr import scalar_source
from streamcalc.graph.functions import Formula, describe
from streamcalc.graph.model import UNKNOWN_POLICIES, NodeDef, graph_error
from streamcalc.graph.plugins import NO_PLUGINS, PluginPolicy
from streamcalc.graph.validate import (
    check_acyclic,
    check_inputs,
    check_node,
    check_size,
    rank_nodes,
    size_warnings,
)
from streamcalc.values import Value, normalize

# Redis hands back bytes keys, callers may hold str keys: accept either (or a mix).
_Key = TypeVar("_Key", bound=str | bytes)

NodeFunction: TypeAlias = Callable[[Sequence[Value]], Value]
"""A derived node's function: its slot values in argument order -> its finite value, or a
FunctionError (see :meth:`Graph.evaluate`)."""

_encoder = msgspec.json.Encoder()
#: The graph hash's field of ``[defaults] unknown`` (only when it is not the default).
_UNKNOWN = b"@unknown"
#: The graph hash's field of a file's ``[inputs]`` (a JSON list; only when the file has one).
_INPUTS = b"@inputs"
_names_decoder = msgspec.json.Decoder(list[str])
_decoder = msgspec.json.Decoder(NodeDef)


class Graph:
    """An immutable, validated graph, ready to evaluate.

    ``Graph(nodes, source)`` validates the definitions (raising GraphError whose
    message names ``source`` and the node) and compiles each derived node's
    function; ``parse_graph_text`` and ``from_definitions`` both end here.
    ``plugins`` says which plugin modules may be imported (none by default) and
    their timeout: a worker passes its ``Settings.plugin_policy``. With
    ``declared_inputs`` (a file's ``[inputs]``), an argument that is neither a
    derived node nor declared is a GraphError naming it.
    """

    __slots__ = (
        "_definitions",
        "_downstream",
        "_functions",
        "_scalar",
        "declared_inputs",
        "inputs",
        "nodes",
        "order",
        "parents",
        "rank",
        "unknown",
        "version_hash",
        "warnings",
    )

    nodes: Mapping[str, NodeDef]
    """Derived nodes by name, in name order."""
    inputs: frozenset[str]
    """Nodes used as arguments but not defined."""
    declared_inputs: frozenset[str] | None
    """The inputs a graph file's ``[inputs]`` table declares (None: no table). Stored with
    the graph (the ``@inputs`` field) and part of its hash; all of them are in ``inputs``."""
    parents: Mapping[str, tuple[tuple[str, int], ...]]
    """Any node -> every (derived node, argument position) slot it feeds."""
    rank: Mapping[str, int]
    """Derived node -> topological rank; every argument's rank is lower."""
    order: tuple[str, ...]
    """Derived nodes by (rank, name): an evaluation order that respects dependencies."""
    version_hash: str
    """sha1 hex of the definitions: equal graphs have equal hashes."""
    unknown: str
    """What a reading of a name that is not a node does: ``ignore`` (counted) or ``dead``."""

    def __init__(
        self,
        nodes: Iterable[NodeDef],
        source: str = "<graph>",
        *,
        plugins: PluginPolicy = NO_PLUGINS,
        unknown: str = UNKNOWN_POLICIES[0],
        declared_inputs: Iterable[str] | None = None,
    ) -> None:
        if unknown not in UNKNOWN_POLICIES:
            raise graph_error(source, f"bad unknown {unknown!r}: must be ignore or dead")
        self.unknown = unknown
        by_name: dict[str, NodeDef] = {}
        for node in nodes:
            if node.name in by_name:
                raise graph_error(source, "defined twice", node.name)
            by_name[node.name] = node
        if not by_name:
            raise graph_error(source, "no nodes defined")
        check_size(source, by_name)
        formulas: dict[str, Formula] = {}
        for name in sorted(by_name):
            formulas[name] = check_node(source, by_name[name], plugins)
        check_acyclic(source, by_name)
        rank = rank_nodes(by_name)

        parents: dict[str, list[tuple[str, int]]] = {}
        for name in sorted(by_name):
            for position, arg in enumerate(by_name[name].args):
                parents.setdefault(arg, []).append((name, position))

        self.nodes = MappingProxyType({name: by_name[name] for name in sorted(by_name)})
        self.inputs = frozenset(parents) - frozenset(by_name)
        self.declared_inputs = None
        if declared_inputs is not None:
            self.declared_inputs = frozenset(declared_inputs)
            check_inputs(source, by_name, self.inputs, self.declared_inputs)
            # A declared input no node uses is still a node: its readings are stored.
            self.inputs |= self.declared_inputs
        self.parents = MappingProxyType({k: tuple(v) for k, v in sorted(parents.items())})
        self.rank = MappingProxyType(dict(sorted(rank.items())))
        self.order = tuple(sorted(by_name, key=lambda name: (rank[name], name)))
        self._functions = {
            name: _node_function(name, formula, len(by_name[name].args))
            for name, formula in formulas.items()
        }
        scalar = {name: _scalar_source(node) for name, node in self.nodes.items()}
        self._scalar = {name: text for name, text in scalar.items() if text is not None}
        self._definitions = {name: _encoder.encode(node) for name, node in self.nodes.items()}
        self._downstream: dict[str, frozenset[str]] = {}
        digest = hashlib.sha1(usedforsecurity=False)
        for name, text in self._definitions.items():
            digest.update(b"%s\0%s\n" % (name.encode(), text))
        for option, value in self._options().items():  # only options off their defaults
            digest.update(b"%s\0%s\n" % (option, value))
        self.version_hash = digest.hexdigest()
        self.warnings = size_warnings(by_name)
        """Where the graph comes near a limit (``graph check`` prints them)."""

    def evaluate(self, name: str, args: Sequence[Value]) -> Value:
        """Run derived node ``name``'s function on its slot values, in argument order.

        Any failure -- the function raising, division by zero, vectors of
        different lengths, a result that is not a finite number or vector --
        raises FunctionError with a one-line message.
        """
        function = self._functions.get(name)
        if function is None:
            raise FunctionError(f"{name} is not a derived node")
        return function(args)

    def function(self, name: str) -> NodeFunction:
        """Derived node ``name``'s function, :meth:`evaluate` bound once: the wave fires it."""
        return self._functions[name]

    def scalar_formula(self, name: str) -> str | None:
        """Derived node ``name``'s formula as Python source over ``v0``, ``v1``, ... (its
        slot values) when every argument is a number, if it has one: only for formulas of
        numbers, ``+ - *`` and unary minus, which Python's own operators compute exactly
        as :meth:`function` does (the wave runs it, and :meth:`function` on anything else:
        a vector, a result that is not a finite number in range, an exception)."""
        return self._scalar.get(name)

    def downstream(self, node: str) -> frozenset[str]:
        """Every derived node whose value depends, directly or not, on ``node``."""
        cached = self._downstream.get(node)
        if cached is not None:
            return cached
        seen: set[str] = set()
        frontier = [node]
        while frontier:
            for parent, _ in self.parents.get(frontier.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    frontier.append(parent)
        result = self._downstream[node] = frozenset(seen)
        return result

    def definitions(self) -> dict[str, bytes]:
        """Node name -> canonical JSON of its NodeDef; the same graph gives the same bytes."""
        return dict(self._definitions)

    def stored(self) -> dict[str, bytes]:
        """What the graph hash in Redis holds: :meth:`definitions` plus the graph's options
        off their defaults, as ``@option`` fields (no node name starts with ``@``)."""
        stored = dict(self._definitions)
        stored.update((option.decode(), value) for option, value in self._options().items())
        return stored

    def _options(self) -> dict[bytes, bytes]:
        options: dict[bytes, bytes] = {}
        if self.unknown != UNKNOWN_POLICIES[0]:
            options[_UNKNOWN] = self.unknown.encode()
        if self.declared_inputs is not None:
            options[_INPUTS] = _encoder.encode(sorted(self.declared_inputs))
        return options

    @classmethod
    def from_definitions(
        cls,
        defs: Mapping[_Key, bytes],
        source: str = "redis",
        *,
        plugins: PluginPolicy = NO_PLUGINS,
    ) -> Graph:
        """Rebuild a graph from ``stored()`` output (e.g. a Redis hash), revalidating it
        and compiling its node functions (``plugins`` as in :class:`Graph`)."""
        nodes: list[NodeDef] = []
        unknown = UNKNOWN_POLICIES[0]
        declared: list[str] | None = None
        for key, text in defs.items():
            field = key.encode() if isinstance(key, str) else key
            if field == _UNKNOWN:
                unknown = text.decode("utf-8", "backslashreplace")
                continue
            if field == _INPUTS:
                declared = _declared(source, text)
                continue
            try:
                name = key.decode() if isinstance(key, bytes) else key
            except UnicodeDecodeError:
                raise graph_error(source, f"node name {key!r} is not UTF-8") from None
            try:
                node = _decoder.decode(text)
            except msgspec.DecodeError as exc:
                raise graph_error(source, f"bad stored definition: {exc}", name) from None
            if node.name != name:
                raise graph_error(source, f"stored definition names {node.name!r}", name)
            nodes.append(node)
        return cls(nodes, source, plugins=plugins, unknown=unknown, declared_inputs=declared)

    @staticmethod
    def names_of(defs: Mapping[_Key, bytes]) -> frozenset[str]:
        """Every node name of stored definitions (derived nodes and their arguments), read
        without compiling anything: enough to tell a known name from a typo, fast."""
        names: set[str] = set()
        for key, text in defs.items():
            name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
            if name == _INPUTS.decode():
                with contextlib.suppress(msgspec.DecodeError):
                    names.update(_names_decoder.decode(text))
            if name.startswith("@"):
                continue  # a setting of the graph, not a node
            names.add(name)
            try:
                names.update(_decoder.decode(text).args)
            except msgspec.DecodeError:
                continue  # what reads the graph for real reports it
        return frozenset(names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self.version_hash == other.version_hash

    def __hash__(self) -> int:
        return hash(self.version_hash)

    def __repr__(self) -> str:
        return (
            f"<Graph {len(self.nodes)} derived, {len(self.inputs)} inputs, "
            f"version {self.version_hash[:12]}>"
        )


def _declared(source: str, text: bytes) -> list[str]:
    try:
        return _names_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise graph_error(source, f"bad stored inputs: {exc}") from None


#: Built-ins whose call on numbers is Python's operator folded left over the arguments.
_SCALAR_BUILTINS = {"add": " + ", "mul": " * "}


def _scalar_source(node: NodeDef) -> str | None:
    args = [f"v{i}" for i in range(len(node.args))]
    if node.expr is not None:
        return scalar_source(node.expr, node.args)
    if node.fn in _SCALAR_BUILTINS:
        return "(" + _SCALAR_BUILTINS[node.fn].join(args) + ")"
    if node.fn == "sub":
        return f"({args[0]} - {args[1]})"
    return None


def _node_function(name: str, formula: Formula, count: int) -> NodeFunction:
    """Node ``name``'s function: its formula, checked (see :meth:`Graph.evaluate`)."""

    def function(args: Sequence[Value]) -> Value:
        if len(args) != count:
            raise FunctionError(f"{name} takes {count} arguments, got {len(args)}")
        try:
            result = formula(args)
        except FunctionError:
            raise
        except ZeroDivisionError:
            raise FunctionError("division by zero") from None
        except OverflowError:
            raise FunctionError("overflow") from None
        except Exception as exc:  # e.g. a TypeError from a non-Value argument
            raise FunctionError(describe(exc)) from exc
        # Fast path: a finite float (x - x is 0.0 only for finite x) needs no further checks.
        if type(result) is float and result - result == 0.0:
            return result
        try:
            return normalize(result)
        except ValueError as exc:
            raise FunctionError(f"bad result: {exc}") from None

    return function
