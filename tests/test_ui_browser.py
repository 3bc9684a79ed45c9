"""The live page in a real browser: Debian's headless chromium, driven by Playwright.

Each test runs a real ``streamcalc ui`` process against the session's
redis-server and, where values must flow, a real worker process. The run
leaves screenshots in docs/img/ (the README shows one).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import WorkerProcesses, load
from ui_support import CHROMIUM, CHROMIUM_ARGS, PageProcess, call

from streamcalc.graph import parse_graph_text
from streamcalc.keys import Keys
from streamcalc.store import store_graph

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM}"
)

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "img"
SEED = '[defaults]\nttl = "60s"\n[nodes.A]\nfn = "add"\nargs = ["C", "D", "E"]\n'
SEED += '[nodes.B]\nexpr = "A * F"\n'
#: The colours of the diagram's freshness classes, as the browser computes them.
GREEN, AMBER, RED = "rgb(63,185,80)", "rgb(210,153,34)", "rgb(248,81,73)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert errors == [], errors  # no script error on the page


def open_page(tab: Any, url: str, nodes: int, timeout_ms: int = 30_000) -> None:
    tab.goto(url + "/")
    tab.wait_for_function(
        f"window.streamcalc.cy && window.streamcalc.cy.nodes().length === {nodes}",
        timeout=timeout_ms,
    )


def label(tab: Any, node: str) -> str:
    return str(tab.evaluate(f"window.streamcalc.cy.getElementById('{node}').data('label')"))


def border(tab: Any, node: str) -> str:
    """The border colour the diagram draws the node with (its freshness)."""
    colour = tab.evaluate(f"window.streamcalc.cy.getElementById('{node}').style('border-color')")
    return str(colour).replace(" ", "")


def tap(tab: Any, node: str) -> None:
    """Click a node of the diagram (as a user's click: cytoscape's tap event)."""
    tab.evaluate(f"void window.streamcalc.cy.getElementById('{node}').emit('tap')")


def send(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "streamcalc", "send", *args], env=env, check=True, timeout=60
    )


def test_diagram_shows_every_node_and_a_sent_value_within_3s(
    r: redis.Redis, ns: str, env: dict[str, str], page: Any
) -> None:
    load(r, ns, SEED)
    with WorkerProcesses(env, "--block-ms", "50") as workers, PageProcess(env, "ui") as ui:
        workers.start("w1")
        open_page(page, ui.url, 6)
        ids = page.evaluate("window.streamcalc.cy.nodes().map(n => n.id()).sort()")
        assert ids == ["A", "B", "C", "D", "E", "F"]
        assert page.evaluate("window.streamcalc.cy.edges().length") == 5
        page.evaluate("window.notReloaded = true")
        before = page.evaluate("window.streamcalc.refreshes")
        time.sleep(3)
        assert page.evaluate("window.streamcalc.refreshes") - before >= 3  # once a second
        send(env, "C=4", "D=5", "E=6")
        sent = time.monotonic()
        page.wait_for_function(
            "window.streamcalc.cy.getElementById('A').data('label').includes('15')", timeout=3000
        )
        assert time.monotonic() - sent < 3
        assert page.evaluate("window.notReloaded") is True
        assert border(page, "A") == GREEN
        tap(page, "A")
        page.wait_for_function("document.getElementById('d-value').textContent === '15'")
        assert "waiting" in page.inner_text("#d-why")  # explain's own words
        assert "waits for a new value of C" in page.inner_text("#d-why")
        assert page.inner_text("#partitions tbody").count("w1") >= 1
        page.wait_for_function("document.getElementById('p-workers').textContent === '1'")


def test_a_stale_node_changes_colour_when_its_ttl_passes(
    r: redis.Redis, ns: str, env: dict[str, str], page: Any
) -> None:
    load(r, ns, '[defaults]\nttl = "6s"\n[nodes.A]\nexpr = "C + D"\n')
    with WorkerProcesses(env, "--block-ms", "50") as workers, PageProcess(env, "ui") as ui:
        workers.start("w1")
        open_page(page, ui.url, 3)
        assert border(page, "C") not in (GREEN, AMBER, RED)  # no value yet
        send(env, "C=1")
        page.wait_for_function(
            "window.streamcalc.cy.getElementById('C').data('freshness') === 'fresh'", timeout=5000
        )
        assert border(page, "C") == GREEN
        page.wait_for_function(
            "window.streamcalc.cy.getElementById('C').data('freshness') === 'stale'",
            timeout=15_000,
        )
        assert border(page, "C") == RED
        assert "1" in label(page, "C")  # the value is still shown, in the stale colour


def test_a_dead_letter_appears_and_is_purged_after_confirmation(
    redis_url: str, r: redis.Redis, ns: str, env: dict[str, str], page: Any
) -> None:
    load(r, ns, SEED)
    with (
        WorkerProcesses(env, "--block-ms", "50") as workers,
        PageProcess(env, "ui", "--allow-actions") as ui,
    ):
        workers.start("w1")
        open_page(page, ui.url, 6)
        assert page.is_visible("#dead-empty")
        r.xadd(Keys(ns).input, {"C": "true"})
        row = page.wait_for_selector("#dead tbody tr", timeout=10_000)
        assert "bad value for 'C'" in row.inner_text()
        page.wait_for_function("document.getElementById('p-dead').textContent === '1'")
        purge = page.locator("#dead tbody tr button.danger").first
        purge.click()  # asks first
        assert page.is_visible("#confirm")
        page.click("#confirm-cancel")
        time.sleep(1.5)
        assert r.xlen(Keys(ns).dead) == 1  # cancelled: nothing changed
        purge.click()
        page.click("#confirm-ok")
        page.wait_for_selector("#dead-empty", state="visible", timeout=10_000)
        assert r.xlen(Keys(ns).dead) == 0


def test_read_only_page_has_no_action_buttons(
    redis_url: str, r: redis.Redis, ns: str, env: dict[str, str], page: Any
) -> None:
    load(r, ns, SEED)
    r.xadd(Keys(ns).dead, {"C": "true", "@error": "bad value for 'C'", "@src": "1-0"})
    with PageProcess(env, "ui") as ui:
        open_page(page, ui.url, 6)
        row = page.wait_for_selector("#dead tbody tr", timeout=10_000)
        assert row.query_selector("button") is None
        assert page.inner_text("#mode") == "read-only"


def test_keyed_namespace_key_search_and_stalest_keys(
    r: redis.Redis, ns: str, env: dict[str, str], page: Any
) -> None:
    store_graph(r, ns, parse_graph_text(SEED, "<test>"), partitions=3)
    with WorkerProcesses(env, "--block-ms", "50") as workers, PageProcess(env, "ui") as ui:
        workers.start("w1")
        for i, device in enumerate(("pump-1", "pump-2", "valve-9")):
            send(env, "--key", device, f"C={i}", "D=10", "E=100")
        open_page(page, ui.url, 6)
        page.wait_for_selector("#keys-card", state="visible", timeout=10_000)
        page.wait_for_function(
            "document.querySelectorAll('#stalest tbody tr').length === 3", timeout=10_000
        )
        assert page.inner_text("#stalest tbody tr:first-child td:first-child") == "pump-1"
        assert "3 keys" in page.inner_text("#key-count")
        page.fill("#key", "pump-2")
        page.dispatch_event("#key", "change")
        page.wait_for_function(
            "window.streamcalc.cy.getElementById('A').data('label').includes('111')",
            timeout=5000,
        )
        page.click("#stalest tbody tr:first-child")  # pump-1: A = 0 + 10 + 100
        page.wait_for_function(
            "window.streamcalc.cy.getElementById('A').data('label').includes('110')",
            timeout=5000,
        )
        assert page.input_value("#key") == "pump-1"


@pytest.mark.slow
def test_two_thousand_nodes_stay_usable(
    r: redis.Redis, ns: str, env: dict[str, str], page: Any
) -> None:
    """2,000 nodes in layers: drawn, filtered by prefix, found by name."""
    lines = []
    for layer in range(1, 5):  # 400 inputs (src.n*), then 4 layers of 400 derived nodes
        below = "src" if layer == 1 else f"l{layer - 1}"
        for i in range(400):
            a, b = f"{below}.n{i}", f"{below}.n{(i + 1) % 400}"
            lines.append(f'[nodes."l{layer}.n{i}"]\nexpr = "{a} + {b}"\n')
    load(r, ns, "\n".join(lines))
    with PageProcess(env, "ui") as ui:
        started = time.monotonic()
        open_page(page, ui.url, 2000, timeout_ms=90_000)
        drawn_s = time.monotonic() - started
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "live-page-2000-nodes.png"))
        page.fill("#prefix", "l3.")
        page.dispatch_event("#prefix", "input")
        assert page.evaluate("window.streamcalc.cy.nodes(':visible').length") == 400
        page.fill("#prefix", "")
        page.dispatch_event("#prefix", "input")
        page.fill("#search", "l4.n17")
        page.press("#search", "Enter")
        page.wait_for_function("document.getElementById('d-name').textContent === 'l4.n17'")
        assert "l4.n17 = l3.n17 + l3.n18" in page.inner_text("#d-formula")
        assert page.evaluate("window.streamcalc.cy.zoom()") <= 1.2
        code, _, values = call(f"{ui.url}/api/values")
        assert code == 200 and len(values["nodes"]) == 2000
        print(f"2,000 nodes drawn in {drawn_s:.1f}s")


def test_screenshot_of_the_demo_plant(env: dict[str, str], page: Any) -> None:
    """demo --ui in the browser: the README's screenshot, taken with a node selected."""
    clean = {k: v for k, v in env.items() if not k.startswith("STREAMCALC_")}
    with PageProcess(clean, "demo", "--ui") as demo:
        open_page(page, demo.url, 8)
        page.wait_for_selector("#dead tbody tr", timeout=60_000)
        page.wait_for_function(
            "window.streamcalc.series && window.streamcalc.series.t_ms.length >= 8",
            timeout=60_000,
        )
        tap(page, "efficiency")
        page.wait_for_function(
            "document.getElementById('d-name').textContent === 'efficiency'"
            " && document.querySelectorAll('#d-slots tbody tr').length === 2"
        )
        time.sleep(1.5)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "live-page.png"), full_page=True)
        page.fill("#key", "boiler-4")  # silent from 5 s to 20 s after the start: goes stale
        page.dispatch_event("#key", "change")
        page.wait_for_function(
            "window.streamcalc.values.key === 'boiler-4'"
            " && window.streamcalc.cy.getElementById('flow').data('freshness') === 'stale'",
            timeout=30_000,
        )
        assert border(page, "flow") == RED
        page.locator(".diagram-card").screenshot(path=str(SHOTS / "live-page-stale.png"))
        assert demo.stop() == 0
