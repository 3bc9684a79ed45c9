"""Every Redis key streamcalc uses is built here, and only here.

All keys of one namespace share the hash tag ``{NS}`` so that a namespace lives
in one Redis Cluster slot and every Lua script can declare all of its keys.
A future partitioned layout (``sc:{NS:P}:…``) changes only this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NS_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def valid_namespace(ns: str) -> bool:
    """True when ``ns`` may be used as a namespace (no braces, colons or spaces)."""
    return _NS_PATTERN.fullmatch(ns) is not None


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one namespace."""

    ns: str

    @property
    def prefix(self) -> str:
        """``sc:{NS}:``, the prefix of every key of the namespace."""
        return f"sc:{{{self.ns}}}:"

    @property
    def input(self) -> str:
        """Stream of input entries; producers XADD here."""
        return self.prefix + "in"

    @property
    def output(self) -> str:
        """Stream of derived values, one entry per fired value."""
        return self.prefix + "out"

    @property
    def dead(self) -> str:
        """Stream of dead letters."""
        return self.prefix + "dead"

    @property
    def graph(self) -> str:
        """Hash: node name -> canonical JSON definition of a derived node."""
        return self.prefix + "graph"

    @property
    def meta(self) -> str:
        """Hash: graph version, graph source text and load time."""
        return self.prefix + "meta"

    @property
    def slots(self) -> str:
        """Hash: derived node -> JSON list of its argument slots."""
        return self.prefix + "slots"

    @property
    def versions(self) -> str:
        """Hash: derived node -> version of its slot state (optimistic concurrency)."""
        return self.prefix + "ver"

    @property
    def latest(self) -> str:
        """Hash: node -> ``"<ts> <json value>"``, the node's latest value (S1)."""
        return self.prefix + "latest"

    def all(self) -> tuple[str, ...]:
        """Every key of the namespace, for tests and clean-up."""
        return (
            self.input,
            self.output,
            self.dead,
            self.graph,
            self.meta,
            self.slots,
            self.versions,
            self.latest,
        )
