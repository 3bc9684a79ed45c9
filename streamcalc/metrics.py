"""Prometheus metrics of a worker: every collector is defined here, with fixed label values.

With ``worker --processes N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR``
before the children start, prometheus-client keeps each child's samples in
files there, and the supervisor's one ``/metrics`` sums them
(:func:`multiprocess_registry`); gauges say how to combine processes (the group
gauges and node gauges are the same in every process, so the newest wins).
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from streamcalc.errors import UsageError
from streamcalc.values import Value

ENTRIES = Counter("streamcalc_entries", "Input entries processed, by outcome.", ["outcome"])
READINGS = Counter("streamcalc_readings", "Readings applied from input entries.")
DERIVED = Counter("streamcalc_derived", "Derived values fired and emitted.")
FUNCTION_ERRORS = Counter("streamcalc_function_errors", "Node functions that failed.")
LATE_READINGS = Counter("streamcalc_late_readings", "Values older than their slot's value.")
UNKNOWN_READINGS = Counter("streamcalc_unknown_readings", "Readings of names not in the graph.")
EXPIRED_ARGS = Counter("streamcalc_expired_args", "Argument slots emptied by their TTL.")
CLAIMED = Counter("streamcalc_claimed", "Entries claimed from idle consumers.")
CONFLICTS = Counter("streamcalc_commit_conflicts", "Commits refused: graph changed, lease lost.")
REBALANCES = Counter("streamcalc_rebalances", "Changes of the set of partitions owned.")
BATCH_SECONDS = Histogram(
    "streamcalc_batch_seconds",
    "Time to process and commit one batch.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EVENT_LATENCY = Histogram(
    "streamcalc_event_latency_seconds",
    "From an input entry's ID time to the emission of its derived values.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
STREAM_LAG = Gauge(
    "streamcalc_stream_lag",
    "Entries of a partition's input stream not yet delivered to the group "
    "(partition 'router': the routing stream of a partitioned namespace).",
    ["partition"],
    multiprocess_mode="mostrecent",
)
PENDING = Gauge(
    "streamcalc_pending",
    "Entries of a partition delivered to the group and not yet acknowledged.",
    ["partition"],
    multiprocess_mode="mostrecent",
)
PARTITIONS_OWNED = Gauge(
    "streamcalc_partitions_owned",
    "Partitions whose lease this worker holds.",
    multiprocess_mode="livesum",
)
NODE_STALENESS = Gauge(
    "streamcalc_node_staleness_seconds",
    "Age of each derived node's latest value (now minus its event time).",
    ["node"],
    multiprocess_mode="mostrecent",
)
NODE_VALUE = Gauge(
    "streamcalc_node_value",
    "Latest value of each scalar node (with --export-values).",
    ["node"],
    multiprocess_mode="mostrecent",
)


def _exposed_name(collector: Counter | Gauge | Histogram) -> str:
    """A collector's family name as Prometheus exposes it (a counter's gets ``_total``)."""
    [family] = collector.describe()
    return f"{family.name}_total" if family.type == "counter" else family.name


#: The full names of every metric family, as Prometheus exposes them: read off the
#: collectors above (every one is defined in this module), so none can be left out.
METRIC_NAMES: frozenset[str] = frozenset(
    _exposed_name(value)
    for value in list(globals().values())
    if isinstance(value, Counter | Gauge | Histogram)
)


HealthCheck = Callable[[], tuple[bool, str]]


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """Observe many values of an unlabelled histogram at once.

    One bucket search per value and one update per bucket, instead of a locked
    update per value: the event latency of every entry was a sixth of a worker's
    time. Falls back to ``observe`` if prometheus-client's internals ever change.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    total.inc(sum(amounts))


def multiprocess_registry(path: str | None = None) -> CollectorRegistry:
    """A registry that sums the samples every worker process left in ``path``
    (PROMETHEUS_MULTIPROC_DIR); a family no child has written yet (right after the
    start) is shown from this process's own, empty collectors, so every family is
    there from the first scrape."""
    registry = CollectorRegistry()
    registry.register(_EveryFamily(path))
    return registry


class _EveryFamily:
    """The children's samples, summed, and an empty family for each one they lack."""

    def __init__(self, path: str | None) -> None:
        self._children = CollectorRegistry()
        multiprocess.MultiProcessCollector(self._children, path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Any]:
        seen: set[str] = set()
        for family in self._children.collect():
            seen.add(family.name)
            yield family
        for family in REGISTRY.collect():
            if family.name.startswith("streamcalc_") and family.name not in seen:
                yield family


def observe_nodes(newest: Mapping[str, int], values: Mapping[str, Value], now_ms: int) -> None:
    """Set each derived node's staleness from the newest ts of its values over all keys,
    and the value gauge of each scalar node of ``values`` (the empty key's, when exported).

    A node set before and missing now (removed from the graph, say) loses its
    series, so a dashboard never shows a node that no longer exists (not yet
    under ``--processes``: prometheus_client cannot remove a series there).
    """
    staleness = {node: max(now_ms - ts, 0) / 1000 for node, ts in newest.items()}
    scalars = {node: v for node, v in values.items() if not isinstance(v, tuple)}
    for gauge, current in ((NODE_STALENESS, staleness), (NODE_VALUE, scalars)):
        shown = _NODE_SERIES.setdefault(gauge._name, {})
        for gone in shown.keys() - current.keys() if not _MULTIPROCESS else ():
            gauge.remove(gone)
            del shown[gone]
        for node, number in current.items():
            series = shown.get(node)
            if series is None:
                series = shown[node] = gauge.labels(node)
            series.set(number)


#: A child of ``--processes``: its samples live in files prometheus_client cannot remove from.
_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

#: The series of each node gauge of this process, by node: ``labels()`` once per node, not
#: on every refresh (on a graph of thousands of nodes the lookups held the worker's loop
#: for several milliseconds).
_NODE_SERIES: dict[str, dict[str, Gauge]] = {}


def serve(
    port: int,
    health: HealthCheck,
    registry: CollectorRegistry = REGISTRY,
    host: str = "0.0.0.0",
) -> HTTPServer:
    """Serve ``GET /metrics`` and ``GET /healthz`` on ``host:port`` from a daemon thread.

    A port in use or a host that is not an interface of this machine is a
    UsageError (exit 2). ``/healthz`` answers 200 with ``ok`` when ``health()``
    says so, else 503 with its reason.
    A client gets 5 s to send its request (a half-open connection does not hold a
    thread for long), and up to 128 connections wait to be accepted.
    """

    class Handler(BaseHTTPRequestHandler):
        timeout = 5.0

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                status, body, ctype = 200, generate_latest(registry), CONTENT_TYPE_LATEST
            elif path == "/healthz":
                ok, reason = health()
                status, body, ctype = (200 if ok else 503), reason.encode() + b"\n", "text/plain"
            else:
                status, body, ctype = 404, b"not found\n", "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the worker's own log

    class Server(ThreadingHTTPServer):
        request_queue_size = 128
        daemon_threads = True

    try:
        server = Server((host, port), Handler)
    except OSError as exc:  # in use, not ours to bind, or no such interface: the user's to fix
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot serve /metrics on {host}:{port}: {reason}") from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
