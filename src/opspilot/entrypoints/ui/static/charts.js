// uPlot charts: time series with anomaly markers, the histogram, and log volume bars.
/* global uPlot */

import { formatNumber, formatTime, PALETTE, zoneName } from "./util.js";

const FONT = "12px system-ui, sans-serif";
const AXIS = { stroke: "#333", grid: { stroke: "#e3e6ea" }, ticks: { stroke: "#c9ced6" },
  font: FONT };

function tzDate(tz) {
  return tz === "UTC" ? (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC") : undefined;
}

function widthOf(el) {
  return Math.max(320, Math.floor(el.getBoundingClientRect().width || 800));
}

// Keeps a chart as wide as its box, and destroys it when the box leaves the page.
function fit(chart, el) {
  const observer = new ResizeObserver(() => {
    if (!el.isConnected) { observer.disconnect(); chart.destroy(); return; }
    chart.setSize({ width: widthOf(el), height: chart.height });
  });
  observer.observe(el);
}

// Series on a shared time axis. `lines`: [{label, points: [{timestamp, value}], color}];
// `markers`: [{label, of (line index), at: [epoch seconds]}] drawn as points on that line.
export function timeChart(el, { lines, markers = [], unit, tz, onZoom, height = 320 }) {
  const parsed = lines.map((line) => line.points.map((p) => Date.parse(p.timestamp) / 1e3));
  const stamps = new Set(parsed.flat());
  const xs = Float64Array.from([...stamps].sort((a, b) => a - b));
  const index = new Map(Array.from(xs, (x, i) => [x, i]));
  const columns = lines.map((line, k) => {
    const ys = new Array(xs.length).fill(null);
    parsed[k].forEach((t, j) => { ys[index.get(t)] = line.points[j].value; });
    return ys;
  });
  const markerColumns = markers.map((m) => {
    const ys = new Array(xs.length).fill(null);
    for (const at of m.at) if (index.has(at)) ys[index.get(at)] = columns[m.of][index.get(at)];
    return ys;
  });
  const series = [
    { label: `time (${zoneName(tz)})`, value: (u, v) => (v == null ? "–" : formatTime(v * 1e3, tz, true)) },
    ...lines.map((line, i) => ({
      label: line.label, stroke: line.color || PALETTE[i % PALETTE.length], width: 1.5,
      spanGaps: false, value: (u, v) => `${formatNumber(v)}${unit ? ` ${unit}` : ""}`,
      points: { show: false },
    })),
    ...markers.map((m) => ({
      label: m.label, stroke: "#b91c1c", fill: "#fca5a5", width: 0, paths: () => null,
      points: { show: true, size: 11, width: 2, stroke: "#b91c1c", fill: "#fecaca" },
      value: (u, v) => (v == null ? "–" : "anomaly"),
    })),
  ];
  const opts = {
    width: widthOf(el), height, tzDate: tzDate(tz), series,
    scales: { x: { time: true } },
    axes: [
      { ...AXIS, label: `time (${zoneName(tz)})`, labelFont: FONT },
      { ...AXIS, label: unit || "value", labelFont: FONT, size: 64,
        values: (u, vals) => vals.map(formatNumber) },
    ],
    cursor: { drag: { x: true, y: false, setScale: false } },
    legend: { live: true },
    hooks: {
      setSelect: [(u) => {
        if (!onZoom || u.select.width < 4) return;
        const from = u.posToVal(u.select.left, "x");
        const to = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        onZoom(from * 1e3, to * 1e3);
      }],
    },
  };
  const chart = new uPlot(opts, [xs, ...columns, ...markerColumns], el);
  fit(chart, el);
  return chart;
}

export function histogramChart(el, doc, unit) {
  const xs = doc.bins.map((b) => (b.lower + b.upper) / 2);
  const counts = doc.bins.map((b) => b.count);
  const width = doc.bins.length ? doc.bins[0].upper - doc.bins[0].lower : 1;
  const opts = {
    width: widthOf(el), height: 200,
    scales: { x: { time: false, range: (u, min, max) => [min - width / 2, max + width / 2] } },
    series: [
      { label: unit ? `value (${unit})` : "value", value: (u, v) => formatNumber(v) },
      { label: "points", stroke: "#1f5fbf", fill: "rgba(31,95,191,0.35)", width: 1,
        paths: uPlot.paths.bars({ size: [0.95, 80] }), points: { show: false } },
    ],
    axes: [
      { ...AXIS, label: unit ? `value (${unit})` : "value", labelFont: FONT,
        values: (u, vals) => vals.map(formatNumber) },
      { ...AXIS, label: "points", labelFont: FONT, size: 56 },
    ],
    cursor: { drag: { x: false, y: false } },
  };
  const chart = new uPlot(opts, [xs, counts], el);
  fit(chart, el);
  return chart;
}

// Log volume: the matching logs and the errors among them per bucket (`errors` null: none
// can match), those in a spike bucket in their own dark series. `onPick` gets the clicked
// bucket's start (epoch ms).
export function volumeChart(el, { volume, errors, spikes, tz, onPick }) {
  const xs = volume.buckets.map((b) => Date.parse(b.timestamp) / 1e3);
  const errorCount = new Map((errors ? errors.buckets : []).map((b) => [Date.parse(b.timestamp) / 1e3, b.count]));
  const spike = new Set(spikes.buckets.filter((b) => b.spike).map((b) => Date.parse(b.timestamp) / 1e3));
  const errorColumn = xs.map((x) => errorCount.get(x) || 0);
  const spiking = xs.map((x, i) => (spike.has(x) && errorColumn[i] ? errorColumn[i] : null));
  const bars = uPlot.paths.bars({ size: [0.9, 40] });
  const opts = {
    width: widthOf(el), height: 140, tzDate: tzDate(tz),
    series: [
      { label: `time (${zoneName(tz)})`, value: (u, v) => (v == null ? "–" : formatTime(v * 1e3, tz, true)) },
      { label: "matching logs", stroke: "#6b7280", fill: "rgba(107,114,128,0.35)", paths: bars,
        points: { show: false } },
      { label: "errors among them", stroke: "#dc2626", fill: "rgba(220,38,38,0.45)", paths: bars,
        points: { show: false } },
      { label: "error spike", stroke: "#7f1d1d", fill: "#b91c1c", paths: bars,
        points: { show: false } },
    ],
    axes: [{ ...AXIS }, { ...AXIS, size: 48 }],
    cursor: { drag: { x: false, y: false } },
  };
  const chart = new uPlot(opts, [xs, volume.buckets.map((b) => b.count), errorColumn, spiking], el);
  chart.over.style.cursor = "pointer";
  chart.over.addEventListener("click", () => {
    const i = chart.cursor.idx;
    if (i !== null && i !== undefined && onPick) onPick(xs[i] * 1e3);
  });
  fit(chart, el);
  return chart;
}
