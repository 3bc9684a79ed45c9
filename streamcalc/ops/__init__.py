"""Operator functions over a namespace's streams: what the operator commands of the CLI call.

Pure library code: each function takes a redis client (bytes or text replies)
and the namespace's :class:`~streamcalc.keys.Keys`, reads or changes Redis,
and returns msgspec structs whose field names are also the keys of the CLI's
``--json`` output. Writes that must not race a worker (re-queuing dead
letters, trimming) run as Lua scripts (``scripts/dead_retry.lua``,
``scripts/trim.lua``). One module a concern:

- :mod:`~streamcalc.ops.snapshot`: ``status``, streams, groups, consumers, lag, rates;
- :mod:`~streamcalc.ops.timeline`: ``history`` (past values) and ``tail`` (new ones);
- :mod:`~streamcalc.ops.dead_letters`: list, retry and purge dead letters;
- :mod:`~streamcalc.ops.retention`: ``trim``, also run by ``worker --retain``;
- :mod:`~streamcalc.ops.streams`: the stream names and entry IDs they share.
"""

from streamcalc.ops.dead_letters import DeadLetter, dead_list, dead_purge, dead_retry
from streamcalc.ops.retention import StreamTrim, TrimResult, trim
from streamcalc.ops.snapshot import ConsumerStatus, GroupStatus, Rates, Status, StreamStatus, status
from streamcalc.ops.streams import check_id
from streamcalc.ops.timeline import PastValue, history, tail

__all__ = [
    "ConsumerStatus",
    "DeadLetter",
    "GroupStatus",
    "PastValue",
    "Rates",
    "Status",
    "StreamStatus",
    "StreamTrim",
    "TrimResult",
    "check_id",
    "dead_list",
    "dead_purge",
    "dead_retry",
    "history",
    "status",
    "tail",
    "trim",
]
