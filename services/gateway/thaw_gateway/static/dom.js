// Building the page: elements from data (always as text, never as HTML) and
// the formats every view shares.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// columns: [heading, row => cell content]; rowAttrs: row => attributes of its <tr>.
export function table(columns, rows, { empty = "None yet.", id, rowAttrs, after } = {}) {
  if (!rows.length) return h("p", { class: "empty", id }, empty);
  const body = [];
  for (const row of rows) {
    body.push(h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map(([, cell]) => h("td", {}, cell(row)))));
    const extra = after && after(row);
    if (extra) body.push(h("tr", { class: "detail" }, h("td", { colspan: columns.length }, extra)));
  }
  return h("table", { id },
    h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", {}, heading)))),
    h("tbody", {}, body));
}

export const section = (title, ...children) => h("section", {}, h("h2", {}, title), ...children);
export const link = (href, text) => h("a", { href }, text);
export const badge = (state) => h("span", { class: `badge s-${state}` }, state);
export const mono = (text) => h("code", {}, text);

export function when(t) {
  return t ? new Date(t * 1000).toLocaleString() : "—";
}

export function ago(t) {
  if (!t) return "—";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function secs(s) {
  if (!s) return "—";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(2)} s`;
  return `${Math.round(s / 60)} min`;
}

export function bytes(n) {
  if (n == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
