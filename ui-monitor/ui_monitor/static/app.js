// wasm-engine monitor page: one EventSource (/api/stream) pushes the whole view once a second;
// this file renders it. No build step: vanilla JS and the vendored uPlot.
"use strict";

const $ = (id) => document.getElementById(id);
const charts = {};
let selectedTrace = null;
let lastView = null;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function fmtNum(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toLocaleString(undefined, { maximumFractionDigits: digits });
}
function fmtMs(v) {
  if (v === null || v === undefined) return "–";
  return v < 1 ? fmtNum(v * 1000, 0) + " µs" : v < 1000 ? fmtNum(v, 1) + " ms" : fmtNum(v / 1000, 2) + " s";
}
function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return fmtNum(n, 1) + " " + units[i];
}
function lastNonNull(col) {
  for (let i = col.length - 1; i >= 0; i--) if (col[i] !== null && col[i] !== undefined) return col[i];
  return null;
}
function sum(col, n) { return col.slice(-n).reduce((a, b) => a + (b || 0), 0); }
function fillRows(tbody, rows) { tbody.replaceChildren(...rows); }

// ------------------------------------------------------------------ charts
const LEGEND_PX = 26; // room under each plot for its legend
const COLORS = ["#3fb950", "#f85149", "#58a6ff", "#d29922", "#bc8cff", "#39c5cf", "#ff7b72"];

function chart(id, names, data, colors = COLORS) {
  const box = $(id);
  const key = names.join("|");
  let c = charts[id];
  if (c && c.key !== key) { c.plot.destroy(); c = null; }
  if (!c) {
    const opts = {
      width: Math.max(200, box.clientWidth), height: box.clientHeight - LEGEND_PX,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      axes: [
        { stroke: "#8593a3", grid: { stroke: "#1d2631" }, ticks: { stroke: "#263140" }, space: 80,
          values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false })) },
        { stroke: "#8593a3", grid: { stroke: "#1d2631" }, ticks: { stroke: "#263140" }, size: 48 },
      ],
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: colors[i % colors.length], width: 1.5, spanGaps: false }))],
    };
    c = charts[id] = { key, plot: new uPlot(opts, data, box) };
  } else {
    c.plot.setData(data);
  }
  return c.plot;
}

window.addEventListener("resize", () => {
  for (const [id, c] of Object.entries(charts)) {
    const box = $(id);
    c.plot.setSize({ width: Math.max(200, box.clientWidth), height: box.clientHeight - LEGEND_PX });
  }
});

function renderCharts(v) {
  const ch = v.charts;
  // submitted first, so the done line (usually equal) is drawn over it
  chart("chart-throughput", ["submitted", "done ok", "failed"], [ch.x, ch.queued, ch.ok, ch.failed],
        ["#58a6ff", "#3fb950", "#f85149"]);
  $("chart-throughput").dataset.total = String(sum(ch.ok, ch.ok.length) + sum(ch.failed, ch.failed.length));
  chart("chart-latency", ["p50", "p99", "run p50"], [ch.x, ch.p50_ms, ch.p99_ms, ch.run_p50_ms]);
  const depthNames = Object.keys(ch.depth).sort();
  chart("chart-queues", ["in flight", ...depthNames.map((n) => "queue " + n)],
        [ch.x, ch.inflight, ...depthNames.map((n) => ch.depth[n])]);
}

// ------------------------------------------------------------------ panels
function renderHeader(v) {
  const o = v.orchestrator;
  $("orch").textContent = o
    ? `${o.name} v${o.version} · up ${fmtNum(o.uptime_s)} s · ${fmtNum(o.tasks_known)} tasks known · ${fmtNum(o.agents)} agents`
    : "waiting for the orchestrator…";
  const link = $("link");
  link.textContent = v.ready ? "live" : "orchestrator unreachable";
  link.className = "badge " + (v.ready ? "live" : "stale");
  const t = v.telemetry;
  $("telemetry").textContent =
    `telemetry: ${fmtNum(t.events)} events in ${fmtNum(t.batches)} batches · ` +
    `${fmtNum(t.gaps)} batches lost to this monitor · ${fmtNum(t.orchestrator_dropped)} dropped by the orchestrator · ` +
    `snapshot age ${t.snapshot_age_s === null ? "–" : t.snapshot_age_s.toFixed(1) + " s"} ` +
    `(${t.snapshot_via === "get" ? "asked by status.get: telemetry not flowing" : "over telemetry"}) · ` +
    `orchestrator restarts ${t.orchestrator_restarts}`;
}

