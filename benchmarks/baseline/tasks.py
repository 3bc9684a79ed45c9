"""The seed's reactive computation as a Celery app: one recursive ``compute_nodes`` task.

This is the algorithm of seed 000 (Django + Celery + python-redis-lock), kept faithful so
that it can be measured, with Django replaced by static tables and Redis:

* ``FUNCTION_TYPES`` and ``DEPENDENCIES`` are the seed's ``FunctionType`` and ``Dependency``
  tables for A = C + D + E and B = A * F.
* The ordered arguments of a derived node live in Redis keys ``<node>_<argno>`` with
  ``EXPIRE`` (60 s), guarded by one python-redis-lock lock per node (``<node>_lock``).
* A node whose arguments are all present is computed, then its argument keys are deleted
  (the seed's "consume" behaviour); its value is written into its parents' argument keys.
* Every value, input or derived, is logged with a timestamp (the seed's ``DataLog`` table):
  here a Redis stream per node holding ``value``, ``at`` (``time.time_ns()``) and ``event``
  (the id of the input event whose task chain logged it, so lost values can be counted).
* The task then calls itself with ``.delay`` for the set of parents, as the seed does.

Configuration comes from the environment, so a worker started with
``celery -A benchmarks.baseline.tasks worker`` needs nothing else:
``STREAMCALC_BASELINE_BROKER`` (Redis URL, required), ``STREAMCALC_BASELINE_QUEUE`` and
``STREAMCALC_BASELINE_PREFIX``. Harness code calls :func:`configure` instead.

Two departures from the seed, both in the baseline's favour: one Redis connection pool per
worker process instead of a new ``StrictRedis()`` per task, and a log ``XADD`` instead of a
Django ORM insert. One addition for the harness: a counter of tasks in flight.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import redis
import redis_lock
from celery import Celery

BROKER_ENV = "STREAMCALC_BASELINE_BROKER"
QUEUE_ENV = "STREAMCALC_BASELINE_QUEUE"
PREFIX_ENV = "STREAMCALC_BASELINE_PREFIX"

DEFAULT_QUEUE = "baseline"
DEFAULT_PREFIX = "bl:"
ARG_TTL_S = 60  # the seed's "valid for about a minute"


# --- the seed's functions.py -------------------------------------------------------------


def add(args: Sequence[float]) -> float:
    """Addition."""
    return float(sum(args))


def sub(args: Sequence[float]) -> float:
    """Subtraction of the second argument from the first."""
    return args[0] - args[1]


def mul(args: Sequence[float]) -> float:
    """Multiplication."""
    prod = 1.0
    for arg in args:
        prod *= arg
    return prod


FUNCTIONS: dict[str, Callable[[Sequence[float]], float]] = {"ADD": add, "SUB": sub, "MUL": mul}

# --- the seed's FunctionType and Dependency tables -----------------------------------------

# node -> (function name, number of arguments)
FUNCTION_TYPES: dict[str, tuple[str, int]] = {"A": ("ADD", 3), "B": ("MUL", 2)}

# (parent, child, argno): every child is an argument of its parent
DEPENDENCIES: tuple[tuple[str, str, int], ...] = (
    ("A", "C", 0),
    ("A", "D", 1),
    ("A", "E", 2),
    ("B", "A", 0),
    ("B", "F", 1),
)


def parents_of(child: str) -> list[tuple[str, int]]:
    """``Dependency.objects.filter(child=child)`` as (parent, argno) pairs."""
    return [(parent, argno) for parent, c, argno in DEPENDENCIES if c == child]


# --- keys --------------------------------------------------------------------------------


class Settings:
    """Where the broker is and how this run's keys are named."""

    broker_url: str | None = os.environ.get(BROKER_ENV)
    queue: str = os.environ.get(QUEUE_ENV, DEFAULT_QUEUE)
    prefix: str = os.environ.get(PREFIX_ENV, DEFAULT_PREFIX)


def arg_key(node: str, argno: int) -> str:
    """The Redis key holding argument ``argno`` of ``node`` (the seed's ``node + '_' + i``)."""
    return f"{Settings.prefix}{node}_{argno}"


def lock_name(node: str) -> str:
    """The python-redis-lock name of ``node``'s lock (the library prepends ``lock:``)."""
    return f"{Settings.prefix}{node}_lock"


def log_key(node: str) -> str:
    """The stream standing in for the seed's ``DataLog`` rows of ``node``."""
    return f"{Settings.prefix}log:{node}"


