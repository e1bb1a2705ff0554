// Sluice dashboard: polls the REST API and renders the panels (charts in chart.js).
/* global COLORS, lineChart, sparkline, legend */
"use strict";

const POLL_MS = 2000;
const HISTORY_POLL_MS = 15000;
const state = { pipelines: null, throughput: null, seriesKey: null, seriesTable: null, pickedKey: false, detail: null };

function apiKey() { return localStorage.getItem("sluice-api-key") || ""; }

async function get(path) {
  const headers = apiKey() ? { "X-API-Key": apiKey() } : {};
  const response = await fetch(path, { headers });
  if (response.status === 401 || response.status === 403) {
    document.getElementById("keyform").hidden = false;
    throw new Error("unauthorized");
  }
  if (!response.ok) { throw new Error(path + ": " + response.status); }
  return response.json();
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined || text === "" ? "—" : String(text);
  if (className) { td.className = className; }
  return td;
}

function linkCell(text, onClick, className) {
  const td = document.createElement("td");
  if (className) { td.className = className; }
  const a = document.createElement("a");
  a.href = "#"; a.className = "link"; a.textContent = text === null || text === undefined ? "—" : String(text);
  a.addEventListener("click", (event) => { event.preventDefault(); onClick(); });
  td.appendChild(a);
  return td;
}

function badge(text) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = "badge " + String(text || "").toLowerCase().replace(/[^a-z_]/g, "_");
  span.textContent = text || "unknown";
  td.appendChild(span);
  return td;
}

function fill(id, rows, render) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    tr.append(...render(row));
    return tr;
  }));
  document.getElementById(id + "-empty").hidden = rows.length > 0;
  document.getElementById(id).hidden = rows.length === 0;
}

function number(value, digits) {
  if (typeof value !== "number") { return value; }
  return value.toLocaleString(undefined, { maximumFractionDigits: digits || 0 });
}

function lagText(lag) {
  if (lag && typeof lag === "object") {
    const parts = Object.values(lag);
    const total = parts.reduce((a, b) => a + b, 0);
    return parts.length > 1 ? number(total) + " (" + parts.length + " partitions)" : number(total);
  }
  return number(lag);
}

function when(value) {
  if (!value) { return null; }
  const date = new Date(value);
  return isNaN(date) ? String(value) : date.toLocaleString();
}

