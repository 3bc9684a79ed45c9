"""The graph's vocabulary: node names, modes, and the resolved definition of one derived node."""

from __future__ import annotations

import re

import msgspec

from streamcalc.errors import GraphError

MAX_NAME_LENGTH = 128
DEFAULT_TTL_MS = 60_000
MODES = ("consume", "latest")
#: What a reading of a name that is not a node of the graph does: counted and ignored (the
#: default) or, with ``[defaults] unknown = "dead"``, its whole entry becomes a dead letter.
UNKNOWN_POLICIES = ("ignore", "dead")

_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def valid_node_name(name: str) -> bool:
    """True when ``name`` is a node name: ``ident`` or ``ident.ident...``, at most 128 chars."""
    return len(name) <= MAX_NAME_LENGTH and _NAME_PATTERN.fullmatch(name) is not None


class NodeDef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One derived node, fully resolved: defaults applied, expression arguments extracted.

    Exactly one of ``fn`` (a built-in name or a plugin ``pkg.mod:func``) and
    ``expr`` is set. For an expression, ``args`` are its node names in order of
    first appearance. ``ttl_ms`` 0 means the node's slots never expire.
    """

    name: str
    args: tuple[str, ...]
    fn: str | None = None
    expr: str | None = None
    ttl_ms: int = DEFAULT_TTL_MS
    mode: str = "consume"


def one_line(text: str) -> str:
    """Collapse all whitespace runs (newlines included) into single spaces."""
    return " ".join(text.split())


def graph_error(source: str, problem: str, node: str | None = None) -> GraphError:
    """Build the one-line ``<source>: node <name>: <problem>`` error every check raises."""
    where = f"{source}: node {node}: " if node is not None else f"{source}: "
    return GraphError(one_line(where + problem))
