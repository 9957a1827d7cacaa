// Stacked bar charts in plain SVG: calls per minute, latency per function,
// containers over time, cold starts against restores.

const NS = "http://www.w3.org/2000/svg";
export const COLORS = {
  success: "#2e9d57", failure: "#d64545", timeout: "#e08a1e", cancelled: "#8a8f98",
  terminated: "#6b4fbb", pending: "#4a90d9", ready: "#2e9d57", busy: "#e08a1e",
  starting: "#4a90d9", draining: "#8a8f98", stopped: "#b8bcc4", failed: "#d64545",
  p50: "#4a90d9", p95: "#e08a1e", cold: "#4a90d9", restored: "#6b4fbb",
};

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text != null) el.textContent = String(text);
  return el;
}

const color = (name, i) => COLORS[name] || ["#4a90d9", "#2e9d57", "#e08a1e", "#d64545"][i % 4];

// bars: [{label, values: {series: number}}]; series: the stacking order.
// stacked=false draws each series side by side (p50 next to p95).
export function barChart({ title, bars, series, unit = "", stacked = true, id }) {
  const width = 560, height = 200, left = 44, bottom = 34, top = 24;
  const plotW = width - left - 8, plotH = height - top - bottom;
  const total = (b) => series.reduce((sum, k) => sum + (b.values[k] || 0), 0);
  const peak = Math.max(1e-9, ...bars.map((b) => (stacked ? total(b) : Math.max(0, ...series.map((k) => b.values[k] || 0)))));
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title, id: id || "" });
  svg.append(s("text", { x: left, y: 14, class: "title" }, title));
  for (const frac of [0, 0.5, 1]) {
    const y = top + plotH * (1 - frac);
    svg.append(s("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "grid" }));
    svg.append(s("text", { x: left - 4, y: y + 4, class: "axis", "text-anchor": "end" }, fmt(peak * frac, unit)));
  }
  const slot = plotW / Math.max(1, bars.length);
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  bars.forEach((bar, i) => {
    const x0 = left + slot * i + (slot - barW) / 2;
    let y = top + plotH;
    series.forEach((name, k) => {
      const v = bar.values[name] || 0;
      if (!v) return;
      const hgt = (v / peak) * plotH;
      const w = stacked ? barW : barW / series.length;
      const x = stacked ? x0 : x0 + w * k;
      const rect = s("rect", { x, y: stacked ? y - hgt : top + plotH - hgt, width: w, height: hgt, fill: color(name, k) });
      rect.append(s("title", {}, `${bar.label} ${name}: ${fmt(v, unit)}`));
      svg.append(rect);
      if (stacked) y -= hgt;
    });
    if (bars.length <= 16 || i % Math.ceil(bars.length / 8) === 0) {
      svg.append(s("text", { x: x0 + barW / 2, y: height - bottom + 14, class: "axis", "text-anchor": "middle" }, bar.label));
    }
  });
  let lx = left;
  series.forEach((name, k) => {
    svg.append(s("rect", { x: lx, y: height - 12, width: 10, height: 10, fill: color(name, k) }));
    svg.append(s("text", { x: lx + 14, y: height - 3, class: "axis" }, name));
    lx += 24 + name.length * 7;
  });
  return svg;
}

function fmt(v, unit) {
  if (unit === "s") {
    if (v === 0) return "0";
    if (v < 0.01) return `${(v * 1000).toFixed(1)}ms`;
    return v < 1 ? `${Math.round(v * 1000)}ms` : `${v.toFixed(1)}s`;
  }
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}
