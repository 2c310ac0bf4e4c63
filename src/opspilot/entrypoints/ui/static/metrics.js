// The metrics view: pick a metric (discovery endpoints), overlay several series, see the
// anomalies as markers and the histogram; drag across the chart to zoom (re-queries).

import { histogramChart, timeChart } from "./charts.js";
import {
  autoBucket, BUCKETS, fromLocalInput, h, PALETTE, PRESETS, resolveRange, select, setPreset,
  setRange, toLocalInput, unitOf, zoneName,
} from "./util.js";

const AGGREGATIONS = ["avg", "sum", "min", "max", "count", "p50", "p90", "p95", "p99"];
const MAX_SERIES = 20;

// A series in the URL: `name|service|aggregation|k:v,k2:v2` (empty parts allowed).
export function parseSeries(text) {
  const [name, service = "", aggregation = "avg", tags = ""] = text.split("|");
  return { name, service, aggregation: AGGREGATIONS.includes(aggregation) ? aggregation : "avg", tags };
}

export function formatSeries(s) {
  return [s.name, s.service || "", s.aggregation || "avg", s.tags || ""].join("|");
}

function tagsObject(text) {
  const out = {};
  for (const pair of (text || "").split(",")) {
    const at = pair.indexOf(":");
    if (at > 0) out[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return out;
}

function selectorLabel(s) {
  const filters = [s.service && `service=${s.service}`, ...(s.tags ? s.tags.split(",") : [])]
    .filter(Boolean);
  return `${s.name}${filters.length ? `{${filters.join(", ")}}` : ""}`;
}

export function seriesLabel(s) {
  return `${selectorLabel(s)} ${s.aggregation}`;
}

export function renderMetrics(ctx) {
  const { api, params, root, navigate, signal } = ctx;
  const series = params.getAll("s").map(parseSeries).filter((s) => s.name).slice(0, MAX_SERIES);
  const range = resolveRange(params);
  const tz = params.get("tz") === "UTC" ? "UTC" : "local";
  const spanS = (range.end - range.start) / 1000;
  const bucket = BUCKETS.includes(params.get("bucket")) ? params.get("bucket") : autoBucket(spanS);
  const showAnomalies = params.get("anomalies") !== "0";
  const draft = series[0] ? { ...series[0] } : { name: "", service: "", aggregation: "avg", tags: "" };

  const update = (change, push = true) => {
    const next = new URLSearchParams(params);
    change(next);
    navigate(next, { push });
  };
  const setSeries = (list) => update((p) => {
    p.delete("s");
    for (const s of list) p.append("s", formatSeries(s));
  });

  // -- the picker (fed by /api/metrics/names, /services, /tags)
  const metricSel = h("select", { id: "metric", onchange: () => { draft.name = metricSel.value; draft.service = ""; draft.tags = ""; refreshFacets(); } });
  const serviceSel = h("select", { id: "service", onchange: () => { draft.service = serviceSel.value; } });
  const tagSel = h("select", { id: "tag", onchange: () => { draft.tags = tagSel.value; } });
  const aggSel = h("select", { id: "aggregation", onchange: () => { draft.aggregation = aggSel.value; } },
    AGGREGATIONS.map((a) => h("option", { value: a, selected: a === draft.aggregation }, a)));
  const picker = h("form", { class: "toolbar", "aria-label": "Series picker",
    onsubmit: (e) => { e.preventDefault(); if (draft.name) setSeries([{ ...draft }]); } },
  h("div", { class: "field" }, h("label", { for: "metric" }, "Metric"), metricSel),
  h("div", { class: "field" }, h("label", { for: "service" }, "Service"), serviceSel),
  h("div", { class: "field" }, h("label", { for: "tag" }, "Tag"), tagSel),
  h("div", { class: "field" }, h("label", { for: "aggregation" }, "Aggregation"), aggSel),
  h("div", { class: "field actions" },
    h("button", { type: "submit", id: "chart-it" }, "Chart"),
    h("button", { type: "button", id: "add-overlay", disabled: series.length >= MAX_SERIES,
      onclick: () => { if (draft.name) setSeries([...series, { ...draft }]); } }, "Add as overlay")));

  async function refreshFacets() {
    const window = { start_time: range.start.toISOString(), end_time: range.end.toISOString() };
    try {
      const [svc, tags] = draft.name ? await Promise.all([
        api.get("/api/metrics/services", { ...window, metric_name: draft.name }, signal),
        api.get("/api/metrics/tags", { ...window, metric_name: draft.name }, signal),
      ]) : [{ services: [] }, { tags: [] }];
      serviceSel.replaceChildren(h("option", { value: "" }, "any service"),
        ...svc.services.map((s) => h("option", { value: s, selected: s === draft.service }, s)));
      const pairs = tags.tags.flatMap((t) => t.values.map((v) => `${t.key}:${v}`));
      tagSel.replaceChildren(h("option", { value: "" }, "any tags"),
        ...pairs.map((p) => h("option", { value: p, selected: p === draft.tags }, p)));
    } catch (err) {
      if (!signal.aborted) ctx.status(`Could not list services and tags: ${err.message}`, true);
    }
  }

  async function loadNames() {
    try {
      const window = { start_time: new Date(Math.min(range.start, Date.now() - 86400e3)).toISOString(),
        end_time: new Date(Math.max(range.end, Date.now())).toISOString() };
      const doc = await api.get("/api/metrics/names", window, signal);
      const names = [...new Set([...doc.names, ...series.map((s) => s.name)])].sort();
      if (!draft.name && names.length) {
        // first visit: chart the first metric at once
        setSeries([{ name: names[0], service: "", aggregation: "avg", tags: "" }]);
        return;
      }
      metricSel.replaceChildren(...names.map((n) => h("option", { value: n, selected: n === draft.name }, n)));
      if (!names.length) chartBox.replaceChildren(h("p", { class: "empty" },
        "No metrics in the last 24 hours. Ingest some (or run `opspilot demo`)."));
      refreshFacets();
    } catch (err) {
      if (!signal.aborted) ctx.status(`Could not list metrics: ${err.message}`, true);
    }
  }

  // -- series legend chips, range, bucket, zone
  const chips = h("ul", { class: "chips", "aria-label": "Charted series" },
    series.map((s, i) => h("li", { class: "chip", style: `--c:${PALETTE[i % PALETTE.length]}` },
      h("span", { class: "swatch", "aria-hidden": "true" }), seriesLabel(s),
      h("button", { type: "button", class: "remove", "aria-label": `Remove ${seriesLabel(s)}`,
        onclick: () => setSeries(series.filter((_, j) => j !== i)) }, "×"))));

  const controls = rangeControls(params, range, tz, update, "metrics");
  const options = h("div", { class: "toolbar" },
    select("bucket", "Bucket", [["", `auto (${autoBucket(spanS)})`], ...BUCKETS.map((b) => [b, b])],
      params.get("bucket") || "", (v) => update((p) => (v ? p.set("bucket", v) : p.delete("bucket")), false)),
    select("tz", "Time zone", [["local", `local (${zoneName("local")})`], ["UTC", "UTC"]], tz,
      (v) => update((p) => p.set("tz", v), false)),
    h("div", { class: "field check" },
      h("input", { type: "checkbox", id: "anomalies", checked: showAnomalies,
        onchange: (e) => update((p) => p.set("anomalies", e.target.checked ? "1" : "0"), false) }),
      h("label", { for: "anomalies" }, "Mark anomalies (anomaly score ≥ 0.75)")));

  const unit = series.length ? unitOf(series[0].name) : "";
  const mixed = new Set(series.map((s) => unitOf(s.name))).size > 1;
  const info = h("p", { class: "hint", id: "chart-info" });
  const chartBox = h("div", { class: "chart", id: "chart", role: "img",
    "aria-label": `Chart of ${series.map(seriesLabel).join(", ") || "nothing yet"}` });
  const histBox = h("div", { class: "chart", id: "histogram", role: "img",
    "aria-label": series[0] ? `Histogram of ${selectorLabel(series[0])}` : "Histogram" });
  root.append(
    h("h2", { class: "visually-hidden" }, "Metrics"),
    picker, chips, controls, options, info, chartBox,
    h("h3", {}, "Histogram ", h("span", { class: "sub" }, series[0] ? `of ${selectorLabel(series[0])}: every raw value in the range` : "")),
    histBox,
  );
  loadNames();
  if (!series.length) return;

  const window = { start_time: range.start.toISOString(), end_time: range.end.toISOString() };
  const started = performance.now();
  chartBox.classList.add("loading");
  const overlay = api.post("/api/metrics/query-multiple", {
    metrics: series.map((s) => ({ name: s.name, service: s.service || undefined,
      aggregation: s.aggregation, tags: tagsObject(s.tags) })),
    ...window, time_bucket: bucket,
  }, signal);
  const anomalies = showAnomalies ? Promise.all(series.map((s) => api.get("/api/metrics/anomalies", {
    metric_name: s.name, service_name: s.service, tags: s.tags, ...window, time_bucket: bucket,
    method: "robust",
  }, signal).catch((err) => ({ anomalies: [], error: err.message })))) : Promise.resolve([]);

  Promise.all([overlay, anomalies]).then(([doc, found]) => {
    if (signal.aborted) return;
    chartBox.classList.remove("loading");
    const lines = doc.series.map((s, i) => ({ label: seriesLabel(series[i]), points: s.points }));
    const markers = found.map((a, i) => ({ label: `anomalies: ${series[i].name}${series[i].service ? ` (${series[i].service})` : ""}`,
      of: i, at: a.anomalies.map((x) => Date.parse(x.timestamp) / 1e3) })).filter((m) => m.at.length);
    const points = doc.series.reduce((n, s) => n + s.points.length, 0);
    const anomalyCount = markers.reduce((n, m) => n + m.at.length, 0);
    chartBox.replaceChildren();
    // The browser's own timing of the draw (bench/explorer_ui.py reads these measures): from
    // the answer to the frame after uPlot drew it.
    const drawn = performance.now();
    performance.measure("explorer:query", { start: started, end: drawn });
    if (!points) {
      chartBox.append(h("p", { class: "empty" }, "No points in this range. Try a longer range."));
    } else {
      timeChart(chartBox, { lines, markers, unit: mixed ? "" : unit, tz,
        onZoom: (from, to) => update((p) => setRange(p, from, to)) });
      requestAnimationFrame(() => setTimeout(() => performance.measure("explorer:chart", { start: drawn })));
    }
    chartBox.dataset.points = String(points);
    chartBox.dataset.anomalies = String(anomalyCount);
    chartBox.dataset.renderMs = String(Math.round(performance.now() - started));
    info.textContent = [
      `unit: ${mixed ? "mixed (see each series)" : unit || "none given by the name"}`,
      `time zone: ${zoneName(tz)}`, `bucket: ${bucket}`,
      showAnomalies ? `${anomalyCount} anomal${anomalyCount === 1 ? "y" : "ies"} marked` : null,
      "drag across the chart to zoom in",
    ].filter(Boolean).join(" · ");
  }).catch((err) => {
    if (signal.aborted) return;
    chartBox.classList.remove("loading");
    chartBox.replaceChildren(h("p", { class: "error", role: "alert" }, `Query failed: ${err.message}`));
  });

  const s0 = series[0];
  api.get("/api/metrics/histogram", { metric_name: s0.name, service_name: s0.service, tags: s0.tags,
    ...window, bins: 30 }, signal).then((doc) => {
    histBox.replaceChildren();
    if (!doc.total) histBox.append(h("p", { class: "empty" }, "No values in this range."));
    else histogramChart(histBox, doc, unitOf(s0.name));
  }).catch((err) => {
    if (!signal.aborted) histBox.replaceChildren(h("p", { class: "error" }, `Histogram failed: ${err.message}`));
  });
}

// Presets, a custom range in the chosen zone, and zoom out; shared with the logs view.
export function rangeControls(params, range, tz, update, idPrefix) {
  const fromIn = h("input", { type: "datetime-local", id: `${idPrefix}-from`, value: toLocalInput(range.start, tz) });
  const toIn = h("input", { type: "datetime-local", id: `${idPrefix}-to`, value: toLocalInput(range.end, tz) });
  const span = range.end - range.start;
  return h("div", { class: "toolbar range", role: "group", "aria-label": "Time range" },
    h("span", { class: "label" }, "Range"),
    PRESETS.map((p) => h("button", { type: "button", class: "preset", "aria-pressed": String(range.preset === p),
      onclick: () => update((q) => setPreset(q, p)) }, `last ${p}`)),
    h("form", { class: "custom", onsubmit: (e) => {
      e.preventDefault();
      const from = fromLocalInput(fromIn.value, tz), to = fromLocalInput(toIn.value, tz);
      if (from && to && from < to) update((q) => setRange(q, from, to));
    } },
    h("label", { for: `${idPrefix}-from` }, `From (${zoneName(tz)})`), fromIn,
    h("label", { for: `${idPrefix}-to` }, "to"), toIn,
    h("button", { type: "submit" }, "Apply")),
    h("button", { type: "button", id: `${idPrefix}-zoom-out`, onclick: () =>
      update((q) => setRange(q, range.start - span / 2, Math.min(Date.now(), range.end.getTime() + span / 2))) }, "Zoom out"));
}
