// The live page: polls /api/live about once a second and redraws what changed.
// Cytoscape.js (dagre layout) draws the graph; uPlot draws the charts.
"use strict";

(function () {
  const COLORS = {
    fresh: "#3fb950", ageing: "#d29922", stale: "#f85149",
    none: "#5c6370", timeless: "#5794f2",
  };
  const $ = (id) => document.getElementById(id);
  const state = {
    meta: null, graphVersion: null, graph: null, cy: null,
    key: null,             // null: let the server pick (the newest key of a keyed namespace)
    selected: null, hovered: null, note: "", lastT: 0, series: null, charts: {}, nodeChart: null,
    values: null, deadShown: null, updatedAt: 0, refreshes: 0, busy: false,
  };
  window.streamcalc = state;  // for people poking at the page, and for its tests

  // ---- formatting -------------------------------------------------------
  function num(x) {
    if (x === null || x === undefined) return "–";
    if (Number.isInteger(x)) return String(x);
    const a = Math.abs(x);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(3);
    return String(Number(x.toPrecision(6)));
  }
  function value(v) {
    if (v === null || v === undefined) return "–";
    if (Array.isArray(v)) {
      const shown = v.slice(0, 4).map(num).join(", ");
      return "[" + shown + (v.length > 4 ? ", …" : "") + "]";
    }
    return num(v);
  }
  function age(ms) {
    if (ms === null || ms === undefined) return "–";
    const s = ms / 1000;
    if (s < 10) return s.toFixed(1) + "s";
    if (s < 120) return Math.round(s) + "s";
    if (s < 7200) return (s / 60).toFixed(1) + "m";
    if (s < 172800) return (s / 3600).toFixed(1) + "h";
    return (s / 86400).toFixed(1) + "d";
  }
  function rate(x) { return x === null || x === undefined ? "–" : num(Math.round(x * 10) / 10) + "/s"; }
  function ttl(ms) { return ms ? age(ms) : "never expires"; }
  function clock(ms) { return new Date(ms).toLocaleTimeString(); }
  function idMs(id) { return Number(String(id).split("-")[0]); }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  }
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }

  async function getJSON(url, options) {
    const response = await fetch(url, options);
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  // ---- the diagram ------------------------------------------------------
  function nodeLabel(info, st) {
    if (!st) return info.name;
    let text = info.name + "\n" + value(st.value);
    if (st.age_ms !== null && st.age_ms !== undefined) text += "  ·  " + age(st.age_ms);
    if (st.arity && st.filled < st.arity) text += "\nslots " + st.filled + "/" + st.arity;
    return text;
  }

  function buildDiagram(graph) {
    const elements = [];
    for (const node of graph.nodes) {
      elements.push({ data: { id: node.name, label: node.name, kind: node.kind, freshness: "none" } });
    }
    for (const node of graph.nodes) {
      for (const arg of new Set(node.args)) {  // one edge per argument node, however often used
        elements.push({ data: { id: arg + "->" + node.name, source: arg, target: node.name } });
      }
    }
    if (state.cy) state.cy.destroy();
    state.bigGraph = false;
    const big = graph.nodes.length > 300;
    const cy = cytoscape({
      container: $("cy"),
      elements,
      minZoom: 0.02, maxZoom: 3,
      textureOnViewport: big, hideEdgesOnViewport: big, pixelRatio: big ? 1 : "auto",
      style: [
        { selector: "node", style: {
          shape: "round-rectangle", width: 150, height: 48,
          "background-color": COLORS.none, "background-opacity": 0.22,
          "border-width": 2, "border-color": COLORS.none,
          label: "data(label)", color: "#e6edf3", "font-size": 12, "text-wrap": "wrap",
          "text-valign": "center", "text-halign": "center", "min-zoomed-font-size": 7,
          "font-family": "system-ui, sans-serif",
        } },
        { selector: "node[kind = 'input']", style: { shape: "round-tag", width: 140 } },
        ...Object.entries(COLORS).map(([name, color]) => ({
          selector: `node[freshness = '${name}']`,
          style: { "border-color": color, "background-color": color },
        })),
        { selector: "node:selected", style: { "border-width": 4, "border-color": "#ffffff", "background-opacity": 0.35 } },
        { selector: "node.match", style: { "border-width": 4, "border-color": "#ffd33d", "border-style": "double" } },
        { selector: "edge", style: {
          width: 1.4, "line-color": "#4a5261", "target-arrow-color": "#4a5261",
          "target-arrow-shape": "triangle", "curve-style": big ? "haystack" : "bezier",
          "arrow-scale": 0.9,
        } },
        // An argument the node waits for (its slot holds no valid value): a dashed edge.
        { selector: "edge[?waiting]", style: { "line-style": "dashed", "line-color": "#39404c", "target-arrow-color": "#39404c" } },
        { selector: "edge[?filled]", style: { "line-color": "#3f8f55", "target-arrow-color": "#3f8f55" } },
        { selector: ".hidden", style: { display: "none" } },
      ],
      layout: {
        name: "dagre", rankDir: "LR", nodeSep: big ? 6 : 18, rankSep: big ? 90 : 70,
        ranker: big ? "longest-path" : "network-simplex", animate: false, fit: true, padding: 24,
      },
    });
    readableView(cy);
    cy.on("mouseover", "node", (event) => { state.hovered = event.target.id(); describeNode(state.hovered); });
    cy.on("mouseout", "node", () => { state.hovered = null; $("diagram-note").textContent = state.note; });
    cy.on("tap", "node", (event) => selectNode(event.target.id()));
    cy.on("tap", (event) => { if (event.target === cy) selectNode(null); });
    state.cy = cy;
    $("node-names").replaceChildren(...graph.nodes.slice(0, 5000).map((n) => el("option", { value: n.name })));
    state.note = $("diagram-note").textContent = graph.error
      ? "The stored graph cannot be read: " + graph.error
      : !graph.nodes.length
      ? "No graph loaded yet: streamcalc graph load FILE"
      : `${graph.nodes.length} nodes · scroll to zoom, drag to pan, click a node for its slots` +
        (state.bigGraph ? " · showing its inputs' corner: find a node or filter by prefix, fit shows all" : "");
    applyPrefix();
  }

  // A big graph fitted whole is a haze of dots: start at a readable zoom on its inputs instead.
  function readableView(cy) {
    if (cy.zoom() >= 0.35) return;
    const box = cy.elements().boundingBox();
    cy.zoom(0.6);
    cy.pan({ x: 24 - box.x1 * 0.6, y: 24 - box.y1 * 0.6 });
    state.bigGraph = true;
  }

  function paintValues(values) {
    if (!state.cy || !state.graph) return;
    const byName = Object.fromEntries(state.graph.nodes.map((n) => [n.name, n]));
    state.cy.batch(() => {
      state.cy.nodes().forEach((node) => {
        const st = values.nodes[node.id()];
        const label = nodeLabel(byName[node.id()], st);
        const fresh = st ? st.freshness : "none";
        if (node.data("label") !== label) node.data("label", label);
        if (node.data("freshness") !== fresh) node.data("freshness", fresh);
      });
      state.cy.edges().forEach((edge) => {
        const st = values.nodes[edge.target().id()];
        const known = !!(st && st.arity);
        const waiting = known && st.waits_for.includes(edge.source().id());
        if (edge.data("waiting") !== waiting) edge.data("waiting", waiting);
        if (edge.data("filled") !== (known && !waiting)) edge.data("filled", known && !waiting);
      });
    });
    if (state.hovered) describeNode(state.hovered);
  }

  // The line under the diagram tells about the node under the pointer.
  function describeNode(name) {
    const info = state.graph.nodes.find((n) => n.name === name);
    const st = state.values && state.values.nodes[name];
    if (!info) return;
    const parts = [info.formula || name + ": an input"];
    parts.push("ttl " + ttl(info.ttl_ms));
    if (st && st.value !== null) parts.push(`${value(st.value)}, ${age(st.age_ms)} old (${st.freshness})`);
    if (st && st.waits_for && st.waits_for.length) parts.push("waits for " + st.waits_for.join(", "));
    $("diagram-note").textContent = parts.join(" · ");
  }

  function applyPrefix() {
    if (!state.cy) return;
    const prefix = $("prefix").value.trim();
    state.cy.batch(() => {
      state.cy.nodes().forEach((n) => n.toggleClass("hidden", !!prefix && !n.id().startsWith(prefix)));
    });
    const shown = state.cy.nodes(":visible");
    if (prefix && shown.length) state.cy.fit(shown, 30);
  }

  function search() {
    if (!state.cy) return;
    const text = $("search").value.trim();
    state.cy.nodes().removeClass("match");
    if (!text) return;
    const exact = state.cy.getElementById(text);
    const found = exact.length ? exact : state.cy.nodes().filter((n) => n.id().includes(text));
    found.addClass("match");
    if (found.length) {
      state.cy.fit(found, 80);
      if (state.cy.zoom() > 1.2) {  // one node: close enough to read, with its neighbours
        state.cy.zoom(1.2);
        state.cy.center(found);
      }
    }
    if (found.length === 1) selectNode(found.id());
  }

  // ---- node detail ------------------------------------------------------
  function selectNode(name) {
    state.selected = name;
    if (state.cy) {
      state.cy.nodes(":selected").unselect();
      if (name) state.cy.getElementById(name).select();
    }
    $("detail-empty").hidden = !!name;
    $("detail-body").hidden = !name;
    if (name) refreshNode();
  }

  async function refreshNode() {
    const name = state.selected;
    if (!name) return;
    const key = state.values ? state.values.key : "";
    let d;
    try {
      d = await getJSON(`/api/node/${encodeURIComponent(name)}?key=${encodeURIComponent(key)}`);
    } catch (err) {
      $("d-why").textContent = String(err.message || err);
      return;
    }
    if (state.selected !== name) return;
    const info = d.info, st = d.state;
    $("d-name").textContent = info.name;
    $("d-kind").textContent = info.kind + (d.key ? " · key " + d.key : "");
    $("d-formula").textContent = info.formula || "input: values come from producers";
    $("d-value").textContent = value(st.value);
    $("d-age").textContent = age(st.age_ms) + (st.freshness !== "none" ? "  (" + st.freshness + ")" : "");
    $("d-ts").textContent = st.ts === null ? "–" : st.ts + "  " + clock(st.ts);
    $("d-ttl").textContent = ttl(info.ttl_ms) + (info.kind === "input" && info.ttl_ms ? " (shortest of the nodes it feeds)" : "");
    $("d-mode").textContent = info.mode || "–";
    const ex = d.explain;  // what `streamcalc explain` says, word for word
    $("d-feeds").textContent = ex.feeds.length ? ex.feeds.join(", ") : "nothing";
    $("d-why").replaceChildren(
      el("span", { class: "state " + ex.state }, ex.state), " ",
      ...ex.explanation.flatMap((line, i) => (i ? [el("br"), line] : [line])));
    $("d-slots").hidden = info.kind === "input";
    fill($("d-slots").tBodies[0], ex.slots.map((s) => {
      const shown = s.status === "filled" ? (s.expired ? "expired" : "valid") : s.status;
      const own = s.arg_latest ? `${value(s.arg_latest.value)} · ${age(s.arg_latest.age_s * 1000)}` : "–";
      return el("tr", {},
        el("td", {}, s.position), el("td", {}, s.arg), el("td", {}, value(s.value)),
        el("td", { title: s.ts === null ? "" : `ts ${s.ts} (${clock(s.ts)})` }, s.age_s === null ? "–" : age(s.age_s * 1000)),
        el("td", {}, el("span", { class: "state " + shown }, shown)),
        el("td", { class: "muted" }, own));
    }));
    const numeric = d.recent.filter((v) => typeof v.value === "number");
    $("d-recent-note").textContent = d.recent.length
      ? `${d.recent.length} among the newest ${d.recent_scanned} entries of its partition`
      : `none among the newest ${d.recent_scanned} entries of its partition`;
    $("d-chart").hidden = numeric.length === 0;
    if (numeric.length) drawNodeChart(info.name, numeric);
  }

  function drawNodeChart(name, points) {
    const data = [points.map((p) => p.ts / 1000), points.map((p) => p.value)];
    const box = $("d-chart");
    if (state.nodeChart && state.nodeChart.series[1].label === name) {
      state.nodeChart.setData(data);
      return;
    }
    if (state.nodeChart) state.nodeChart.destroy();
    state.nodeChart = new uPlot(chartOptions(box, [{ label: name, stroke: "#5794f2", fill: "rgba(87,148,242,.12)", points: { show: true, size: 4 } }]), data, box);
  }

  // ---- charts -----------------------------------------------------------
  function chartOptions(box, series) {
    const axis = { stroke: "#8b93a1", grid: { stroke: "#242a33", width: 1 }, ticks: { stroke: "#242a33" } };
    return {
      width: Math.max(box.clientWidth, 200), height: box.clientHeight - 30,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, range: (u, min, max) => (min === max ? [min - 30, max + 30] : [min, max]) } },
      axes: [axis, { ...axis, size: 56 }],
      series: [{}, ...series.map((s) => ({ width: 1.6, spanGaps: true, points: { show: false }, ...s }))],
    };
  }

  function makeCharts() {
    const defs = {
      rates: [{ label: "input /s", stroke: "#5794f2" }, { label: "output /s", stroke: "#3fb950" }],
      backlog: [{ label: "lag", stroke: "#d29922" }, { label: "pending", stroke: "#b877d9" }],
      dead: [{ label: "dead letters", stroke: "#f85149", fill: "rgba(248,81,73,.1)" }],
    };
    for (const [name, series] of Object.entries(defs)) {
      const box = $("chart-" + name);
      state.charts[name] = new uPlot(chartOptions(box, series), [[], ...series.map(() => [])], box);
    }
    window.addEventListener("resize", () => {
      for (const [name, chart] of Object.entries(state.charts)) {
        const box = $("chart-" + name);
        chart.setSize({ width: box.clientWidth, height: box.clientHeight - 30 });
      }
    });
  }

  function addSeries(columns) {
    if (!state.series) state.series = { t_ms: [], input_per_s: [], output_per_s: [], lag: [], pending: [], dead: [] };
    for (const name of Object.keys(state.series)) state.series[name].push(...columns[name]);
    const keep = 600;
    for (const name of Object.keys(state.series)) state.series[name] = state.series[name].slice(-keep);
    if (columns.t_ms.length) state.lastT = columns.t_ms[columns.t_ms.length - 1];
    const s = state.series, t = s.t_ms.map((x) => x / 1000);
    state.charts.rates.setData([t, s.input_per_s, s.output_per_s]);
    state.charts.backlog.setData([t, s.lag, s.pending]);
    state.charts.dead.setData([t, s.dead]);
  }

  // ---- tables -----------------------------------------------------------
  function paintOverview(o) {
    const st = o.status, totals = st.totals || { lag: 0, pending: 0, owned: 0 };
    const s = state.series;
    const last = (name) => (s && s[name].length ? s[name][s[name].length - 1] : null);
    $("p-in").textContent = rate(last("input_per_s"));
    $("p-out").textContent = rate(last("output_per_s"));
    $("p-lag").textContent = num(totals.lag) + (totals.lag_capped ? "+" : "");
    $("p-pending").textContent = num(totals.pending);
    $("p-workers").textContent = st.members.length;
    const parts = st.partitions.length + (st.router ? 1 : 0);
    $("p-owned").textContent = `${totals.owned} / ${parts}`;
    $("p-dead").textContent = num(st.dead_letters);
    $("pill-dead").classList.toggle("alert", st.dead_letters > 0);
    $("graph-version").textContent = st.graph_version === "0" ? "" : "version " + st.graph_version;

    const rows = [...st.partitions, ...(st.router ? [st.router] : [])].map((p) => el("tr", {},
      el("td", {}, p.label === "-" ? "0" : p.label),
      el("td", {}, p.owner ? p.owner.consumer : el("span", { class: "chip warn" }, "no owner")),
      el("td", {}, p.owner ? "epoch " + p.owner.epoch + ", renew within " + age(p.owner.expires_in_ms) : "–"),
      el("td", { class: "num" }, p.lag === null ? "–" : num(p.lag) + (p.lag_capped ? "+" : "")),
      el("td", { class: "num" }, num(p.pending)),
      el("td", {}, p.consumers.map((c) => `${c.name} (${c.pending}, ${age(c.idle_ms)})`).join(", ") || "–"),
      el("td", { class: "num" }, num(p.streams.in.length)),
      el("td", { class: "num" }, num(p.streams.out.length)),
      el("td", { class: "num" }, num(p.streams.dead.length))));
    fill($("partitions").tBodies[0], rows);
    $("members").replaceChildren(...(st.members.length
      ? st.members.map((m) => el("span", { class: "chip" }, el("b", {}, "● "), m.name, el("span", { class: "muted" }, "  heartbeat due in " + age(m.expires_in_ms))))
      : [el("span", { class: "muted" }, "No live worker: start one with streamcalc worker")]));

    paintDead(o.dead_letters);
    paintKeys(o.keys);
  }

  // Rows that do not change are not rebuilt: a click on one of their buttons must land.
  function paintDead(letters) {
    const actions = state.meta && state.meta.allow_actions;
    $("dead-actions").hidden = !actions || !letters.length;
    $("dead-empty").hidden = letters.length > 0;
    const signature = letters.map((d) => d.partition + "/" + d.id).join(" ");
    if (signature === state.deadShown) return;
    state.deadShown = signature;
    fill($("dead").tBodies[0], letters.map((d) => {
      const fields = Object.entries(d.fields).map(([k, v]) => `${k}=${v}`).join(" ");
      const buttons = actions ? [
        el("button", { onclick: () => act("retry", [d.id], `Re-queue dead letter ${d.id}?`) }, "retry"), " ",
        el("button", { class: "danger", onclick: () => act("purge", [d.id], `Drop dead letter ${d.id}? It is gone for good.`) }, "purge"),
      ] : [];
      return el("tr", { "data-id": d.id },
        el("td", { title: d.id }, clock(idMs(d.id))),
        el("td", {}, d.partition === null ? "router" : d.partition),
        el("td", { class: "reason" }, d.error),
        el("td", {}, d.node || "–"),
        el("td", { class: "fields", title: fields }, fields),
        el("td", {}, ...buttons));
    }));
  }

  function keyRow(k) {
    return el("tr", { class: "clickable", "data-key": k.key, onclick: () => chooseKey(k.key) },
      el("td", {}, k.key), el("td", { class: "num" }, age(k.age_ms)), el("td", { class: "num" }, k.partition));
  }

  function paintKeyTable(tbody, rows) {
    const same = tbody.rows.length === rows.length &&
      rows.every((k, i) => tbody.rows[i].dataset.key === k.key);
    if (!same) return fill(tbody, rows.map(keyRow));
    rows.forEach((k, i) => { tbody.rows[i].cells[1].textContent = age(k.age_ms); });
  }

  function paintKeys(keys) {
    $("keys-card").hidden = !keys.keyed;
    $("keybox").hidden = !keys.keyed;
    if (!keys.keyed) return;
    $("key-count").textContent = num(keys.count) + " keys";
    paintKeyTable($("stalest").tBodies[0], keys.stalest);
    paintKeyTable($("newest").tBodies[0], keys.newest);
  }

  function chooseKey(key) {
    state.key = key;
    $("key").value = key;
    tick(true);
  }

  let keyTimer = null;
  function suggestKeys() {
    clearTimeout(keyTimer);
    keyTimer = setTimeout(async () => {
      const prefix = $("key").value.trim();
      try {
        const found = await getJSON(`/api/keys?prefix=${encodeURIComponent(prefix)}&limit=50`);
        $("key-names").replaceChildren(...found.matches.map((k) => el("option", { value: k.key })));
      } catch (err) { showError(err.message); }
    }, 200);
  }

  // ---- actions ----------------------------------------------------------
  function confirmDialog(text) {
    return new Promise((resolve) => {
      const dialog = $("confirm");
      $("confirm-text").textContent = text;
      dialog.onclose = () => resolve(dialog.returnValue === "ok");
      dialog.showModal();
    });
  }

  async function act(what, ids, question) {
    if (!(await confirmDialog(question))) return;
    try {
      const done = await getJSON(`/api/dead/${what}`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(ids ? { ids } : { all: true }),
      });
      $("diagram-note").textContent = `${what}: ${done.done} dead letter(s)`;
    } catch (err) { showError(err.message); }
    tick(true);
  }

  // ---- the refresh loop -------------------------------------------------
  function showError(message) {
    $("error").hidden = !message;
    $("error").textContent = message || "";
  }

  async function tick(now) {
    if (state.busy && !now) return;
    state.busy = true;
    const started = Date.now();
    try {
      const key = state.key === null ? "" : `&key=${encodeURIComponent(state.key)}`;
      const live = await getJSON(`/api/live?since=${state.lastT}${key}`);
      if (live.values.graph_version !== state.graphVersion) {
        state.graph = await getJSON("/api/graph");
        state.graphVersion = state.graph.version;
        buildDiagram(state.graph);
      }
      state.values = live.values;
      if (state.key === null && live.values.key && document.activeElement !== $("key")) $("key").value = live.values.key;
      addSeries(live.series);
      paintValues(live.values);
      if (live.overview) paintOverview(live.overview);
      showError(live.error);
      if (state.selected) refreshNode();
      state.updatedAt = Date.now();
      state.refreshes += 1;
      $("live-dot").className = "dot on";
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      $("live-dot").className = "dot off";
      showError("Cannot refresh: " + (err.message || err));
    } finally {
      state.busy = false;
    }
    return Date.now() - started;
  }

  async function loop() {
    const spent = await tick(false);
    // A little faster than the server samples, so the page never lags a sample behind.
    const every = 0.8 * (state.meta ? state.meta.interval_ms : 1000);
    setTimeout(loop, Math.max(100, every - (spent || 0)));
  }

  async function start() {
    cytoscape.use(cytoscapeDagre);
    try {
      state.meta = await getJSON("/api/meta");
      $("ns").textContent = "ns " + state.meta.ns;
      $("redis").textContent = state.meta.redis;
      $("mode").textContent = state.meta.allow_actions ? "actions allowed" : "read-only";
      $("mode").className = "chip " + (state.meta.allow_actions ? "warn" : "ok");
    } catch (err) { showError("Cannot reach the page's server: " + err.message); }
    makeCharts();
    $("search").addEventListener("change", search);
    $("search").addEventListener("keydown", (e) => { if (e.key === "Enter") search(); });
    $("prefix").addEventListener("input", applyPrefix);
    $("fit").addEventListener("click", () => state.cy && state.cy.fit(state.cy.nodes(":visible"), 24));
    $("key").addEventListener("input", suggestKeys);
    $("key").addEventListener("change", () => chooseKey($("key").value.trim()));
    $("retry-all").addEventListener("click", () => act("retry", null, "Re-queue every dead letter?"));
    $("purge-all").addEventListener("click", () => act("purge", null, "Drop every dead letter? They are gone for good."));
    loop();
  }

  start();
})();
