// Small helpers shared by the views: DOM building, durations, time ranges, units, formats.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function select(id, label, options, value, onchange) {
  const el = h("select", { id, onchange: () => onchange(el.value) },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
  return h("div", { class: "field" }, h("label", { for: id }, label), el);
}

const UNITS = { s: 1, m: 60, h: 3600, d: 86400 };

export function seconds(duration) {
  const m = /^(\d+)([smhd])$/.exec(duration || "");
  return m ? Number(m[1]) * UNITS[m[2]] : NaN;
}

export const PRESETS = ["15m", "1h", "6h", "24h", "7d"];
export const BUCKETS = ["10s", "30s", "1m", "2m", "5m", "10m", "15m", "30m", "1h", "3h", "6h", "1d"];

// A bucket giving about `target` buckets over the range (the API allows up to 11,000).
export function autoBucket(spanSeconds, target = 100) {
  for (const b of BUCKETS) if (spanSeconds / seconds(b) <= target) return b;
  return "1d";
}

// The range a view asks for: a preset relative to now, or absolute from/to (ISO strings).
export function resolveRange(params) {
  const from = params.get("from"), to = params.get("to");
  if (from && to && !Number.isNaN(Date.parse(from)) && !Number.isNaN(Date.parse(to))) {
    return { start: new Date(from), end: new Date(to), preset: null };
  }
  const preset = PRESETS.includes(params.get("range")) ? params.get("range") : "1h";
  const end = new Date();
  return { start: new Date(end - seconds(preset) * 1000), end, preset };
}

export function setRange(params, start, end) {
  params.delete("range");
  params.set("from", new Date(start).toISOString());
  params.set("to", new Date(end).toISOString());
}

export function setPreset(params, preset) {
  params.delete("from");
  params.delete("to");
  params.set("range", preset);
}

// The unit a metric's name announces (Prometheus-style suffixes); "" when it says none.
export function unitOf(name) {
  const n = (name || "").toLowerCase();
  const rules = [
    [/(^|_)ms($|_)|millis/, "ms"], [/(^|_)(seconds|secs|s)($|_)/, "s"],
    [/bytes/, "bytes"], [/percent|pct|usage|ratio/, n.includes("ratio") ? "ratio" : "%"],
    [/(^|_)(count|total|requests)($|_)/, "count"], [/rate/, "per s"],
  ];
  for (const [re, unit] of rules) if (re.test(n)) return unit;
  return "";
}

export function zoneName(tz) {
  return tz === "UTC" ? "UTC" : Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
}

export function formatTime(value, tz, withDate = false) {
  const d = value instanceof Date ? value : new Date(value);
  const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  if (withDate) Object.assign(opts, { year: "numeric", month: "2-digit", day: "2-digit" });
  if (tz === "UTC") opts.timeZone = "UTC";
  return new Intl.DateTimeFormat("en-CA", opts).format(d).replace(",", "");
}

// <input type="datetime-local"> value for a date in the chosen zone, and back.
export function toLocalInput(date, tz) {
  const d = new Date(date);
  if (tz === "UTC") return d.toISOString().slice(0, 16);
  const off = d.getTimezoneOffset() * 60000;
  return new Date(d - off).toISOString().slice(0, 16);
}

export function fromLocalInput(text, tz) {
  if (!text) return null;
  const d = tz === "UTC" ? new Date(`${text}:00Z`) : new Date(text);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function formatNumber(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const abs = Math.abs(v);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-3)) return v.toExponential(2);
  return v.toLocaleString("en-US", { maximumFractionDigits: abs < 10 ? 3 : 1 });
}

export const PALETTE = ["#1f5fbf", "#c2410c", "#0f7a4a", "#7c3aed", "#a16207", "#be185d",
  "#0e7490", "#4d7c0f"];
