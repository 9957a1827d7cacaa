// The cluster: containers (with their counts over time and how they
// started), nodes, snapshots.

import { api } from "./api.js";
import { ago, badge, bytes, fill, h, mono, section, table } from "./dom.js";
import { barChart } from "./plot.js";

const STATES = ["starting", "ready", "draining", "stopped", "failed"];
const SAMPLES = 30;
// Counts by state, one sample per refresh while this tab is open.
const history = [];

export function containersTable(containers) {
  return table([
    ["container", (c) => mono(c.container_id)],
    ["function", (c) => `${c.app}.${c.function}`],
    ["version", (c) => c.version],
    ["node", (c) => c.node_id || "—"],
    ["state", (c) => badge(c.state)],
    ["load", (c) => `${c.inflight}/${c.max_inputs}`],
    ["started", (c) => (c.restored ? "restored from a snapshot" : "cold start")],
    ["since", (c) => ago(c.started_at)],
    ["error", (c) => c.error || ""],
  ], containers, { empty: "No containers.", rowAttrs: (c) => ({ "data-container": c.container_id }) });
}

export function containersView(ctx) {
  const plots = h("div", { class: "plots" });
  const list = h("div", { id: "containers" });
  ctx.every(async () => {
    const { containers } = await api("/v1/containers", { signal: ctx.signal });
    const counts = {};
    for (const c of containers) counts[c.state] = (counts[c.state] || 0) + 1;
    history.push({ label: new Date().toTimeString().slice(0, 8), values: counts });
    if (history.length > SAMPLES) history.shift();
    const restored = containers.filter((c) => c.restored).length;
    fill(plots,
      barChart({ title: "Containers over time", bars: history, series: STATES, id: "plot-containers" }),
      barChart({ title: "Cold starts against restores (live containers)", series: ["cold", "restored"], id: "plot-cold-restores",
        bars: [{ label: "containers", values: { cold: containers.length - restored, restored } }] }));
    fill(list, containersTable(containers));
  });
  return section("Containers", plots, list);
}

export function nodesView(ctx) {
  const list = h("div", { id: "nodes" });
  ctx.every(async () => {
    const nodes = await api("/v1/nodes", { signal: ctx.signal });
    fill(list, table([
      ["node", (n) => mono(n.node_id)],
      ["state", (n) => badge(n.state)],
      ["CPUs", (n) => n.cores],
      ["memory", (n) => bytes(n.memory_mb * 1024 * 1024)],
      ["GPUs", (n) => n.gpus.map((g) => `${g.name} (${bytes(g.memory_mb * 1024 * 1024)})`).join(", ") || "—"],
      ["fingerprint class", (n) => mono((n.fingerprint_id || "—").slice(0, 12))],
      ["last seen", (n) => ago(n.last_seen)],
    ], nodes, { empty: "No nodes have joined." }));
  });
  return section("Nodes", list);
}

export function snapshotsView(ctx) {
  const plots = h("div", { class: "plots" });
  const list = h("div", { id: "snapshots" });
  ctx.every(async () => {
    const snaps = await api("/v1/snapshots", { signal: ctx.signal });
    const bars = snaps.filter((s) => s.state !== "obsolete").map((s) => ({
      label: `${s.function} v${s.version}`, values: { restored: s.restores, failed: s.failures } }));
    fill(plots, barChart({ title: "Restores per snapshot", bars, series: ["restored", "failed"] }));
    fill(list, snapshotsTable(snaps));
  });
  return section("Snapshots", plots, list);
}

export function snapshotsTable(snaps) {
  return table([
    ["snapshot", (s) => mono(s.snapshot_id)],
    ["function", (s) => `${s.app}.${s.function}`],
    ["version", (s) => s.version],
    ["fingerprint class", (s) => mono(s.fingerprint_id)],
    ["state", (s) => badge(s.state)],
    ["size", (s) => bytes(s.size)],
    ["restores", (s) => s.restores],
    ["failures", (s) => s.failures],
    ["made", (s) => ago(s.created_at)],
  ], snaps, { empty: "No snapshots." });
}
