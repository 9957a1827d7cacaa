// Apps: the list, and one app's page (functions with their resources and
// schedules, its deploys, recent calls, containers, snapshots, live logs).

import { api, enc, streamLines } from "./api.js";
import { callsSection } from "./calls.js";
import { containersTable, snapshotsTable } from "./cluster.js";
import { ago, badge, fill, h, link, mono, section, secs, table, when } from "./dom.js";

const MAX_LOG_LINES = 2000;

export function appsView(ctx) {
  const list = h("div", { id: "apps" });
  ctx.every(async () => {
    const apps = await api("/v1/apps", { signal: ctx.signal });
    fill(list, table([
      ["id", (a) => mono(a.app_id)],
      ["name", (a) => link(`#/apps/${enc(a.name)}`, a.name)],
      ["state", (a) => [badge(a.state), a.ephemeral ? h("span", { class: "tag" }, "ephemeral") : null]],
      ["version", (a) => a.version],
      ["functions", (a) => a.functions.join(", ")],
      ["containers", (a) => a.containers],
      ["updated", (a) => ago(a.updated_at)],
    ], apps, { empty: "No apps deployed yet: thaw deploy app.py" }));
  });
  return section("Apps", list);
}

export function appView(ctx, name) {
  const summary = h("div", { id: "app-summary" });
  const functions = h("div", { id: "functions" });
  const containers = h("div", { id: "app-containers" });
  const snapshots = h("div", { id: "app-snapshots" });
  const versions = h("div", { id: "app-versions" });
  ctx.every(async () => {
    const detail = await api(`/v1/apps/${enc(name)}`, { signal: ctx.signal });
    const app = detail.app;
    fill(summary, h("dl", {},
      h("dt", {}, "id"), h("dd", {}, mono(app.app_id)),
      h("dt", {}, "state"), h("dd", {}, badge(app.state), app.ephemeral ? " (ephemeral)" : ""),
      h("dt", {}, "version"), h("dd", {}, app.version),
      h("dt", {}, "deployed"), h("dd", {}, when(app.updated_at))));
    const specs = await Promise.all(app.functions.map((f) =>
      api(`/v1/functions/${enc(app.name)}/${enc(f)}`, { signal: ctx.signal }).catch(() => null)));
    const schedules = new Map(detail.schedules.map((s) => [s.function, s]));
    fill(functions, functionsTable(specs.filter(Boolean), schedules));
    const [live, snaps, history] = await Promise.all([
      api(`/v1/containers?app=${enc(app.name)}`, { signal: ctx.signal }),
      api(`/v1/snapshots?app=${enc(app.name)}`, { signal: ctx.signal }),
      api(`/v1/apps/${enc(app.name)}/versions`, { signal: ctx.signal }),
    ]);
    fill(containers, containersTable(live.containers));
    fill(snapshots, snapshotsTable(snaps));
    fill(versions, table([
      ["version", (v) => [v.version, v.current ? h("span", { class: "tag" }, "current") : null]],
      ["deployed", (v) => when(v.created_at)],
      ["functions", (v) => v.functions.join(", ")],
      ["bundle", (v) => mono(v.bundle_sha256.slice(0, 12))],
    ], history.versions, { empty: "No deploys." }));
  });
  return h("div", {},
    h("h1", {}, link("#/apps", "Apps"), " / ", name),
    summary,
    section("Functions", functions),
    section("Versions", versions),
    section("Calls", callsSection(ctx, { app: name })),
    section("Containers", containers),
    section("Snapshots", snapshots),
    section("Logs", logsPanel(ctx, name)));
}

function functionsTable(infos, schedules) {
  return table([
    ["function", (i) => i.spec.name],
    ["kind", (i) => (i.spec.kind === "class" ? `class (${i.spec.methods.join(", ")})` : "function")],
    ["resources", (i) => resources(i.spec.resources)],
    ["timeout", (i) => secs(i.spec.timeout_s)],
    ["containers", (i) => autoscale(i.spec.autoscale)],
    ["inputs", (i) => i.spec.max_inputs],
    ["snapshot", (i) => (i.spec.enable_memory_snapshot ? "enabled" : "—")],
    ["schedule", (i) => schedule(schedules.get(i.spec.name))],
    ["secrets", (i) => i.spec.secrets.map((s) => s.name).join(", ") || "—"],
    ["version", (i) => i.version],
  ], infos, { id: "functions-table", empty: "No functions." });
}

const resources = (r) => `${r.cpu} CPU, ${r.memory_mb} MiB${r.gpu ? `, GPU ${r.gpu}` : ""}`;
const autoscale = (a) => `${a.min_containers}–${a.max_containers ?? "∞"}${a.buffer_containers ? ` (+${a.buffer_containers} warm)` : ""}`;

function schedule(s) {
  if (!s) return "—";
  const last = s.last_status ? [", last: ", badge(s.last_status)] : "";
  return [s.schedule, s.next_fire_at ? `, next ${when(s.next_fire_at)}` : "", last];
}

// The app's container output, stored lines first, then new ones as they come.
export function logsPanel(ctx, app) {
  const out = h("pre", { id: "logs", class: "logs" });
  const state = h("p", { class: "muted", id: "logs-state" }, "following (no lines yet)");
  streamLines(`/v1/apps/${enc(app)}/logs?follow=1`, (line) => {
    state.textContent = "live";
    out.append(h("span", { class: `log ${line.stream}` },
      `${new Date(line.at * 1000).toLocaleTimeString()} ${line.function} ${line.container_id.slice(0, 12)} ${line.line}\n`));
    while (out.childNodes.length > MAX_LOG_LINES) out.firstChild.remove();
    out.scrollTop = out.scrollHeight;
  }, ctx.signal).then(
    () => { state.textContent = "stream ended"; },
    (e) => { if (!ctx.signal.aborted) { state.textContent = `logs: ${e.message}`; ctx.fail(e); } });
  return h("div", {}, state, out);
}