function shortWhen(value) {
  // the time alone for today, else date and time
  if (!value) { return null; }
  const date = new Date(value);
  if (isNaN(date)) { return String(value); }
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function colorOf(name) {
  const names = Object.keys((state.throughput && state.throughput.pipelines) || {});
  const index = names.indexOf(name);
  return COLORS[(index < 0 ? names.length : index) % COLORS.length];
}

// -- pipelines and throughput -----------------------------------------------------------
function renderPipelines(pipelines) {
  state.pipelines = pipelines;
  fill("pipelines", pipelines, (p) => {
    const spark = document.createElement("td");
    const canvas = document.createElement("canvas");
    canvas.className = "spark";
    spark.appendChild(canvas);
    return [linkCell(p.name, () => showPipeline(p.name)), badge(p.state), spark,
      cell(number(p.events_per_second, 1), "num"), cell(number(p.events_total), "num"),
      cell(lagText(p.lag), "num"), cell(when(p.last_checkpoint)), cell(number(p.errors), "num")];
  });
  drawSparklines(pipelines);
}

function drawSparklines(pipelines) {
  const rows = document.querySelectorAll("#pipelines tbody tr");
  pipelines.forEach((p, i) => {
    const canvas = rows[i] && rows[i].querySelector("canvas.spark");
    const values = (state.throughput && state.throughput.pipelines[p.name]) || [];
    if (canvas) { sparkline(canvas, values, colorOf(p.name)); }
  });
}

function renderThroughput(data) {
  state.throughput = data;
  const start = new Date(data.start).getTime(), width = data.bucket_seconds * 1000;
  const series = Object.entries(data.pipelines).map(([name, values]) => ({
    name, color: colorOf(name),
    points: values.map((v, i) => [start + (i + 0.5) * width, v]),
  }));
  lineChart(document.getElementById("chart"), series,
    { start, end: start + width * (series[0] ? series[0].points.length : 1), zero: true });
  legend(document.getElementById("legend"), series.map((s) => [s.name, s.color]));
  if (state.pipelines) { drawSparklines(state.pipelines); }
}

// -- incidents and a key's series -------------------------------------------------------
function renderIncidents(incidents) {
  fill("incidents", incidents, (i) => [cell(when(i.start)), cell(when(i.end)),
    linkCell(i.key, () => pickKey(i.table, i.key)), cell(i.model), cell(number(i.events), "num"),
    cell(number(i.peak_score, 4), "num"), cell(i.reason, "reason")]);
  if (!state.pickedKey && incidents.length) {
    state.seriesTable = incidents[0].table; state.seriesKey = incidents[0].key;
  }
}

function pickKey(table, key) {
  state.pickedKey = true; state.seriesTable = table; state.seriesKey = key;
  refreshSeries();
  document.querySelector('[data-panel="series"]').scrollIntoView({ behavior: "smooth" });
}

async function refreshSeries() {
  const empty = document.getElementById("series-empty");
  if (!state.seriesKey) { empty.hidden = false; return; }
  const data = await get("/api/v1/series?limit=300&table=" + encodeURIComponent(state.seriesTable)
    + "&key=" + encodeURIComponent(state.seriesKey));
  empty.hidden = data.rows.length > 0;
  const alerts = data.rows.filter((r) => r.alerted).length;
  document.getElementById("series-title").textContent = data.key_column + " = " + data.key
    + " in " + data.table + " · last " + data.rows.length + " events · " + alerts + " alerted (red)";
  const series = data.features.map((feature, index) => {
    const points = data.rows.map((r) => [new Date(r.t).getTime(), Number(r[feature])]);
    const values = points.map(([, v]) => v).filter(Number.isFinite);
    const lo = Math.min(...values), hi = Math.max(...values);
    const scale = (v) => (hi > lo ? (v - lo) / (hi - lo) : 0.5);  // features share one 0..1 axis
    return {
      name: feature + " (" + number(lo, 2) + " – " + number(hi, 2) + ")",
      color: COLORS[index % COLORS.length],
      points: points.map(([t, v]) => [t, scale(v)]),
      marks: data.rows.map((r, i) => [r.alerted, points[i]]).filter(([a]) => a)
        .map(([, [t, v]]) => [t, scale(v)]),
    };
  });
  lineChart(document.getElementById("series-chart"), series, {});
  legend(document.getElementById("series-legend"), series.map((s) => [s.name, s.color]));
}

// -- actions, models, drift, dead letters, streams -------------------------------------
function renderActions(summary) {
  fill("actions", summary.by_rule, (r) => [cell(r.pipeline), cell(r.action), badge(r.status),
    cell(number(r.count), "num")]);
  fill("failures", summary.failures, (a) => [cell(a.id), cell(a.action), cell(a.key),
    cell(a.last_error, "reason")]);
  fill("queue", summary.queue, (a) => [cell(a.id), cell(a.action), cell(a.key), badge(a.status)]);
}

function keyMetrics(metrics) {
  const picked = ["f1", "precision", "recall", "accuracy", "auc"]
    .filter((k) => typeof (metrics || {})[k] === "number");
  return picked.map((k) => k + " " + number(metrics[k], 3)).join(" · ");
}

function renderModels(models) {
  fill("models", models, (m) => [cell(m.name), cell(m.version), badge(m.stage || m.kind),
    cell(m.format || m.type),
    cell(keyMetrics(m.metrics) || (m.pipeline ? "learns online in " + m.pipeline : null))]);
}

function renderDrift(events) {
  // one row per model, feature and detector: how often it fired, its largest value, when last
  const groups = new Map();
  for (const d of events) {
    const id = [d.model, d.feature, d.detector].join("|");
    const g = groups.get(id) || { ...d, count: 0, peak: -Infinity, last: d.detected_at };
    g.count += 1; g.peak = Math.max(g.peak, d.value);
    if (String(d.detected_at) > String(g.last)) { g.last = d.detected_at; }
    groups.set(id, g);
  }
  const rows = [...groups.values()].sort((a, b) => String(b.last).localeCompare(String(a.last))).slice(0, 8);
  fill("drift", rows, (g) => [cell(shortWhen(g.last)), cell(g.model), cell(g.feature),
    cell(g.detector + (g.count > 1 ? " ×" + g.count : "")), cell(number(g.peak, 2), "num")]);
}

function renderDlq(reasons) {
  fill("dlq", reasons, (d) => [cell(d.pipeline), cell(d.stage), cell(d.reason, "reason"),
    cell(number(d.count), "num")]);
}

function renderStreams(streams) {
  fill("streams", streams, (s) => [cell(s.name), cell(number(s.end_offset), "num"),
    cell(number(s.lag), "num"), cell(Object.keys(s.consumers || {}).join(", "))]);
}

// -- jobs --------------------------------------------------------------------------------
function runGrid(job) {
  // Airflow-style grid: one row per task, one square per run (oldest left), coloured by state.
  const td = document.createElement("td");
  const grid = document.createElement("div");
  grid.className = "grid";
  const runs = (job.runs || []).slice().reverse();
  for (const task of job.tasks || []) {
    const row = document.createElement("div");
    row.className = "grid-row";
    const label = document.createElement("span");
    label.className = "grid-task";
    label.textContent = task.name;
    row.appendChild(label);
    for (const run of runs) {
      const taskState = (run.task_states || {})[task.name] || "none";
      const square = document.createElement("button");
      square.type = "button";
      square.className = "sq " + taskState;
      square.title = task.name + " · " + (when(run.interval_start || run.created_at) || "") + " · " + taskState;
      square.addEventListener("click", () => showRun(job, run));
      row.appendChild(square);
    }
    grid.appendChild(row);
  }
  td.appendChild(grid);
  return td;
}

function renderJobs(jobs) {
  fill("jobs", jobs, (j) => {
    const run = (j.runs && j.runs[0]) || null;
    const last = run ? linkCell(run.state, () => showRun(j, run)) : badge("no runs");
    return [cell(j.name), cell(j.schedule), last, runGrid(j)];
  });
}

// -- click-through detail ----------------------------------------------------------------
function openDetail(title, nodes) {
  document.getElementById("detail-title").textContent = title;
  document.getElementById("detail").replaceChildren(...nodes);
  const card = document.getElementById("detail-card");
  card.hidden = false;
  card.scrollIntoView({ behavior: "smooth" });
}

function table(headers, rows) {
  const t = document.createElement("table");
  const head = document.createElement("tr");
  head.append(...headers.map((h) => { const th = document.createElement("th"); th.textContent = h; return th; }));
  const thead = document.createElement("thead"); thead.appendChild(head);
  const tbody = document.createElement("tbody");
  tbody.append(...rows.map((cells) => { const tr = document.createElement("tr"); tr.append(...cells); return tr; }));
  t.append(thead, tbody);
  return t;
}

function heading(text) { const h = document.createElement("h3"); h.textContent = text; return h; }

async function showPipeline(name) {
  state.detail = () => showPipeline(name);
  const [status, runs] = await Promise.all([
    get("/api/v1/pipelines/" + encodeURIComponent(name)),
    get("/api/v1/pipelines/" + encodeURIComponent(name) + "/runs?limit=10"),
  ]);
  const facts = table(["State", "Source", "Tables", "Epoch", "Events", "Last error"], [[
    badge(status.state), cell((status.source || {}).type), cell((status.tables || []).join(", ")),
    cell(status.epoch), cell(number(status.events_total), "num"), cell(status.last_error, "reason")]]);
  const lag = status.lag && typeof status.lag === "object" ? Object.entries(status.lag) : [];
  const lagTable = lag.length
    ? table(["Partition", "Lag (records)"], lag.map(([p, v]) => [cell(p), cell(number(v), "num")]))
    : Object.assign(document.createElement("p"), { className: "empty", textContent: "Lag " + lagText(status.lag) + " (per-partition lag is shown for Kafka sources)." });
  const runTable = table(["Run", "Status", "Started", "Finished", "Events in", "Dead-lettered", "Error"],
    runs.map((r) => [cell(r.id), badge(r.status), cell(when(r.started_at)), cell(when(r.finished_at)),
      cell(number((r.stats || {}).events_in), "num"), cell(number((r.stats || {}).dead_lettered), "num"),
      cell(r.error, "reason")]));
  openDetail("Pipeline " + name, [facts, heading("Per-partition lag"), lagTable, heading("Recent runs"), runTable]);
}

function showRun(job, run) {
  state.detail = null;
  const rows = (run.tasks || []).map((t) => {
    const log = document.createElement("td");
    const pre = document.createElement("pre");
    pre.className = "log";
    pre.textContent = [t.log, t.error].filter((x) => x).join("\n") || "—";
    log.appendChild(pre);
    return [cell(t.task), cell(t.attempt), badge(t.state), cell(when(t.started_at)), log];
  });
  openDetail("Job " + job.name + " · run " + run.id + " · " + run.state,
    [table(["Task", "Attempt", "State", "Started", "Log"], rows)]);
}

// -- polling -----------------------------------------------------------------------------
const panels = [
  ["/api/v1/pipelines", renderPipelines],
  ["/api/v1/incidents?limit=20", renderIncidents],
  ["/api/v1/actions/summary", renderActions],
  ["/api/v1/models", renderModels],
  ["/api/v1/drift?limit=200", renderDrift],
  ["/api/v1/dlq/reasons", renderDlq],
  ["/api/v1/streams", renderStreams],
  ["/api/v1/jobs", renderJobs],
];
let lastHistory = 0;

async function refresh() {
  const work = panels.map(async ([path, render]) => { render(await get(path)); });
  if (Date.now() - lastHistory > HISTORY_POLL_MS || !state.throughput) {
    lastHistory = Date.now();
    work.push(get("/api/v1/throughput?minutes=60&buckets=60").then(renderThroughput));
  }
  const results = await Promise.allSettled(work);
  await Promise.allSettled([refreshSeries()]);
  const failed = results.filter((r) => r.status === "rejected");
  document.getElementById("live").className = "dot " + (failed.length < results.length ? "on" : "off");
  document.getElementById("updated").textContent = failed.length === results.length
    ? "API unreachable" : "updated " + new Date().toLocaleTimeString()
      + (failed.length ? " (" + failed.length + " panels unavailable)" : "");
  document.body.dataset.loaded = "true";
}

document.getElementById("keyform").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem("sluice-api-key", document.getElementById("apikey").value.trim());
  document.getElementById("keyform").hidden = true;
  refresh();
});
document.getElementById("detail-close").addEventListener("click", () => {
  document.getElementById("detail-card").hidden = true;
  state.detail = null;
});
window.addEventListener("resize", () => { if (state.throughput) { renderThroughput(state.throughput); } });

refresh();
setInterval(refresh, POLL_MS);
