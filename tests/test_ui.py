"""The live page's server: JSON under /api/, bounded reads, read-only unless asked, demo --ui.

Against a real redis-server, real workers and a real ``streamcalc ui`` process;
the page itself in a browser is tested in test_ui_browser.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from helpers import WorkerProcesses, drain, load
from ui_support import PageProcess, alive, call, children, poll

from streamcalc.embedded import EmbeddedRedis, free_port
from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys, Namespace
from streamcalc.producer import Producer
from streamcalc.store import server_time_ms, store_graph
from streamcalc.ui import reader as reader_module
from streamcalc.ui.reader import Reader, freshness

SEED = '[defaults]\nttl = "60s"\n[nodes.A]\nfn = "add"\nargs = ["C", "D", "E"]\n'
SEED += '[nodes.B]\nexpr = "A * F"\n'


def test_freshness_against_ttl() -> None:
    assert freshness(None, 1000) == "none"
    assert freshness(500, 1000) == "fresh"
    assert freshness(800, 1000) == "ageing"
    assert freshness(1001, 1000) == "stale"
    assert freshness(10**9, 0) == "timeless"


def test_api_answers_json(redis_url: str, r: redis.Redis, ns: str, env: dict[str, str]) -> None:
    load(r, ns, SEED)
    producer = Producer(r, ns)
    producer.send({"C": 4, "D": 5, "E": 6})
    producer.send({"F": 2})
    drain(redis_url, ns)
    with PageProcess(env, "ui") as page:
        for path in ("meta", "graph", "values", "node/A", "status", "series", "dead", "keys"):
            code, kind, body = call(f"{page.url}/api/{path}")
            assert code == 200 and kind == "application/json", (path, body)
        graph = call(f"{page.url}/api/graph")[2]
        assert {n["name"]: n["kind"] for n in graph["nodes"]} == {
            "A": "derived",
            "B": "derived",
            "C": "input",
            "D": "input",
            "E": "input",
            "F": "input",
        }
        assert {n["name"]: n["column"] for n in graph["nodes"]}["B"] == 2
        values = call(f"{page.url}/api/values")[2]["nodes"]
        assert values["A"]["value"] == 15 and values["B"]["value"] == 30
        assert values["A"]["freshness"] == "fresh"
        assert values["A"]["waits_for"] == ["C", "D", "E"]  # consumed by its firing
        node = call(f"{page.url}/api/node/A")[2]
        assert node["explain"]["state"] == "waiting" and node["explain"]["feeds"] == ["B"]
        assert [s["status"] for s in node["explain"]["slots"]] == ["used"] * 3
        assert "waits for a new value of C" in node["explain"]["explanation"][0]
        assert [v["value"] for v in node["recent"]] == [15]
        meta = call(f"{page.url}/api/meta")[2]
        assert meta["ns"] == ns and meta["allow_actions"] is False
        live = call(f"{page.url}/api/live")[2]
        assert live["values"]["nodes"]["B"]["value"] == 30
        assert live["overview"]["status"]["ns"] == ns and live["error"] is None
        assert len(live["series"]["t_ms"]) >= 1
        index = subprocess.run(["curl", "-s", f"{page.url}/"], capture_output=True, text=True)
        assert "streamcalc live" in index.stdout
        rebound = subprocess.run(  # another site's name resolved to our address
            ["curl", "-s", "-w", " %{http_code}", "-H", "Host: evil.example", f"{page.url}/"],
            capture_output=True,
            text=True,
        )
        assert rebound.stdout.endswith(" 400") and "streamcalc live" not in rebound.stdout
        meta = f"{page.url}/api/meta"
        named = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Host: localhost:1",
                meta,
            ],
            capture_output=True,
            text=True,
        )
        assert named.stdout == "200"
        for asset in ("app.js", "style.css", "vendor/cytoscape.min.js", "vendor/uPlot.iife.min.js"):
            got = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    f"{page.url}/static/{asset}",
                ],
                capture_output=True,
                text=True,
            )
            assert got.stdout == "200", asset


def test_bad_requests_are_one_line_json_errors(
    r: redis.Redis, ns: str, env: dict[str, str]
) -> None:
    load(r, ns, SEED)
    with PageProcess(env, "ui") as page:
        for path in ("node/NOPE", "values?key=bad%20key", "keys?prefix=a*", "series?since=x"):
            code, kind, body = call(f"{page.url}/api/{path}")
            assert code == 400 and kind == "application/json", path
            assert body["error"] and "\n" not in body["error"]


def _dead_letter(r: redis.Redis, redis_url: str, ns: str) -> None:
    r.xadd(Keys(ns).input, {"C": "true"})
    drain(redis_url, ns)
    assert r.xlen(Keys(ns).dead) == 1


def test_read_only_unless_allowed(
    redis_url: str, r: redis.Redis, ns: str, env: dict[str, str]
) -> None:
    load(r, ns, SEED)
    _dead_letter(r, redis_url, ns)
    with PageProcess(env, "ui") as page:
        letters = poll(lambda: call(f"{page.url}/api/dead")[2])
        assert "bad value for 'C'" in letters[0]["error"]
        for action in ("retry", "purge"):
            code, _, body = call(f"{page.url}/api/dead/{action}", "POST", {"all": True})
            assert code == 403 and "--allow-actions" in body["error"]
        assert r.xlen(Keys(ns).dead) == 1 and r.xlen(Keys(ns).input) == 1


def test_actions_retry_and_purge_dead_letters(
    redis_url: str, r: redis.Redis, ns: str, env: dict[str, str]
) -> None:
    load(r, ns, SEED)
    _dead_letter(r, redis_url, ns)
    with PageProcess(env, "ui", "--allow-actions") as page:
        letter = poll(lambda: call(f"{page.url}/api/dead")[2])[0]
        url = f"{page.url}/api/dead/retry"
        assert call(url, "POST", {"ids": [letter["id"]]}, "text/plain")[0] == 400  # a form post
        assert call(url, "POST", {"ids": ["x"]})[0] == 400
        assert call(url, "POST", {"ids": [letter["id"]], "all": True})[0] == 400
        assert call(url, "POST", {"ids": [letter["id"]]})[2] == {"done": 1}
        assert r.xlen(Keys(ns).dead) == 0
        entries = r.xrange(Keys(ns).input)
        assert entries[-1][1][b"C"] == b"true"  # its original fields, re-queued
        drain(redis_url, ns)
        assert r.xlen(Keys(ns).dead) == 1  # it failed again: a new letter
        assert call(f"{page.url}/api/dead/purge", "POST", {"all": True})[2] == {"done": 1}
        assert r.xlen(Keys(ns).dead) == 0
        assert poll(lambda: call(f"{page.url}/api/dead")[2] == [])


def test_node_slots_tell_what_it_waits_for(redis_url: str, r: redis.Redis, ns: str) -> None:
    load(r, ns, SEED)
    now = server_time_ms(r)
    producer = Producer(r, ns)
    producer.send({"C": 1}, ts=now - 120_000)  # older than the TTL of 60 s: expired by now
    producer.send({"D": 2}, ts=now)
    drain(redis_url, ns)
    detail = Reader(r, ns).node("A", "")
    # The explanation is explain's own: C's old value was emptied when D's came.
    assert [(s.arg, s.status) for s in detail.explain.slots] == [
        ("C", "used"),
        ("D", "filled"),
        ("E", "empty"),
    ]
    assert detail.explain.state == "waiting"
    assert detail.state.waits_for == ["C", "E"] and detail.state.filled == 1
    assert "a value of E (none received yet)" in detail.explain.explanation[0]
    inputs = Reader(r, ns).node("C", "")
    assert inputs.explain.kind == "input" and inputs.info.ttl_ms == 60_000
    assert inputs.state.freshness == "stale" and inputs.state.value == 1
    aged = Reader(r, ns)
    producer.send({"D": 3}, ts=now - 61_000)  # late (older than D's slot): changes nothing
    drain(redis_url, ns)
    assert aged.node("A", "").state.waits_for == ["C", "E"]


def test_keyed_namespace_values_search_and_stalest(redis_url: str, r: redis.Redis, ns: str) -> None:
    store_graph(r, ns, parse_graph_text(SEED, "<test>"), partitions=4)
    now = server_time_ms(r)
    producer = Producer(r, ns)
    for i in range(40):
        producer.send({"C": i, "D": 1, "E": 1}, ts=now - 1000 * (40 - i), key=f"dev-{i:02d}")
    producer.send({"C": 100, "D": 1, "E": 1}, ts=now, key="site/7")
    drain(redis_url, ns)
    reader = Reader(r, ns)
    values = reader.values("dev-07")
    assert values.nodes["C"].value == 7 and values.nodes["A"].value == 9
    assert reader.values("site/7").nodes["A"].value == 102
    assert reader.values("").nodes["A"].value is None  # the empty key has nothing
    listed = reader.key_list()
    assert listed.keyed and listed.count == 41
    assert [k.key for k in listed.stalest[:3]] == ["dev-00", "dev-01", "dev-02"]
    assert listed.newest[0].key == "site/7"
    found = reader.search_keys("dev-1")
    assert [k.key for k in found.matches] == [f"dev-1{i}" for i in range(10)] and found.complete
    exact = reader.search_keys("site/7")
    assert [k.key for k in exact.matches] == ["site/7"]
    assert reader.search_keys("nobody").matches == []


def test_key_search_work_is_bounded(
    r: redis.Redis, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search looks at a bounded number of index members, however many keys there are."""
    store_graph(r, ns, parse_graph_text(SEED, "<test>"), partitions=2)
    by_partition: dict[str, dict[str, int]] = {}
    for i in range(40_000):
        key = f"k-{i:05d}"
        by_partition.setdefault(Namespace(ns).of_key(key, 2).key_index, {})[key] = i
    for index, members in by_partition.items():
        r.zadd(index, members)  # type: ignore[arg-type]
    monkeypatch.setattr(reader_module, "KEY_SCAN_BUDGET", 2_000)
    reader = Reader(r, ns)
    found = reader.search_keys("zzz")  # matches nothing: only the budget stops it
    assert not found.complete and found.scanned <= 2_000 + 2 * 1000
    assert found.matches == []
    exact = reader.search_keys("k-39999")  # an exact key is always found
    assert [k.key for k in exact.matches] == ["k-39999"]
    assert reader.key_list().count == 40_000