function renderKpis(v) {
  const ch = v.charts;
  $("k-rate").textContent = fmtNum((sum(ch.ok, 10) + sum(ch.failed, 10)) / 10, 1);
  $("k-p50").textContent = fmtMs(lastNonNull(ch.p50_ms));
  $("k-p99").textContent = fmtMs(lastNonNull(ch.p99_ms));
  $("k-inflight").textContent = fmtNum(v.workers.reduce((a, w) => a + (w.inflight || 0), 0));
  $("k-queued").textContent = fmtNum(v.queues.reduce((a, q) => a + (q.depth || 0), 0));
  const ready = v.workers.filter((w) => w.state === "ready").length;
  $("k-workers").textContent = `${ready}/${v.workers.length}`;
  $("k-failed").textContent = fmtNum(v.errors.reduce((a, e) => a + e.tasks, 0));
}

function renderWorkers(v) {
  fillRows($("workers").tBodies[0], v.workers.length ? v.workers.map((w) => el("tr", { "data-worker": w.name },
    el("td", { title: w.id }, w.name), el("td", {}, w.kind), el("td", { class: w.state === "ready" ? "ok" : "warn" }, w.state),
    el("td", {}, fmtNum(w.credits)), el("td", {}, fmtNum(w.inflight)), el("td", {}, fmtNum(w.completed)),
    el("td", { class: w.heartbeat_age_s > 2 ? "bad" : "" }, (w.heartbeat_age_s ?? 0).toFixed(1) + " s"),
    el("td", {}, w.device || "–"), el("td", {}, w.host || "–"),
  )) : [el("tr", {}, el("td", { colspan: 9, class: "none" }, "no worker registered"))]);
  $("worker-log").replaceChildren(...v.worker_log.map((e) => el("li", { class: e.ev === "worker.lost" ? "lost" : "" },
    `${new Date(e.t / 1e6).toLocaleTimeString()} ${e.ev.split(".")[1]} ${e.worker || ""}${e.why ? " (" + e.why + ")" : ""}`)));
}

function renderQueues(v) {
  fillRows($("queues").tBodies[0], v.queues.length ? v.queues.map((q) => el("tr", {},
    el("td", {}, q.queue), el("td", {}, fmtNum(q.depth)), el("td", {}, fmtNum(q.limit)),
    el("td", {}, fmtNum(q.queued_per_s, 1)), el("td", {}, fmtNum(q.done_per_s, 1)),
  )) : [el("tr", {}, el("td", { colspan: 5, class: "none" }, "no queue yet"))]);
  fillRows($("errors").tBodies[0], v.errors.length ? v.errors.map((e) => el("tr", {},
    el("td", { class: "bad" }, e.code), el("td", {}, fmtNum(e.tasks)), el("td", {}, fmtNum(e.sent)),
  )) : [el("tr", {}, el("td", { colspan: 3, class: "none" }, "no error"))]);
}

function bars(entries, fmt) {
  const max = Math.max(...entries.map(([, n]) => n), 1);
  return el("div", { class: "bars" }, ...entries.map(([label, n]) => el("div", {},
    el("span", { class: "l", title: label }, label), el("span", { class: "b", style: `width:${Math.max(2, 160 * n / max)}px` }), fmt(n))));
}

function renderResources(v) {
  const inf = v.inference;
  const batches = Object.entries(inf.batches);
  const bBox = $("batches");
  if (batches.length) {
    bBox.className = "";
    $("chart-batches").hidden = false;
    bBox.replaceChildren(bars(batches.map(([size, n]) => ["batch of " + size, n]), (n) => fmtNum(n)));
    chart("chart-batches", ["mean batch", "max batch"], [v.charts.x, v.charts.batch_mean, v.charts.batch_max]);
  }
  const shm = v.shm;
  const sBox = $("shm");
  if (shm.seen) {
    sBox.className = "";
    sBox.replaceChildren(
      el("div", {}, `${fmtNum(shm.segments)} segments · ${fmtNum(shm.leases)} leases (from ${shm.source})`),
      bars(Object.entries(shm.by_owner).sort((a, b) => b[1] - a[1]), fmtBytes));
  }
  const fBox = $("fallbacks");
  const devices = Object.entries(inf.devices), falls = Object.entries(inf.fallbacks);
  if (devices.length || falls.length) {
    fBox.className = "";
    fBox.replaceChildren(
      el("div", {}, "tasks by device"), bars(devices, (n) => fmtNum(n)),
      el("div", { class: falls.length ? "bad" : "ok" }, falls.length ? "GPU→CPU fallbacks by model" : "no GPU→CPU fallback"),
      bars(falls, (n) => fmtNum(n)));
  }
}

