"""The Lua scripts of streamcalc, each in its own ``.lua`` file, and a thin typed wrapper.

Scripts are registered with redis-py's ``register_script`` so that a flushed
script cache (``SCRIPT FLUSH``, a restarted Redis) reloads them transparently.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from streamcalc.keys import Keys

ScriptArg = str | bytes | int | float


def script_source(name: str) -> str:
    """The text of ``streamcalc/scripts/<name>.lua``."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    """The registered scripts of one client and namespace."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._commit: Script = client.register_script(script_source("commit"))
        self._load_graph: Script = client.register_script(script_source("load_graph"))
        self._leave: Script = client.register_script(script_source("leave"))

    def _commit_keys(self) -> list[str]:
        k = self.keys
        return [k.input, k.output, k.dead, k.slots, k.versions, k.latest, k.meta]

    def commit(self, args: list[ScriptArg]) -> list[Any]:
        """Run commit.lua (see its header for ARGV and the reply)."""
        reply: list[Any] = self._commit(keys=self._commit_keys(), args=args)
        return reply

    def commit_command(self, args: list[ScriptArg]) -> tuple[Any, ...]:
        """The EVALSHA command of commit.lua, for a pipeline the caller sends and reads itself.

        A NOSCRIPT reply is the caller's to handle (:meth:`commit` loads the script).
        """
        keys = self._commit_keys()
        return ("EVALSHA", self._commit.sha, len(keys), *keys, *args)

    def load_graph(self, graph_hash: str, loaded_ms: int, definitions: dict[str, bytes]) -> int:
        """Run load_graph.lua; returns the new graph version."""
        k = self.keys
        args: list[ScriptArg] = [graph_hash, loaded_ms, len(definitions)]
        for node, definition in definitions.items():
            args += [node, definition]
        return int(self._load_graph(keys=[k.graph, k.meta, k.slots, k.versions], args=args))

    def leave(self, group: str, consumer: str) -> bool:
        """Run leave.lua: remove ``consumer`` unless it owns pending entries; True if removed."""
        return bool(self._leave(keys=[self.keys.input], args=[group, consumer]))
