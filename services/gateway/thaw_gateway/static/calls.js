// Recent calls (GET /v1/calls): plots of calls per minute and latency per
// function, filters, and a table whose failed calls show their traceback.

import { api } from "./api.js";
import { ago, badge, fill, h, mono, secs, table } from "./dom.js";
import { barChart } from "./plot.js";

const STATUSES = ["success", "failure", "timeout", "cancelled", "terminated", "pending"];
const MINUTES = 30;

export function callsSection(ctx, { app = "" } = {}) {
  const fn = h("select", { id: "calls-function", onchange: () => draw() }, h("option", { value: "" }, "all functions"));
  const status = h("select", { id: "calls-status", onchange: () => draw() },
    h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  const plots = h("div", { class: "plots" });
  const list = h("div", { id: "calls" });
  const open = new Set(); // calls whose traceback is shown, kept across refreshes
  let calls = [];

  function draw() {
    const names = [...new Set(calls.map((c) => `${c.app}.${c.function}`))].sort();
    const chosen = fn.value;
    fill(fn, h("option", { value: "" }, "all functions"), names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
    const shown = calls.filter((c) => (!fn.value || `${c.app}.${c.function}` === fn.value) && (!status.value || c.status === status.value));
    fill(plots, perMinute(shown), latency(shown));
    fill(list, table([
      ["call", (c) => mono(c.call_id)],
      ["function", (c) => (app ? c.function : `${c.app}.${c.function}`)],
      ["status", (c) => badge(c.status)],
      ["made", (c) => ago(c.created_at)],
      ["duration", (c) => secs(c.duration_s)],
      ["attempts", (c) => c.attempts || "—"],
      ["container", (c) => (c.container_id ? mono(c.container_id) : "—")],
    ], shown, {
      empty: "No calls yet.",
      rowAttrs: (c) => ({ "data-call": c.call_id, "data-status": c.status }),
      after: (c) => c.error && errorDetail(c, open),
    }));
  }

  ctx.every(async () => {
    const query = new URLSearchParams({ limit: "200" });
    if (app) query.set("app", app);
    calls = (await api(`/v1/calls?${query}`, { signal: ctx.signal })).calls;
    draw();
  });
  return h("div", {}, h("div", { class: "filters" }, fn, status), plots, list);
}

function errorDetail(call, open) {
  const details = h("details", { open: open.has(call.call_id), class: "error",
    ontoggle: (e) => (e.target.open ? open.add(call.call_id) : open.delete(call.call_id)) },
  h("summary", {}, call.error), h("pre", { class: "traceback" }, call.traceback || "(no traceback)"));
  return details;
}

function perMinute(calls) {
  const now = Math.floor(Date.now() / 60000);
  const bars = [];
  for (let m = now - MINUTES + 1; m <= now; m++) {
    bars.push({ label: new Date(m * 60000).toTimeString().slice(0, 5), values: {} });
  }
  for (const c of calls) {
    const i = Math.floor(c.created_at / 60) - (now - MINUTES + 1);
    if (i >= 0 && i < MINUTES) bars[i].values[c.status] = (bars[i].values[c.status] || 0) + 1;
  }
  return barChart({ title: "Calls per minute", bars, series: STATUSES, id: "plot-calls-per-minute" });
}

function latency(calls) {
  const by = new Map();
  for (const c of calls) {
    if (!c.duration_s) continue;
    const key = c.function;
    if (!by.has(key)) by.set(key, []);
    by.get(key).push(c.duration_s);
  }
  const bars = [...by].sort().map(([label, d]) => {
    d.sort((a, b) => a - b);
    const q = (p) => d[Math.min(d.length - 1, Math.floor(p * d.length))];
    return { label, values: { p50: q(0.5), p95: q(0.95) } };
  });
  return barChart({ title: "Latency per function", bars, series: ["p50", "p95"], unit: "s", stacked: false, id: "plot-latency" });
}
