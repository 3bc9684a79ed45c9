"""Redis connections and the stored graph: the reads and writes outside the hot path."""

from __future__ import annotations

import time
from typing import cast

import redis

from streamcalc.errors import RedisUnavailable
from streamcalc.graph import Graph
from streamcalc.keys import Keys
from streamcalc.scripts import Scripts
from streamcalc.settings import DEFAULT_FUNCTION_TIMEOUT_S, mask_url
from streamcalc.values import Value, decode_value


def connect(url: str, *, timeout: float = 10.0) -> redis.Redis:
    """A client for ``url`` (bytes replies, RESP2); raises RedisUnavailable for a bad URL."""
    try:
        return redis.Redis.from_url(
            url,
            protocol=2,
            socket_connect_timeout=min(timeout, 5.0),
            socket_timeout=timeout,
            health_check_interval=30,
        )
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {mask_url(url)}: {exc}") from None


def ping(client: redis.Redis, url: str, *, wait_s: float = 0.0) -> None:
    """Wait up to ``wait_s`` seconds (with backoff) until Redis answers, else raise."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            client.ping()
            return
        except redis.AuthenticationError as exc:
            raise RedisUnavailable(f"Redis at {mask_url(url)} refused us: {exc}") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise RedisUnavailable(f"cannot reach Redis at {mask_url(url)}: {exc}") from None
        except redis.ResponseError as exc:  # e.g. NOAUTH from a server that wants a password
            raise RedisUnavailable(f"Redis at {mask_url(url)} refused us: {exc}") from None
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def store_graph(client: redis.Redis, keys: Keys, graph: Graph) -> int:
    """Replace the stored graph atomically; returns the new graph version."""
    scripts = Scripts(client, keys)
    return scripts.load_graph(graph.version_hash, int(time.time() * 1000), graph.definitions())


def fetch_graph(
    client: redis.Redis, keys: Keys, function_timeout_s: float = DEFAULT_FUNCTION_TIMEOUT_S
) -> tuple[str, Graph | None]:
    """The stored graph version and graph (None when no graph was ever loaded), read atomically.

    ``function_timeout_s`` bounds the graph's plugin functions (a worker's setting).
    """
    pipe = client.pipeline(transaction=True)
    pipe.hget(keys.meta, "graph_version")
    pipe.hgetall(keys.graph)
    version, definitions = pipe.execute()
    if not definitions:
        return (version or b"0").decode(), None
    return version.decode(), Graph.from_definitions(
        definitions, function_timeout_s=function_timeout_s
    )


StreamEntry = tuple[bytes, dict[bytes, bytes]]


def read_range(
    client: redis.Redis,
    key: str,
    start: str = "-",
    end: str = "+",
    count: int | None = None,
    *,
    reverse: bool = False,
) -> list[StreamEntry]:
    """XRANGE (or XREVRANGE, newest first) between ``start`` and ``end``, as bytes."""
    if reverse:
        return cast(list[StreamEntry], client.xrevrange(key, max=end, min=start, count=count))
    return cast(list[StreamEntry], client.xrange(key, min=start, max=end, count=count))


def latest_values(
    client: redis.Redis, keys: Keys, nodes: list[str] | None = None
) -> dict[str, tuple[int, Value]]:
    """Latest (ts, value) of the given nodes (all when None); nodes without a value are left out."""
    items: list[tuple[str, bytes | None]]
    if nodes is None:
        raw = cast(dict[bytes, bytes], client.hgetall(keys.latest))
        items = [(node.decode(), text) for node, text in raw.items()]
    else:
        found = cast(list[bytes | None], client.hmget(keys.latest, nodes))
        items = list(zip(nodes, found, strict=True))
    result: dict[str, tuple[int, Value]] = {}
    for node, text in items:
        if text is not None:
            ts, _, value = text.partition(b" ")
            result[node] = (int(ts), decode_value(value))
    return result
