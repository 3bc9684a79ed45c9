"""The Lua scripts of streamcalc, each in its own ``.lua`` file, and the one typed wrapper of each.

:class:`Scripts` registers every script with redis-py's ``register_script``, so
that a flushed script cache (``SCRIPT FLUSH``, a restarted Redis) reloads them
transparently; one :class:`Scripts` serves one partition (all its keys share
one hash slot). The requests and replies, and the layout of a dead letter,
are in :mod:`streamcalc.scripts.protocol` and exported from here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from streamcalc.keys import Keys
from streamcalc.scripts.protocol import (
    BOUNDS,
    DEAD_BYTES_LIMIT,
    DEAD_DELIVERIES,
    DEAD_ERROR,
    DEAD_ESCAPE,
    DEAD_FIELDS_LIMIT,
    DEAD_LETTER_FIELDS,
    DEAD_NODE,
    DEAD_SRC,
    DEAD_TRUNCATED,
    DEAD_VALUE_PREFIX,
    CommitReply,
    CommitRequest,
    DeadLetter,
    DeadRetryReply,
    LeaseReply,
    LeaseToken,
    PoisonEntry,
    RawEntry,
    ReadReply,
    ScriptArg,
    TrimReply,
    TrimRequest,
    original_fields,
    original_pairs,
    reply_text,
)

__all__ = [
    "DEAD_BYTES_LIMIT",
    "DEAD_DELIVERIES",
    "DEAD_ERROR",
    "DEAD_ESCAPE",
    "DEAD_FIELDS_LIMIT",
    "DEAD_LETTER_FIELDS",
    "DEAD_NODE",
    "DEAD_SRC",
    "DEAD_TRUNCATED",
    "DEAD_VALUE_PREFIX",
    "UNKNOWN_NAMES_KEPT",
    "CommitReply",
    "CommitRequest",
    "DeadLetter",
    "DeadRetryReply",
    "LeaseReply",
    "LeaseToken",
    "PoisonEntry",
    "RawEntry",
    "ReadReply",
    "ScriptArg",
    "Scripts",
    "TrimReply",
    "TrimRequest",
    "members_script",
    "original_fields",
    "original_pairs",
    "range_script",
    "script_source",
]


@functools.cache
def script_source(name: str) -> str:
    """The text of ``streamcalc/scripts/<name>.lua``, its ``-- #include NAME`` lines replaced
    by ``NAME.lua`` (shared helpers: Redis runs each script on its own)."""
    text = resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: script_source(m.group(1)).rstrip("\n"), text)


_INCLUDE = re.compile(r"^-- #include (\w+)$", re.MULTILINE)


class Scripts:
    """The registered scripts of one client and partition."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._commit: Script = client.register_script(script_source("commit"))
        self._load_graph: Script = client.register_script(script_source("load_graph"))
        self._leave: Script = client.register_script(script_source("leave"))
        self._lease: Script = client.register_script(script_source("lease"))
        self._route: Script = client.register_script(script_source("route"))
        self._fetch: Script = client.register_script(script_source("fetch"))
        self._trim: Script = client.register_script(script_source("trim"))
        self._dead_retry: Script = client.register_script(script_source("dead_retry"))
        self._unknown: Script = client.register_script(script_source("unknown"))
        k = keys
        self._commit_keys = [
            k.input, k.output, k.dead, k.slots, k.latest, k.meta, "", k.fresh, k.key_index,
        ]  # fmt: skip

    def commit_keys(self, group: str) -> list[str]:
        """KEYS of commit.lua for ``group``."""
        keys = list(self._commit_keys)
        keys[6] = self.keys.lease(group)
        return keys

    def commit(self, request: CommitRequest) -> CommitReply:
        """Run commit.lua."""
        reply = self._commit(keys=self.commit_keys(request.group), args=request.args())
        return CommitReply.parse(reply)

    def commit_command(self, request: CommitRequest) -> tuple[Any, ...]:
        """The EVALSHA command of commit.lua, for a pipeline the caller sends and reads itself.

        A NOSCRIPT reply is the caller's to handle (:meth:`commit` loads the script).
        """
        keys = self.commit_keys(request.group)
        return ("EVALSHA", self._commit.sha, len(keys), *keys, *request.args())

    def load_graph(self, graph_hash: str, loaded_ms: int, definitions: dict[str, bytes]) -> int:
        """Run load_graph.lua; returns the new graph version."""
        k = self.keys
        args: list[ScriptArg] = [graph_hash, loaded_ms, len(definitions)]
        for node, definition in definitions.items():
            args += [node, definition]
        return int(self._load_graph(keys=[k.graph, k.meta, k.unknown], args=args))

    def leave(self, group: str, consumer: str) -> bool:
        """Run leave.lua: remove ``consumer`` unless it owns pending entries; True if removed."""
        return bool(self._leave(keys=[self.keys.input], args=[group, consumer]))

    def take_lease(
        self, group: str, consumer: str, lease_ms: int, instance: str = "-", gone: str = ""
    ) -> LeaseReply:
        """Take the partition's lease if nobody holds it, or if its holder is ``consumer``'s
        own instance ``gone`` (a predecessor found dead); see lease.lua."""
        args: list[ScriptArg] = ["take", group, consumer, lease_ms, instance, gone]
        taken, token = self._lease(keys=self._lease_keys(group), args=args)
        text = reply_text(token)
        return LeaseReply(text, "") if int(taken) else LeaseReply(None, text)

    def renew_lease(self, group: str, token: str, lease_ms: int) -> bool:
        """Extend the lease held by ``token``; False when it is no longer held by it."""
        return bool(
            self._lease(keys=self._lease_keys(group), args=["renew", group, token, lease_ms])
        )

    def release_lease(self, group: str, token: str) -> bool:
        """Give the lease back if ``token`` holds it."""
        return bool(self._lease(keys=self._lease_keys(group), args=["release", group, token, 0]))

    def read_command(
        self, group: str, consumer: str, token: str, count: int, start: str = ">"
    ) -> tuple[Any, ...]:
        """The EVALSHA command of fetch.lua's read, for a pipeline (see :meth:`read`)."""
        keys = [self.keys.input, self.keys.lease(group)]
        args = ("read", group, consumer, token, count, start)
        return ("EVALSHA", self._fetch.sha, 2, *keys, *args)

    def read(
        self,
        group: str,
        consumer: str,
        token: str,
        count: int,
        start: str = ">",
        max_deliveries: int | None = None,
    ) -> ReadReply:
        """Read up to ``count`` new (``>``) or own pending (``0``) entries, if we hold the lease.

        With ``max_deliveries`` (own pending entries only), an entry this read would
        deliver more often than that comes alone, cut, as the reply's ``poison``.
        """
        keys = [self.keys.input, self.keys.lease(group)]
        args: list[ScriptArg] = ["read", group, consumer, token, count, start]
        if max_deliveries is not None and start == "0":
            args += [max_deliveries, *BOUNDS]
        return ReadReply.parse(self._fetch(keys=keys, args=args))

    def claim(self, group: str, consumer: str, token: str, count: int, cursor: str) -> ReadReply:
        """Claim up to ``count`` pending entries of any consumer from ``cursor`` on (XAUTOCLAIM)."""
        keys = [self.keys.input, self.keys.lease(group)]
        args: list[ScriptArg] = ["claim", group, consumer, token, count, cursor]
        return ReadReply.parse(self._fetch(keys=keys, args=args))

    def _lease_keys(self, group: str) -> list[str]:
        return [self.keys.lease(group), self.keys.meta]

    def route(self, entries: Sequence[tuple[str, Sequence[bytes]]]) -> int:
        """Run route.lua: move (routing id, flat fields) entries into this partition's input."""
        args: list[ScriptArg] = [len(entries)]
        for entry_id, fields in entries:
            args += [entry_id, len(fields) // 2, *fields]
        return int(self._route(keys=[self.keys.input, self.keys.meta], args=args))

    def trim(self, stream: str, request: TrimRequest) -> TrimReply:
        """Run trim.lua on ``stream``, one of this partition's ``in``, ``out`` and ``dead``."""
        if stream not in (self.keys.input, self.keys.output, self.keys.dead):
            raise ValueError(f"{stream!r} is not a stream of {self.keys.prefix}")
        return TrimReply.parse(self._trim(keys=[stream], args=request.args()))

    def dead_retry(self, ids: Sequence[str]) -> DeadRetryReply:
        """Run dead_retry.lua: re-queue these dead letters to this partition's input stream."""
        reply = self._dead_retry(keys=[self.keys.dead, self.keys.input], args=list(ids))
        return DeadRetryReply.parse(reply)

    def count_unknown(self, counts: Sequence[tuple[str, int]]) -> int:
        """Run unknown.lua: add these counts of names that are not nodes to the partition's
        bounded set of the most frequent ones (UNKNOWN_NAMES_KEPT); returns its size."""
        args: list[ScriptArg] = [UNKNOWN_NAMES_KEPT]
        for name, count in counts:
            args += [name, count]
        return int(self._unknown(keys=[self.keys.unknown], args=args))


#: How many of the most frequent unknown names each partition keeps (see unknown.lua).
UNKNOWN_NAMES_KEPT = 100


def range_script(client: redis.Redis) -> Script:
    """range.lua, registered on ``client``: XRANGE/XREVRANGE with fields as a flat list."""
    return client.register_script(script_source("range"))


def members_script(client: redis.Redis) -> Script:
    """members.lua, registered on ``client`` (its one key is the namespace's member set)."""
    return client.register_script(script_source("members"))