// ------------------------------------------------------------------ traces
function renderTraceList(v) {
  fillRows($("traces").tBodies[0], v.traces.length ? v.traces.map((t) => el("tr", {
    class: "pick" + (t.trace === selectedTrace ? " selected" : ""), "data-trace": t.trace, onclick: () => openTrace(t.trace) },
    el("td", { title: t.trace }, t.trace), el("td", { class: "muted" }, t.pool),
    el("td", { title: t.root || "" }, t.root || "–"), el("td", {}, fmtNum(t.tasks)),
    el("td", { class: t.state }, t.state), el("td", {}, fmtNum(t.duration_ms, 1)),
  )) : [el("tr", {}, el("td", { colspan: 6, class: "none" }, "no workflow yet"))]);
}

async function openTrace(id) {
  selectedTrace = id;
  $("trace-id").textContent = id;
  const resp = await fetch("/api/traces/" + encodeURIComponent(id));
  const box = $("trace-view");
  if (!resp.ok) { box.className = "none"; box.textContent = "this trace is no longer kept"; return; }
  renderTree(await resp.json());
  if (lastView) renderTraceList(lastView);
}

function renderTree(tr) {
  const rows = [];
  const walk = (n, depth) => { rows.push([n, depth]); (n.children || []).forEach((c) => walk(c, depth + 1)); };
  tr.roots.forEach((r) => walk(r, 0));
  const end = Math.max(tr.duration_ms, ...rows.map(([n]) => n.done_ms || n.dispatched_ms || n.queued_ms || 0), 0.001);
  const pct = (ms) => (100 * (ms || 0) / end).toFixed(2) + "%";
  const box = $("trace-view");
  box.className = "tree";
  box.replaceChildren(
    el("div", { class: "muted" }, `${tr.tasks} task(s) · ${tr.state} · ${fmtNum(tr.duration_ms, 2)} ms · ${tr.handles.length} tensor handle(s)`),
    ...rows.map(([n, depth]) => {
      const label = [n.name, n.kind, n.agent ? String(n.agent).slice(0, 19) : null, n.model, n.queue].filter(Boolean)[0] || "";
      const lane = el("div", { class: "lane" });
      const start = n.dispatched_ms ?? n.done_ms ?? end;
      lane.append(el("div", { class: "wait", style: `left:${pct(n.queued_ms)};width:${pct(start - (n.queued_ms || 0))}` }));
      if (n.dispatched_ms !== null) {
        lane.append(el("div", { class: "run " + n.state, style: `left:${pct(n.dispatched_ms)};width:${pct((n.done_ms ?? end) - n.dispatched_ms)}` }));
      }
      return el("div", { class: "trace-node", "data-task": n.task_id, title: JSON.stringify(n.history) },
        el("div", { class: "name", style: `padding-left:${depth * 14}px` },
          (depth ? "└ " : "") + n.task_id + " ", el("span", { class: "muted" }, label + (n.worker ? " @" + n.worker : ""))),
        lane,
        el("div", { class: n.state }, n.total_us !== null && n.total_us !== undefined ? fmtMs(n.total_us / 1000) : n.state));
    }),
    ...tr.handles.slice(0, 50).map((h) => el("div", { class: "muted" },
      `+${fmtNum(h.t, 2)} ms ${h.ev} ${h.segment || ""} ${h.owner || ""} ${h.bytes !== undefined ? fmtBytes(h.bytes) : ""}`)));
}

$("trace-open").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = $("trace-input").value.trim();
  if (id) openTrace(id);
});

// ------------------------------------------------------------------ wiring
function render(v) {
  lastView = v;
  renderHeader(v); renderKpis(v); renderCharts(v); renderWorkers(v); renderQueues(v); renderResources(v); renderTraceList(v);
  const sel = selectedTrace && v.traces.find((t) => t.trace === selectedTrace);
  if (sel && sel.state === "running") openTrace(selectedTrace);
}

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("view", (e) => {
    try { render(JSON.parse(e.data)); } catch (err) { console.error("render failed", err); }
  });
  source.onerror = () => { $("link").textContent = "monitor unreachable: retrying"; $("link").className = "badge stale"; };
}
connect();
