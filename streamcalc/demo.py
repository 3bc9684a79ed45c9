"""``streamcalc demo``: A = C + D + E, B = A * F end to end, on a private Redis unless one is given.

The graph (A = C + D + E, B = A * F, values valid 60 s, consume mode) and the
sequence of inputs are those of the classic Celery + locks design
(docs/coming-from-celery.md). The demo prints its "DataLog":
every node value with its time, grouped by the input entry whose wave made it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import redis

from streamcalc.embedded import EmbeddedRedis
from streamcalc.errors import StreamcalcError
from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys
from streamcalc.messages import OutputValue, decode_entry, decode_output
from streamcalc.producer import Producer
from streamcalc.settings import Settings, mask_url
from streamcalc.store import connect, latest_values, ping, read_range, store_graph
from streamcalc.values import encode_value
from streamcalc.worker import Worker

SEED_GRAPH = """\
[defaults]
ttl = "60s"
mode = "consume"

[nodes.A]
fn = "add"
args = ["C", "D", "E"]

[nodes.B]
fn = "mul"
args = ["A", "F"]
"""

SEED_SEQUENCE: tuple[dict[str, object], ...] = (
    {"C": 4, "D": 5},
    {"E": 6},
    {"C": 1, "D": 1, "E": 1, "F": 3},
    {"A": 4, "F": 5},
)

Echo = Callable[[str], None]


def run_demo(redis_url: str | None, ns: str, echo: Echo = print) -> None:
    """Run the classic scenario and print its data log; leaves nothing running."""
    server = EmbeddedRedis().start() if redis_url is None else None
    url = server.url if server is not None else str(redis_url)
    try:
        where = (
            f"a private redis-server on port {server.port}" if server is not None else mask_url(url)
        )
        echo(f"streamcalc demo on {where}, namespace {ns!r}")
        echo("graph: A = add(C, D, E), B = mul(A, F); values valid 60 s; consume mode")
        _run(url, ns, echo)
    finally:
        if server is not None:
            server.stop()


def _run(url: str, ns: str, echo: Echo) -> None:
    client = connect(url)
    ping(client, url, wait_s=5)
    keys = Keys(ns)
    client.delete(*keys.all())  # the demo's own namespace only
    store_graph(client, keys, parse_graph_text(SEED_GRAPH, "<demo graph>"))
    worker = Worker(Settings(redis_url=url, ns=ns, consumer="demo", block_ms=20, wait_s=5))
    failure: list[BaseException] = []

    def work() -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=work, name="demo-worker", daemon=True)
    thread.start()
    try:
        producer = Producer(client, ns)
        start_ms = int(time.time() * 1000)
        for step, readings in enumerate(SEED_SEQUENCE):
            entry_id = producer.send(readings, ts=start_ms + 1000 * step)
            _wait_until_done(client, keys, entry_id, failure)
    finally:
        worker.stop()
        thread.join(timeout=10)
    _print_log(client, keys, echo)


def _wait_until_done(
    client: redis.Redis,
    keys: Keys,
    entry_id: str,
    failure: list[BaseException],
    timeout: float = 15,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if failure:
            raise StreamcalcError(f"the demo worker failed: {failure[0]}")
        for group in client.xinfo_groups(keys.input):
            if group["last-delivered-id"].decode() == entry_id and group["pending"] == 0:
                return
        time.sleep(0.01)
    raise StreamcalcError(f"the demo worker did not process entry {entry_id} in {timeout:.0f}s")


def _print_log(client: redis.Redis, keys: Keys, echo: Echo) -> None:
    derived: dict[str, list[OutputValue]] = {}
    for _, fields in read_range(client, keys.output):
        out = decode_output(fields)
        derived.setdefault(out.src, []).append(out)
    echo("")
    echo("data log (time is each value's event time):")
    for step, (raw_id, raw_fields) in enumerate(read_range(client, keys.input), 1):
        entry = decode_entry(raw_id, [x for pair in raw_fields.items() for x in pair])
        shown = msgspec.json.encode(dict(entry.readings)).decode()
        echo(f"step {step}: input {shown}  (entry {entry.id})")
        for node, value in entry.readings:
            echo(f"  {_clock(entry.ts)}  {node} = {encode_value(value).decode()}")
        for out in derived.get(entry.id, []):
            echo(
                f"  {_clock(out.ts)}  {out.node} = {encode_value(out.value).decode()}   <- derived"
            )
    echo("")
    echo("latest values:")
    for node, (ts, value) in sorted(latest_values(client, keys).items()):
        echo(f"  {node} = {encode_value(value).decode()}  at {_clock(ts)}")


def _clock(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
