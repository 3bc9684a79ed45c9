"""The page server's own memory of the last minutes: one sample of the namespace a second.

A thread reads the namespace's status (partitions, owners, lag, pending,
members), the newest dead letters, the key index's ends and each stream's
``entries-added`` counter once per interval, whatever the number of browsers
watching; the rates are the counters' differences between two samples (so the
status's own count of entries in the last minute, which reads up to 100,000
entries, runs only for the first sample). :data:`HISTORY_S` seconds of
samples are kept in a ring buffer, so a page opened late still shows the last
minutes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec
import redis
import structlog

from streamcalc.ops import DeadLetter, Rates, Status, dead_recent, status
from streamcalc.ops.streams import Layout, layout
from streamcalc.settings import mask_url
from streamcalc.ui.reader import KeyList, Reader

_log = structlog.get_logger("streamcalc.ui")

#: Seconds of samples kept for the charts.
HISTORY_S = 600
#: Dead letters shown (the newest).
DEAD_SHOWN = 20


class Sample(msgspec.Struct, frozen=True):
    """One point of the charts: rates since the previous sample, lag and pending now."""

    t_ms: int  # the Redis server's clock
    input_per_s: float | None  # None for the first sample (no previous one)
    output_per_s: float | None
    lag: int
    pending: int
    dead: int  # dead letters held


class Overview(msgspec.Struct, frozen=True):
    """The newest sample's full reading: what every page shows besides node values."""

    t_ms: int
    status: Status
    dead_letters: list[DeadLetter]
    keys: KeyList


def _counters(client: redis.Redis, shape: Layout) -> tuple[int, int]:
    """Entries ever added to every partition's ``in`` and ``out`` (their length before Redis 7)."""
    pipe = client.pipeline(transaction=False)
    for keys in shape.partitions:
        pipe.xinfo_stream(keys.input)
        pipe.xinfo_stream(keys.output)
    totals = [0, 0]
    for i, info in enumerate(pipe.execute(raise_on_error=False)):
        if isinstance(info, dict):  # else: no such stream yet
            totals[i % 2] += int(info.get("entries-added") or info.get("length") or 0)
    return totals[0], totals[1]


class Sampler:
    """Samples a namespace every ``interval_s`` seconds in a thread until :meth:`stop`."""

    def __init__(self, reader: Reader, interval_s: float = 1.0) -> None:
        self.reader = reader
        self.interval_s = interval_s
        self.samples: deque[Sample] = deque(maxlen=max(int(HISTORY_S / interval_s), 2))
        self._overview: Overview | None = None
        self._error: str | None = None
        self._counts: tuple[int, int, int] | None = None  # t_ms, added in, added out
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ui-sampler", daemon=True)

    def start(self) -> Sampler:
        """Take the first sample now (so the first page has data), then sample in a thread."""
        self.sample_once()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def sample_once(self) -> None:
        """Read the namespace once; a Redis failure is kept as the error the page shows."""
        try:
            overview, sample = self._read()
        except redis.RedisError as exc:
            with self._lock:
                self._error = mask_url(f"Redis: {exc}")
            return
        except Exception as exc:  # a bug must not end the sampling: the page shows it
            _log.exception("sampling the namespace failed")
            with self._lock:
                self._error = mask_url(f"internal error: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            self._overview, self._error = overview, None
            self.samples.append(sample)

    def _read(self) -> tuple[Overview, Sample]:
        client = self.reader.client
        shape = layout(client, self.reader.ns)
        added_in, added_out = _counters(client, shape)
        now_ms = int(time.time() * 1000)
        measured = None
        if self._counts is not None:
            then, before_in, before_out = self._counts
            span_ms = max(now_ms - then, 1)
            entries, values = max(added_in - before_in, 0), max(added_out - before_out, 0)
            measured = Rates(
                window_s=span_ms / 1000,
                input_per_s=entries * 1000 / span_ms,
                output_per_s=values * 1000 / span_ms,
                input_entries=entries,
                output_values=values,
                estimated=False,
            )
        self._counts = (now_ms, added_in, added_out)
        # Without rates of our own yet (the first sample), status counts them once.
        snapshot = status(client, shape, self.reader.group, measured=measured)
        letters = dead_recent(client, shape, DEAD_SHOWN)
        keys = self.reader.key_list()
        totals = snapshot.totals
        sample = Sample(
            t_ms=now_ms,
            input_per_s=None if measured is None else measured.input_per_s,
            output_per_s=None if measured is None else measured.output_per_s,
            lag=totals.lag if totals else 0,
            pending=totals.pending if totals else 0,
            dead=snapshot.dead_letters,
        )
        return Overview(now_ms, snapshot, letters, keys), sample

    def overview(self) -> tuple[Overview | None, str | None]:
        """The newest overview and the error of the last sample (None when it worked)."""
        with self._lock:
            return self._overview, self._error

    def series(self, since_ms: int = 0) -> list[Sample]:
        """The samples taken after ``since_ms``, oldest first."""
        with self._lock:
            return [s for s in self.samples if s.t_ms > since_ms]


def as_columns(samples: Sequence[Sample]) -> dict[str, list[Any]]:
    """Samples as columns (``t_ms``, ``input_per_s``, ...), the shape the charts draw."""
    fields = Sample.__struct_fields__
    return {name: [getattr(s, name) for s in samples] for name in fields}
