// Stored things: secrets (names and keys only: the API never answers values)
// and volumes, whose files can be browsed.

import { api, enc } from "./api.js";
import { ago, bytes, fill, h, link, mono, section, table, when } from "./dom.js";

export function secretsView(ctx) {
  const list = h("div", { id: "secrets" });
  ctx.every(async () => {
    const secrets = await api("/v1/secrets", { signal: ctx.signal });
    fill(list, table([
      ["name", (s) => s.name],
      ["keys", (s) => s.keys.join(", ")],
      ["created", (s) => when(s.created_at)],
      ["updated", (s) => ago(s.updated_at)],
    ], secrets, { empty: "No secrets: thaw secret create NAME KEY=VALUE" }));
  });
  return section("Secrets", list);
}

export function volumesView(ctx) {
  const list = h("div", { id: "volumes" });
  ctx.every(async () => {
    const volumes = await api("/v1/volumes", { signal: ctx.signal });
    fill(list, table([
      ["name", (v) => link(`#/volumes/${enc(v.name)}`, v.name)],
      ["id", (v) => mono(v.volume_id)],
      ["version", (v) => v.version],
      ["size", (v) => bytes(v.size_bytes)],
      ["files", (v) => v.files],
      ["updated", (v) => ago(v.updated_at)],
    ], volumes, { empty: "No volumes." }));
  });
  return section("Volumes", list);
}

// One directory of a volume: #/volumes/<name>/<path...>
export function volumeView(ctx, name, path) {
  const list = h("div", { id: "entries" });
  ctx.every(async () => {
    const listing = await api(`/v1/volumes/${enc(name)}/entries?path=${enc(path || "/")}`, { signal: ctx.signal });
    const entries = listing.entries.filter((e) => !e.deleted);
    fill(list, table([
      ["path", (e) => (e.kind === "dir" ? link(`#/volumes/${enc(name)}/${e.path}`, `${e.path}/`) : e.path)],
      ["kind", (e) => e.kind],
      ["size", (e) => (e.kind === "dir" ? "—" : bytes(e.size))],
      ["modified", (e) => when(e.mtime)],
      ["version", (e) => e.version],
    ], entries, { empty: "Empty directory." }));
  });
  const parts = (path || "").split("/").filter(Boolean);
  const crumbs = parts.map((p, i) => [" / ", link(`#/volumes/${enc(name)}/${parts.slice(0, i + 1).join("/")}`, p)]);
  return h("div", {}, h("h1", {}, link("#/volumes", "Volumes"), " / ", link(`#/volumes/${enc(name)}`, name), crumbs), list);
}
