"""Operator functions over a namespace's streams: what the operator commands of the CLI call.

Pure library code: each function takes a redis client (bytes or text replies)
and the keys it works on, reads or changes Redis, and returns msgspec structs
whose field names are also the keys of the CLI's ``--json`` output. Writes
that must not race a worker (re-queuing dead letters, trimming) run as Lua
scripts (``scripts/dead_retry.lua``, ``scripts/trim.lua``) through their
wrappers in :mod:`streamcalc.scripts`. One module a concern:

- :mod:`~streamcalc.ops.snapshot`: ``status``: partitions, owners, lag, members, rates;
- :mod:`~streamcalc.ops.explain`: ``explain``: a node's slots, and why it fired or not;
- :mod:`~streamcalc.ops.rates`: input and output rates, counted from entry IDs;
- :mod:`~streamcalc.ops.streaminfo`: streams, groups and consumers, read in pipelines;
- :mod:`~streamcalc.ops.timeline`: ``history`` (past values) and ``tail`` (new ones);
- :mod:`~streamcalc.ops.dead_letters`: list, retry and purge dead letters;
- :mod:`~streamcalc.ops.retention`: ``trim``, also run by ``worker --retain``;
- :mod:`~streamcalc.ops.streams`: the namespace's layout, stream readers, entry IDs.

Every function takes a partition's :class:`~streamcalc.keys.Keys` or a whole
namespace's :class:`~streamcalc.ops.streams.Layout` (every partition, and with
``P > 1`` the routing stream), so each command works the same on 1 or P
partitions.
"""

from streamcalc.keys import check_key
from streamcalc.ops.dead_letters import DeadLetter, dead_list, dead_purge, dead_recent, dead_retry
from streamcalc.ops.explain import Explanation, SlotView, explain
from streamcalc.ops.rates import Rates
from streamcalc.ops.retention import PartitionTrim, StreamTrim, TrimResult, trim
from streamcalc.ops.snapshot import Member, Owner, PartitionStatus, Status, Totals, status
from streamcalc.ops.streaminfo import ConsumerStatus, GroupStatus, StreamStatus
from streamcalc.ops.streams import Layout, check_id, layout
from streamcalc.ops.timeline import Emitted, PastValue, history, tail

__all__ = [
    "ConsumerStatus",
    "DeadLetter",
    "Emitted",
    "Explanation",
    "GroupStatus",
    "Layout",
    "Member",
    "Owner",
    "PartitionStatus",
    "PartitionTrim",
    "PastValue",
    "Rates",
    "SlotView",
    "Status",
    "StreamStatus",
    "StreamTrim",
    "Totals",
    "TrimResult",
    "check_id",
    "check_key",
    "dead_list",
    "dead_purge",
    "dead_recent",
    "dead_retry",
    "explain",
    "history",
    "layout",
    "status",
    "tail",
    "trim",
]