def inflight_key() -> str:
    """Counter of tasks enqueued and not finished (harness bookkeeping, not in the seed)."""
    return f"{Settings.prefix}inflight"


def drained_key() -> str:
    """``time.time_ns()`` of the last time the in-flight counter fell to 0."""
    return f"{Settings.prefix}drained_at"


# --- Celery app --------------------------------------------------------------------------

app = Celery("streamcalc_baseline")


def configure(
    broker_url: str | None = None, *, queue: str | None = None, prefix: str | None = None
) -> None:
    """Point the app (and the key names) at a broker/queue/prefix; env values by default."""
    global _conn, _conn_pid
    if broker_url is not None:
        Settings.broker_url = broker_url
    if queue is not None:
        Settings.queue = queue
    if prefix is not None:
        Settings.prefix = prefix
    app.conf.update(
        broker_url=Settings.broker_url,
        broker_connection_retry_on_startup=True,
        task_default_queue=Settings.queue,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    _conn, _conn_pid = None, None


_conn: redis.Redis | None = None
_conn_pid: int | None = None


def conn() -> redis.Redis:
    """This process's Redis client (created lazily, so that it is made after the fork)."""
    global _conn, _conn_pid
    if _conn is None or _conn_pid != os.getpid():
        if not Settings.broker_url:
            raise RuntimeError(f"set {BROKER_ENV} to the Redis URL")
        _conn = redis.Redis.from_url(Settings.broker_url)
        _conn_pid = os.getpid()
    return _conn


def save_node_value(node: str, value: float, event: str) -> None:
    """The seed's ``save_node_value``: log the node's latest value with a timestamp."""
    conn().xadd(log_key(node), {"value": repr(value), "at": time.time_ns(), "event": event})


def _compute_derived(client: redis.Redis, node: str) -> float | None:
    """Compute ``node`` under its lock if all its arguments are present, then consume them."""
    func_info = FUNCTION_TYPES.get(node)
    if func_info is None:  # the seed would raise FunctionType.DoesNotExist
        return None
    functionname, noofargs = func_info
    lock = redis_lock.Lock(client, lock_name(node))
    if not lock.acquire():
        return None
    try:
        args: list[float] = []
        for i in range(noofargs):
            raw = client.get(arg_key(node, i))
            if raw is None or raw == b"None":
                return None  # an argument is missing: skip this node
            args.append(float(raw))
        value = FUNCTIONS[functionname](args)
        for i in range(noofargs):  # consume mode: forget the arguments
            client.delete(arg_key(node, i))
        return value
    finally:
        lock.release()


def _set_parent_args(client: redis.Redis, node: str, value: float, timeout: int) -> list[str]:
    """Write ``value`` into each parent's argument key (with EXPIRE), under the parent's lock."""
    parents: list[str] = []
    for parent, argno in parents_of(node):
        lock = redis_lock.Lock(client, lock_name(parent))
        if lock.acquire():
            try:
                client.set(arg_key(parent, argno), repr(value))
                client.expire(arg_key(parent, argno), timeout)
            finally:
                lock.release()
        parents.append(parent)
    return parents


def _process(nodes: dict[str, float | None], timeout: int, event: str) -> bool:
    """The seed's task body; True when it enqueued the recursive call."""
    if len(nodes) == 0:
        return False
    client = conn()
    parents: set[str] = set()
    for node, given in nodes.items():
        if given is not None:
            try:
                value = float(given)
            except (TypeError, ValueError):
                continue
        else:
            computed = _compute_derived(client, node)
            if computed is None:
                continue
            value = computed
        parents.update(_set_parent_args(client, node, value, timeout))
        save_node_value(node, value, event)
    # The seed recurses unconditionally; an empty dict ends the chain in the next task.
    client.incr(inflight_key())
    compute_nodes.delay({parent: None for parent in parents}, timeout, event)
    return True


@app.task(name="baseline.compute_nodes", ignore_result=True)  # type: ignore[untyped-decorator]
def compute_nodes(
    nodes: dict[str, float | None], timeout: int = ARG_TTL_S, event: str = ""
) -> None:
    """Store input values / compute derived nodes, then recurse on their parents."""
    try:
        _process(nodes, timeout, event)
    finally:
        # Harness bookkeeping: the task that brings the count to 0 stamps the drain time.
        client = conn()
        if client.decr(inflight_key()) <= 0:
            client.set(drained_key(), time.time_ns())


configure()