def test_ui_command_errors(env: dict[str, str], redis_url: str) -> None:
    def ui(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamcalc", "ui", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    with PageProcess(env, "ui") as page:
        taken = ui("--port", str(page.port))
        assert taken.returncode == 1 and taken.stderr.count("\n") == 1
        assert "cannot listen on 127.0.0.1:" in taken.stderr
    bad = ui("--port", "70000")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    dead = ui(STREAMCALC_REDIS_URL=f"redis://:secret@127.0.0.1:{free_port()}/0")
    assert dead.returncode == 1 and dead.stderr.count("\n") == 1
    assert "cannot reach Redis" in dead.stderr and "secret" not in dead.stderr


def test_ui_stops_cleanly_on_sigterm(r: redis.Redis, ns: str, env: dict[str, str]) -> None:
    load(r, ns, SEED)
    with PageProcess(env, "ui") as page:
        assert call(f"{page.url}/api/meta")[0] == 200
        assert page.stop(signal.SIGTERM) == 0


def test_demo_ui_runs_a_plant_and_stops_cleanly(env: dict[str, str]) -> None:
    """demo --ui: keys, values and a dead letter appear; Ctrl-C leaves no process behind."""
    clean = {k: v for k, v in env.items() if not k.startswith("STREAMCALC_")}
    with PageProcess(clean, "demo", "--ui") as page:
        assert "live page: http://127.0.0.1:" in "".join(page.output)
        redis_children = [p for p in children(page.proc.pid) if alive(p)]
        assert redis_children, "the demo runs its own redis-server"

        def plant_running() -> bool:
            live = call(f"{page.url}/api/live")[2]
            overview = live["overview"]
            return bool(
                overview
                and overview["keys"]["count"] >= 3
                and overview["dead_letters"]
                and live["values"]["nodes"]["efficiency"]["value"] is not None
                and overview["status"]["totals"]["owned"] == 3  # 2 partitions and the router
            )

        poll(plant_running, timeout=60, every=0.5)
        started = time.monotonic()
        assert page.stop(signal.SIGINT) == 0
        assert time.monotonic() - started < 20
        assert "demo stopped" in "".join(page.output)
        poll(lambda: not any(alive(p) for p in redis_children), timeout=10)


def test_empty_namespace_and_redis_going_away(ns: str, env: dict[str, str]) -> None:
    """No graph yet: an empty diagram; Redis gone: one-line 503s, and the page recovers."""
    server = EmbeddedRedis().start()
    try:
        with PageProcess({**env, "STREAMCALC_REDIS_URL": server.url}, "ui") as page:
            assert call(f"{page.url}/api/graph")[2]["nodes"] == []
            with redis.Redis.from_url(server.url) as raw:  # a definition no one can read
                raw.hset(Keys(ns).graph, "A", "{not json")
                raw.hset(Keys(ns).meta, "graph_version", "7")
            broken = poll(lambda: call(f"{page.url}/api/graph")[2]["error"])
            assert "bad stored definition" in broken and "\n" not in broken
            assert call(f"{page.url}/api/live")[2]["values"]["nodes"] == {}
            with redis.Redis.from_url(server.url) as raw:
                raw.delete(Keys(ns).graph, Keys(ns).meta)
            live = call(f"{page.url}/api/live")[2]
            assert live["values"]["nodes"] == {} and live["error"] is None
            port = server.port
            server.stop()
            code, kind, body = call(f"{page.url}/api/live")
            assert code == 503 and kind == "application/json" and "\n" not in body["error"]
            server = EmbeddedRedis(port=port).start()
            with redis.Redis.from_url(server.url) as fresh:
                load(fresh, ns, SEED)
            poll(lambda: call(f"{page.url}/api/live")[0] == 200, timeout=30)
            assert poll(lambda: call(f"{page.url}/api/graph")[2]["nodes"], timeout=30)
            assert page.proc.poll() is None
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_page_on_a_redis_cluster(env: dict[str, str], tmp_path: Path) -> None:
    """Through a cluster node that owns no slot: values of a key, keys, a node, dead letters."""
    from cluster import MISSING, LocalCluster, cluster_client

    if MISSING:
        pytest.skip(MISSING)
    cluster = LocalCluster(masters=3, spare=1).start()
    try:
        far = cluster.node(cluster.spares[0]).url
        env = {**env, "STREAMCALC_REDIS_URL": far}
        graph = tmp_path / "g.toml"
        graph.write_text(SEED)
        cli = [sys.executable, "-m", "streamcalc"]
        subprocess.run(
            [*cli, "graph", "load", str(graph), "--partitions", "4"], env=env, check=True
        )
        for i in range(8):
            send = [*cli, "send", "--key", f"dev.{i}", f"C={i}", "D=1", "E=1"]
            subprocess.run(send, env=env, check=True)
        bad = Namespace(env["STREAMCALC_NS"]).of_key("dev.3", 4)
        with cluster_client(cluster.url) as r:
            r.xadd(bad.input, {"@key": "dev.3", "C": "x"})
        with WorkerProcesses(env, "--block-ms", "50") as workers, PageProcess(env, "ui") as page:
            workers.start("w1")

            def settled() -> bool:
                live = call(f"{page.url}/api/live?key=dev.5")[2]
                return bool(
                    live["values"]["nodes"]["A"]["value"] == 7
                    and live["overview"]
                    and live["overview"]["dead_letters"]
                    and live["overview"]["status"]["totals"]["owned"] == 5
                )

            poll(settled, timeout=90, every=0.5)
            keys = call(f"{page.url}/api/keys")[2]
            assert keys["count"] == 8 and keys["stalest"][0]["key"] == "dev.0"
            found = call(f"{page.url}/api/keys?prefix=dev.")[2]["matches"]
            assert sorted(k["key"] for k in found) == [f"dev.{i}" for i in range(8)]
            node = call(f"{page.url}/api/node/A?key=dev.5")[2]
            assert node["explain"]["state"] == "waiting" and node["recent"][-1]["value"] == 7
            assert "bad value for 'C'" in call(f"{page.url}/api/dead")[2][0]["error"]
    finally:
        cluster.stop()
