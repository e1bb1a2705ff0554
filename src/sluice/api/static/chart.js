// Sluice dashboard charts: a time-series line chart with readable axes, and sparklines.
"use strict";

const COLORS = ["#2563eb", "#15a36b", "#d98a04", "#9333ea", "#d23b3b", "#0891b2"];

// A "nice" step (1, 2 or 5 times a power of ten) giving about `count` ticks up to `max`.
function niceStep(max, count) {
  const raw = max / count;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const unit = raw / power;
  return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
}

function tickLabel(value, step) {
  const digits = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
  if (Math.abs(value) >= 10000) {
    return (value / 1000).toLocaleString(undefined, { maximumFractionDigits: 1 }) + "k";
  }
  return value.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function timeLabel(ms, span) {
  const d = new Date(ms);
  if (span > 36 * 3600 * 1000) { return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }); }
  const opts = { hour: "2-digit", minute: "2-digit" };
  if (span < 10 * 60 * 1000) { opts.second = "2-digit"; }
  return d.toLocaleTimeString(undefined, opts);
}

function prepareCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

// series: [{name, color, points: [[ms, value], ...], marks: [[ms, value], ...]}]
function lineChart(canvas, series, options) {
  const { ctx, width, height } = prepareCanvas(canvas);
  const pad = { left: 58, right: 14, top: 10, bottom: 26 };
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  let tMin = Infinity, tMax = -Infinity, vMin = Infinity, vMax = -Infinity;
  for (const s of series) {
    for (const [t, v] of s.points) {
      tMin = Math.min(tMin, t); tMax = Math.max(tMax, t);
      if (Number.isFinite(v)) { vMin = Math.min(vMin, v); vMax = Math.max(vMax, v); }
    }
  }
  if (options && options.start !== undefined) { tMin = options.start; }
  if (options && options.end !== undefined) { tMax = options.end; }
  if (!Number.isFinite(tMin) || tMax <= tMin) { tMax = (Number.isFinite(tMin) ? tMin : Date.now()) + 1000; }
  if (!Number.isFinite(tMin)) { tMin = tMax - 1000; }
  if (!Number.isFinite(vMax)) { vMin = 0; vMax = 1; }
  if (options && options.zero) { vMin = Math.min(0, vMin); }
  if (vMax - vMin < 1e-9) { vMax = vMin + (Math.abs(vMin) || 1); }
  const step = niceStep(vMax - vMin, 4);
  const low = Math.floor(vMin / step) * step, high = Math.ceil(vMax / step) * step;
  const x = (t) => pad.left + plotW * (t - tMin) / (tMax - tMin);
  const y = (v) => pad.top + plotH * (1 - (v - low) / (high - low));
  ctx.font = "11px system-ui, sans-serif"; ctx.lineWidth = 1;
  for (let v = low; v <= high + step / 2; v += step) {
    ctx.strokeStyle = "#e3e7ee"; ctx.beginPath(); ctx.moveTo(pad.left, y(v)); ctx.lineTo(width - pad.right, y(v)); ctx.stroke();
    ctx.fillStyle = "#6b7585"; ctx.textAlign = "right"; ctx.fillText(tickLabel(v, step), pad.left - 8, y(v) + 4);
  }
  ctx.textAlign = "center";
  const span = tMax - tMin;
  for (let i = 0; i <= 4; i++) {
    const t = tMin + (span * i) / 4;
    ctx.textAlign = i === 0 ? "left" : i === 4 ? "right" : "center";
    ctx.fillText(timeLabel(t, span), x(t), height - 8);
  }
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = 2; ctx.beginPath();
    let started = false;
    for (const [t, v] of s.points) {
      if (!Number.isFinite(v)) { started = false; continue; }
      if (started) { ctx.lineTo(x(t), y(v)); } else { ctx.moveTo(x(t), y(v)); started = true; }
    }
    ctx.stroke();
    for (const [t, v] of s.marks || []) {
      ctx.fillStyle = "#d23b3b"; ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.arc(x(t), y(v), 4.5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    }
  }
}

function sparkline(canvas, values, color) {
  const { ctx, width, height } = prepareCanvas(canvas);
  const max = Math.max(...values, 0);
  ctx.strokeStyle = "#e3e7ee"; ctx.beginPath(); ctx.moveTo(0, height - 1); ctx.lineTo(width, height - 1); ctx.stroke();
  if (!values.length) { return; }
  ctx.strokeStyle = color; ctx.fillStyle = color + "33"; ctx.lineWidth = 1.5;
  ctx.beginPath(); ctx.moveTo(0, height - 1);
  values.forEach((v, i) => {
    const px = values.length > 1 ? (width * i) / (values.length - 1) : width;
    ctx.lineTo(px, height - 1 - (max > 0 ? (height - 4) * v / max : 0));
  });
  ctx.lineTo(width, height - 1); ctx.closePath(); ctx.fill(); ctx.stroke();
}

function legend(element, items) {
  element.replaceChildren(...items.map(([name, color]) => {
    const item = document.createElement("span");
    item.style.setProperty("--c", color);
    item.textContent = name;
    return item;
  }));
}
