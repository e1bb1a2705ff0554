// Sluice dashboard: polls the REST API and renders tables and a throughput chart.
"use strict";

const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const COLORS = ["#2563eb", "#15a36b", "#d98a04", "#9333ea", "#d23b3b", "#0891b2"];
const history = new Map();  // pipeline -> [[time, events/s], ...]

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
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (className) { td.className = className; }
  return td;
}

function badge(text) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = "badge " + String(text || "").toLowerCase();
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
}

function number(value, digits) {
  if (typeof value !== "number") { return value; }
  return value.toLocaleString(undefined, { maximumFractionDigits: digits || 0 });
}

function totalLag(lag) {
  if (lag && typeof lag === "object") { return Object.values(lag).reduce((a, b) => a + b, 0); }
  return lag;
}

function when(value) {
  if (!value) { return null; }
  const date = new Date(value);
  return isNaN(date) ? String(value) : date.toLocaleString();
}

function renderPipelines(pipelines) {
  fill("pipelines", pipelines, (p) => [
    cell(p.name), badge(p.state), cell(number(p.events_per_second, 1), "num"),
    cell(number(p.events_total), "num"), cell(number(totalLag(p.lag)), "num"),
    cell(when(p.last_checkpoint)), cell(number(p.errors), "num"),
  ]);
  const now = Date.now();
  for (const p of pipelines) {
    const points = history.get(p.name) || [];
    points.push([now, Number(p.events_per_second) || 0]);
    history.set(p.name, points.filter(([t]) => now - t <= HISTORY_MS));
  }
  drawChart();
}

function drawChart() {
  const canvas = document.getElementById("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const pad = { left: 56, right: 12, top: 10, bottom: 24 };
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  let max = 1;
  for (const points of history.values()) { for (const [, v] of points) { max = Math.max(max, v); } }
  max *= 1.15;
  ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#6b7585"; ctx.strokeStyle = "#e3e7ee";
  for (let i = 0; i <= 4; i++) {
    const y = pad.top + plotH - (plotH * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.left, y); ctx.lineTo(width - pad.right, y); ctx.stroke();
    ctx.fillText(number((max * i) / 4, 0), 6, y + 4);
  }
  ctx.fillText("-5 min", pad.left, height - 6);
  ctx.fillText("now", width - pad.right - 22, height - 6);
  const now = Date.now();
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  [...history.keys()].forEach((name, index) => {
    const color = COLORS[index % COLORS.length];
    const points = history.get(name);
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    points.forEach(([t, v], i) => {
      const x = pad.left + plotW * (1 - (now - t) / HISTORY_MS);
      const y = pad.top + plotH * (1 - v / max);
      if (i === 0) { ctx.moveTo(x, y); } else { ctx.lineTo(x, y); }
    });
    ctx.stroke();
    const [lastT, lastV] = points[points.length - 1] || [now, 0];
    ctx.fillStyle = color; ctx.beginPath();
    ctx.arc(pad.left + plotW * (1 - (now - lastT) / HISTORY_MS), pad.top + plotH * (1 - lastV / max),
      3, 0, 2 * Math.PI);
    ctx.fill();
    const item = document.createElement("span");
    item.style.setProperty("--c", color);
    item.textContent = name;
    legend.appendChild(item);
  });
}

function anomalyModels(row) {
  return Object.keys(row).filter((k) => k.endsWith("_anomaly") && row[k] === true)
    .map((k) => k.slice(0, -"_anomaly".length));
}

function anomalyReason(row, models) {
  const reasons = models.map((m) => row[m + "_reason"]).filter((r) => r);
  return reasons.length ? reasons.join("; ") : null;
}

function anomalyKey(row) {
  const key = Object.keys(row).find((k) => k === "key" || k.endsWith("_id"));
  return key ? row[key] : null;
}

function renderAnomalies(page) {
  fill("anomalies", page.rows, (row) => {
    const models = anomalyModels(row);
    return [cell(when(row.ts || row.event_time || row.timestamp)), cell(row.table),
      cell(anomalyKey(row)), cell(models.join(", ")), cell(anomalyReason(row, models), "reason")];
  });
}

function renderModels(models) {
  fill("models", models, (m) => [cell(m.name), cell(m.version), badge(m.stage || m.kind),
    cell(m.format || m.type)]);
}

function renderDlq(summary) {
  fill("dlq", summary, (d) => [cell(d.pipeline), cell(d.stage), cell(number(d.count), "num"),
    cell(d.last_reason, "reason")]);
}

function renderStreams(streams) {
  fill("streams", streams, (s) => [cell(s.name), cell(number(s.end_offset), "num"),
    cell(number(s.lag), "num")]);
}

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
      const state = (run.task_states || {})[task.name] || "none";
      const square = document.createElement("span");
      square.className = "sq " + state;
      square.title = task.name + " · " + (when(run.interval_start || run.created_at) || "") + " · " + state;
      row.appendChild(square);
    }
    grid.appendChild(row);
  }
  td.appendChild(grid);
  return td;
}

function renderJobs(jobs) {
  fill("jobs", jobs, (j) => {
    const run = (j.runs && j.runs[0]) || {};
    return [cell(j.name), cell(j.schedule), badge(run.state || "no runs"), runGrid(j)];
  });
}

const panels = [
  ["/api/v1/pipelines", renderPipelines],
  ["/api/v1/anomalies?limit=15", renderAnomalies],
  ["/api/v1/models", renderModels],
  ["/api/v1/dlq/summary", renderDlq],
  ["/api/v1/streams", renderStreams],
  ["/api/v1/jobs", renderJobs],
];

async function refresh() {
  const results = await Promise.allSettled(panels.map(async ([path, render]) => {
    render(await get(path));
  }));
  const failed = results.filter((r) => r.status === "rejected");
  document.getElementById("live").className = "dot " + (failed.length < panels.length ? "on" : "off");
  document.getElementById("updated").textContent = failed.length === panels.length
    ? "API unreachable" : "updated " + new Date().toLocaleTimeString()
      + (failed.length ? " (" + failed.length + " panels unavailable)" : "");
}

document.getElementById("keyform").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem("sluice-api-key", document.getElementById("apikey").value.trim());
  document.getElementById("keyform").hidden = true;
  refresh();
});

refresh();
setInterval(refresh, POLL_MS);
