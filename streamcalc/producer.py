"""The Python producer API: validated entries into their partition's input, with backpressure.

A producer needs nothing but Redis (``XADD sc:{default}:in * C 4``); this module
adds validation before the write (so a bad value fails at the producer, not in
the dead-letter stream) and backpressure, so a producer faster than its
consumers can wait or be refused instead of growing Redis without bound.
:func:`entry_fields` needs no Redis client (nor redis-py imported): the CLI's
``send`` validates with it before it connects.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal, cast

from streamcalc.errors import BackpressureError, UsageError
from streamcalc.graph import valid_node_name
from streamcalc.keys import Keys, Namespace, check_key
from streamcalc.settings import DEFAULT_GROUP
from streamcalc.values import encode_value, normalize

if TYPE_CHECKING:
    import redis

Fields = dict[str, str | bytes]


def entry_fields(
    readings: Mapping[str, object], ts: int | None = None, key: str | None = None
) -> Fields:
    """Validate readings (and ``@ts``/``@src``/``@key`` keys) and return the fields of one entry."""
    fields: Fields = {}
    for name, raw in readings.items():
        if name == "@ts":
            ts = _check_ts(raw)
            continue
        if name == "@src":
            fields["@src"] = str(raw)
            continue
        if name == "@key":
            key = str(raw) if key is None else key
            continue
        if name.startswith("@"):
            raise UsageError(f"unknown reserved field {name!r}")
        if not valid_node_name(name):
            raise UsageError(f"bad node name {name!r}")
        try:
            fields[name] = encode_value(normalize(raw, exact=True))
        except ValueError as exc:
            raise UsageError(f"bad value for {name}: {exc}") from None
    if not any(not name.startswith("@") for name in fields):
        raise UsageError("an entry needs at least one reading")
    if ts is not None:
        fields["@ts"] = str(_check_ts(ts))
    if key:
        fields["@key"] = check_key(key)
    return fields


def _check_ts(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise UsageError(f"@ts must be a non-negative integer of milliseconds, not {raw!r}")
    return raw


class Producer:
    """Appends entries to the input stream of their key's partition (docs/streams.md).

    ``key``: the ``@key`` of every entry this producer sends (an entry's own
    ``@key`` wins). The partition count is read once, when the producer is made.

    ``max_lag``: when set, before each write the group's lag (entries not yet
    delivered plus entries pending) is compared with it; ``on_full="wait"``
    polls until it drops (at most ``wait_s`` seconds, then BackpressureError),
    ``on_full="raise"`` refuses at once.
    """

    def __init__(
        self,
        client: redis.Redis,
        ns: str = "default",
        *,
        group: str = DEFAULT_GROUP,
        max_lag: int | None = None,
        on_full: Literal["wait", "raise"] = "wait",
        wait_s: float = 60.0,
        key: str | None = None,
    ) -> None:
        from streamcalc.store import partition_count

        self.client = client
        self.namespace = Namespace(ns)
        self.partitions = partition_count(client, ns)
        self.key = key
        self.keys = self.namespace.of_key(key or "", self.partitions)
        self.group = group
        self.max_lag = max_lag
        self.on_full = on_full
        self.wait_s = wait_s

    def send(
        self, readings: Mapping[str, object], ts: int | None = None, key: str | None = None
    ) -> str:
        """Append one entry (with ``key``, or the producer's); returns its stream ID."""
        fields = entry_fields(readings, ts, key if key is not None else self.key)
        self._respect_backpressure()
        entry_id = cast(bytes, self.client.xadd(self.stream_of(fields), fields))  # type: ignore[arg-type]
        return entry_id.decode()

    def stream_of(self, fields: Fields) -> str:
        """The input stream an entry's fields belong in: its key's partition."""
        key = fields.get("@key", "")
        text = key.decode() if isinstance(key, bytes) else key
        return self.namespace.of_key(text, self.partitions).input

    def send_many(self, entries: Iterable[Mapping[str, object]], chunk: int = 1000) -> list[str]:
        """Validate and append many entries, pipelined ``chunk`` at a time; returns their IDs."""
        ids: list[str] = []
        batch: list[Fields] = []
        for readings in entries:
            batch.append(entry_fields(readings, key=self.key))
            if len(batch) >= chunk:
                ids += self._append(batch)
                batch = []
        if batch:
            ids += self._append(batch)
        return ids

    def append_fields(self, batch: list[Fields]) -> list[str]:
        """Append already-validated entries (see :func:`entry_fields`) in one pipeline."""
        return self._append(batch)

    def _append(self, batch: list[Fields]) -> list[str]:
        self._respect_backpressure(len(batch))
        pipe = self.client.pipeline(transaction=False)
        for fields in batch:
            pipe.xadd(self.stream_of(fields), fields)  # type: ignore[arg-type]
        return [entry_id.decode() for entry_id in pipe.execute()]

    def lag(self) -> int:
        """Entries the group has not finished (undelivered + pending), over all partitions."""
        streams = self.namespace.partitions(self.partitions)
        if self.partitions > 1:
            streams.append(self.namespace.root)
        return sum(self._lag(keys) for keys in streams)

    def _lag(self, keys: Keys) -> int:
        import redis

        from streamcalc.store import LAG_COUNT_CAP, count_after

        try:
            groups = self.client.xinfo_groups(keys.input)
        except redis.ResponseError:
            return 0  # no stream yet
        for group in groups:
            if group["name"].decode() != self.group:
                continue
            lag = group.get("lag")
            if lag is None:  # Redis < 7 or an unknown lag: count what lies past last-delivered
                cap = self.max_lag + 1 if self.max_lag is not None else LAG_COUNT_CAP
                last = group["last-delivered-id"].decode()
                lag, _ = count_after(self.client, keys.input, last, cap)
            return int(lag) + int(group["pending"])
        return int(self.client.xlen(keys.input))

    def _respect_backpressure(self, incoming: int = 1) -> None:
        if self.max_lag is None:
            return
        incoming = min(incoming, self.max_lag)  # a batch larger than the limit fits once idle
        deadline = time.monotonic() + self.wait_s
        delay = 0.01
        while (lag := self.lag()) + incoming > self.max_lag:
            if self.on_full == "raise" or time.monotonic() >= deadline:
                raise BackpressureError(
                    f"group {self.group!r} lags {lag} entries behind namespace "
                    f"{self.namespace.ns!r} "
                    f"(limit {self.max_lag})"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
