"""The graph file: TOML text -> node definitions with defaults applied -> a validated Graph."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from streamcalc.durations import duration_ms
from streamcalc.graph.compiled import Graph
from streamcalc.graph.model import DEFAULT_TTL_MS, MODES, UNKNOWN_POLICIES, NodeDef, graph_error
from streamcalc.graph.plugins import NO_PLUGINS, PluginPolicy
from streamcalc.graph.validate import check_name, compile_expression

#: The units a ttl is written in (docs/graph-file.md); a bare number is seconds.
TTL_UNITS = ("ms", "s", "m", "h")


class _NodeSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[nodes.NAME]`` table as written; ttl and mode are checked by hand (clear messages)."""

    fn: str | None = None
    args: tuple[str, ...] | None = None
    expr: str | None = None
    ttl: Any = None
    mode: Any = None


_NODE_KEYS = frozenset(_NodeSpec.__struct_fields__)
_DEFAULTS_KEYS = frozenset({"ttl", "mode", "unknown"})
_TOP_KEYS = frozenset({"defaults", "inputs", "nodes"})
_INPUTS_KEYS = frozenset({"names"})


def parse_duration_ms(value: object) -> int:
    """Milliseconds of a ttl: seconds as a number, or text "250ms", "60s", "5m", "1h" (or "0").

    Raises ValueError saying why (see :func:`streamcalc.durations.duration_ms`).
    """
    return duration_ms(value, number_unit="s", units=TTL_UNITS)


def parse_graph_file(path: str | os.PathLike[str], plugins: PluginPolicy = NO_PLUGINS) -> Graph:
    """Read, decode and validate a graph file; every problem is a one-line GraphError.

    Plugins are imported (and must resolve) only as ``plugins`` allows.
    """
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise graph_error(source, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise graph_error(source, f"not UTF-8 text (byte {exc.start})") from None
    return parse_graph_text(text, source, plugins)


def parse_graph_text(text: str, source: str, plugins: PluginPolicy = NO_PLUGINS) -> Graph:
    """Validate graph TOML ``text``; ``source`` names the file in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise graph_error(source, f"TOML syntax error: {exc}") from None
    except RecursionError:
        raise graph_error(source, "TOML nested too deeply") from None
    unknown = sorted(set(document) - _TOP_KEYS)
    if unknown:
        raise graph_error(
            source, f"unknown top-level key {unknown[0]!r} (allowed: defaults, inputs, nodes)"
        )
    ttl_ms, mode, unknown_policy = _defaults(source, document.get("defaults", {}))
    tables = document.get("nodes", {})
    if not isinstance(tables, dict):
        raise graph_error(source, "nodes must be a table of [nodes.NAME] tables")
    if not tables:
        raise graph_error(source, "no nodes defined (add a [nodes.NAME] table)")
    nodes = [_node(source, name, tables[name], ttl_ms, mode) for name in sorted(tables)]
    declared = _inputs(source, document["inputs"]) if "inputs" in document else None
    return Graph(nodes, source, plugins=plugins, unknown=unknown_policy, declared_inputs=declared)


def _inputs(source: str, table: object) -> list[str]:
    """``[inputs] names = [...]``: the inputs a graph declares (then no other is allowed)."""
    if not isinstance(table, dict):
        raise graph_error(source, "inputs must be a table: [inputs] names = [...]")
    unknown = sorted(set(table) - _INPUTS_KEYS)
    if unknown:
        raise graph_error(source, f"unknown key {unknown[0]!r} in [inputs] (allowed: names)")
    names = table.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise graph_error(source, "[inputs] names must be a list of node names")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise graph_error(source, f"input {name} is declared twice in [inputs]")
        seen.add(name)
    return names


def _defaults(source: str, table: object) -> tuple[int, str, str]:
    if not isinstance(table, dict):
        raise graph_error(source, "defaults must be a table")
    unknown = sorted(set(table) - _DEFAULTS_KEYS)
    if unknown:
        raise graph_error(
            source, f"unknown key {unknown[0]!r} in [defaults] (allowed: ttl, mode, unknown)"
        )
    ttl_ms = _ttl(source, None, table["ttl"]) if "ttl" in table else DEFAULT_TTL_MS
    mode = _mode(source, None, table["mode"]) if "mode" in table else MODES[0]
    policy = table.get("unknown", UNKNOWN_POLICIES[0])
    if policy not in UNKNOWN_POLICIES:
        raise graph_error(source, f"bad unknown {policy!r} in [defaults]: must be ignore or dead")
    return ttl_ms, mode, policy


def _node(source: str, name: str, table: object, ttl_ms: int, mode: str) -> NodeDef:
    check_name(source, name)
    unknown = sorted(set(table) - _NODE_KEYS) if isinstance(table, dict) else []
    if unknown:
        key = unknown[0]
        hint = ""
        if isinstance(table, dict) and isinstance(table[key], dict):
            # [nodes.plant1.boiler] makes nested tables, not a node named "plant1.boiler".
            hint = f'; a dotted node name must be quoted: [nodes."{name}.{key}"]'
        raise graph_error(
            source, f"unknown key {key!r} (allowed: fn, args, expr, ttl, mode){hint}", name
        )
    try:
        spec = msgspec.convert(table, _NodeSpec)
    except msgspec.ValidationError as exc:
        raise graph_error(source, f"invalid definition: {exc}", name) from None
    if spec.ttl is not None:
        ttl_ms = _ttl(source, name, spec.ttl)
    if spec.mode is not None:
        mode = _mode(source, name, spec.mode)
    args: tuple[str, ...] = ()
    if spec.fn is not None and spec.expr is None:
        if spec.args is None:
            raise graph_error(source, f"fn {spec.fn} without args", name)
        args = spec.args
    elif spec.expr is not None and spec.fn is None:
        if spec.args is not None:
            raise graph_error(
                source, "args given with expr (an expression's arguments are its node names)", name
            )
        args = compile_expression(source, name, spec.expr).args
    # Both or neither of fn/expr: the Graph's own check reports it.
    return NodeDef(name, args, fn=spec.fn, expr=spec.expr, ttl_ms=ttl_ms, mode=mode)


def _ttl(source: str, node: str | None, value: object) -> int:
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        where = "" if node is not None else " in [defaults]"
        raise graph_error(source, f"bad ttl {value!r}{where}: {exc}", node) from None


def _mode(source: str, node: str | None, value: object) -> str:
    if isinstance(value, str) and value in MODES:
        return value
    where = "" if node is not None else " in [defaults]"
    raise graph_error(source, f"bad mode {value!r}{where}: must be consume or latest", node)
