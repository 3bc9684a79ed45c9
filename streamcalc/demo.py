"""``streamcalc demo``: A = C + D + E, B = A * F end to end, on a private Redis unless one is given.

The graph (A = C + D + E, B = A * F, values valid 60 s, consume mode) and the
sequence of inputs are those of the classic Celery + locks design
(docs/coming-from-celery.md). The demo prints its "DataLog":
every node value with its time, grouped by the input entry whose wave made it.

``demo --ui`` runs a small simulated plant instead (:func:`run_live_demo`): a
few boilers as keys of a namespace of two partitions, a reading every few
hundred milliseconds, now and then a bad one (a dead letter), one boiler that
falls silent for a while (its values go stale), and the live page on top.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import redis

from streamcalc.embedded import EmbeddedRedis
from streamcalc.errors import StreamcalcError
from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys, Namespace
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


PLANT_GRAPH = """\
[defaults]
ttl = "5s"
mode = "latest"

[nodes.delta_t]
expr = "supply_temp - return_temp"

[nodes.headroom]
expr = "95 - supply_temp"

[nodes.heat_kw]
expr = "flow * delta_t * 4.186"

[nodes.efficiency]
expr = "heat_kw / power_kw"
"""

PLANT_DEVICES = ("boiler-1", "boiler-2", "boiler-3", "boiler-4")
PLANT_PARTITIONS = 2
#: Seconds between two readings of the plant (each of one device, in turn).
PLANT_PERIOD_S = 0.3
#: Every this many readings, one is bad (a dead letter); the first comes early.
PLANT_BAD_EVERY = 60
#: The last device falls silent this many seconds into every PLANT_CYCLE_S, for PLANT_SILENT_S.
PLANT_QUIET_FROM_S, PLANT_SILENT_S, PLANT_CYCLE_S = 5.0, 15.0, 45.0


def _reset(client: redis.Redis, ns: str) -> None:
    """Delete the demo namespace: its root and every partition it may have had."""
    root = Namespace(ns).root
    count = int(client.hget(root.meta, "partitions") or 1)
    for keys in {root, *Namespace(ns).partitions(max(count, PLANT_PARTITIONS))}:
        client.delete(*keys.all(), keys.lease("streamcalc"))
    client.delete(Namespace(ns).members("streamcalc"))


def _plant_reading(device: int, t: float) -> dict[str, object]:
    """One device's readings at time ``t``: a boiler warming and cooling with some noise."""
    base = 70 + 6 * device + 8 * math.sin(t / 20 + device)
    supply = round(base + random.uniform(-0.5, 0.5), 2)
    back = round(supply - 12 - 2 * math.sin(t / 7 + device) + random.uniform(-0.3, 0.3), 2)
    flow = round(0.8 + 0.1 * device + 0.05 * math.sin(t / 5), 3)
    power = round(flow * (supply - back) * 4.186 / (0.86 + 0.02 * math.sin(t / 11)), 2)
    return {"supply_temp": supply, "return_temp": back, "flow": flow, "power_kw": power}


def run_plant(client: redis.Redis, ns: str, stop: threading.Event) -> None:
    """Send the plant's readings until ``stop`` is set (see the module's docstring)."""
    producer = Producer(client, ns)
    started = time.monotonic()
    sent = 0
    while not stop.wait(PLANT_PERIOD_S):
        t = time.monotonic() - started
        device = sent % len(PLANT_DEVICES)
        sent += 1
        key = PLANT_DEVICES[device]
        silent = (
            device == len(PLANT_DEVICES) - 1
            and 0 <= t % PLANT_CYCLE_S - PLANT_QUIET_FROM_S < PLANT_SILENT_S
        )
        if silent:
            continue
        if sent % PLANT_BAD_EVERY == 10:  # a sensor's glitch: text where a number belongs
            stream = producer.stream_of({"@key": key})
            client.xadd(stream, {"@key": key, "flow": '"n/a"', "supply_temp": "71.5"})
            continue
        producer.send(_plant_reading(device, t), key=key)


def run_live_demo(redis_url: str | None, ns: str, sock: socket.socket, echo: Echo = print) -> None:
    """Run the simulated plant with a worker and serve the live page on ``sock`` until Ctrl-C.

    Stops everything it started (page, plant, worker, private Redis) before it returns.
    """
    from streamcalc.ui.server import serve

    server = EmbeddedRedis().start() if redis_url is None else None
    url = server.url if server is not None else str(redis_url)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    worker: Worker | None = None
    try:
        client = connect(url)
        ping(client, url, wait_s=5)
        _reset(client, ns)
        store_graph(client, ns, parse_graph_text(PLANT_GRAPH, "<plant graph>"), partitions=2)
        worker = Worker(Settings(redis_url=url, ns=ns, consumer="demo-worker", block_ms=100))
        threads = [
            threading.Thread(target=worker.run, name="demo-worker", daemon=True),
            threading.Thread(target=run_plant, args=(client, ns, stop), name="plant", daemon=True),
        ]
        for thread in threads:
            thread.start()
        where = f"a private redis-server on port {server.port}" if server else mask_url(url)
        echo(f"streamcalc demo: a simulated plant of {len(PLANT_DEVICES)} boilers on {where}")
        echo(f"namespace {ns!r}, {PLANT_PARTITIONS} partitions; a bad reading now and then")

        def ready(page: str) -> None:
            echo(f"live page: {page}  (Ctrl-C stops everything)")

        serve(client, ns, sock, allow_actions=True, redis_url=url, on_ready=ready)
    finally:
        stop.set()
        if worker is not None:
            worker.stop()
        for thread in threads:
            thread.join(timeout=10)
        if server is not None:
            server.stop()
        echo("demo stopped")
