// The logs view: search with filters, volume bars (error spikes highlighted, click to narrow),
// a virtualised list paging with the cursor as you scroll, context on click, the patterns
// view, and trace ids that show the whole trace.

import { volumeChart } from "./charts.js";
import { rangeControls } from "./metrics.js";
import { autoBucket, formatNumber, formatTime, h, resolveRange, seconds, select, setRange, zoneName } from "./util.js";
import { VirtualList } from "./vlist.js";

const LEVELS = ["FATAL", "ERROR", "WARN", "INFO", "DEBUG"];
const PAGE = 200;
const ROW_HEIGHT = 30;

// The constant runs of a pattern's template as a search: each run of words without a
// variable (`<*>`) becomes a quoted phrase.
export function patternSearch(template) {
  const runs = [];
  let run = [];
  for (const word of template.split(/\s+/)) {
    const clean = word.replaceAll('"', "");
    if (!clean || word.includes("<*>")) {
      if (run.length) runs.push(run);
      run = [];
    } else {
      run.push(clean);
    }
  }
  if (run.length) runs.push(run);
  return runs.map((r) => (r.length > 1 ? `"${r.join(" ")}"` : r[0])).join(" ");
}

export function renderLogs(ctx) {
  const { api, params, root, navigate, signal } = ctx;
  const range = resolveRange(params);
  const tz = params.get("tz") === "UTC" ? "UTC" : "local";
  const levels = (params.get("level") || "").split(",").filter((l) => LEVELS.includes(l));
  const mode = params.get("mode") === "patterns" ? "patterns" : "list";
  const filters = {
    search: params.get("q") || "", level: levels.join(","), service_name: params.get("service") || "",
    trace_id: params.get("trace") || "",
    start_time: range.start.toISOString(), end_time: range.end.toISOString(),
  };
  const update = (change, push = true) => {
    const next = new URLSearchParams(params);
    change(next);
    navigate(next, { push });
  };

  const search = h("input", { id: "search", type: "search", value: filters.search, size: 40,
    "aria-describedby": "search-help", placeholder: 'timeout "connection failed" -debug pay*' });
  const service = h("input", { id: "log-service", value: filters.service_name, size: 14 });
  const trace = h("input", { id: "trace", value: filters.trace_id, size: 18, spellcheck: false });
  const levelBoxes = LEVELS.map((l) => h("span", { class: "check" },
    h("input", { type: "checkbox", id: `level-${l}`, value: l, checked: levels.includes(l) }),
    h("label", { for: `level-${l}`, class: `lvl lvl-${l}` }, l)));
  const form = h("form", { class: "toolbar", role: "search", "aria-label": "Log search",
    onsubmit: (e) => {
      e.preventDefault();
      update((p) => {
        const chosen = levelBoxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
        for (const [key, value] of [["q", search.value.trim()], ["service", service.value.trim()],
          ["trace", trace.value.trim()], ["level", chosen.join(",")]]) {
          if (value) p.set(key, value); else p.delete(key);
        }
        p.delete("log");
      });
    } },
  h("div", { class: "field grow" }, h("label", { for: "search" }, "Search"), search),
  h("fieldset", { class: "field levels" }, h("legend", {}, "Levels (none = all)"), h("div", { class: "boxes" }, levelBoxes)),
  h("div", { class: "field" }, h("label", { for: "log-service" }, "Service"), service),
  h("div", { class: "field" }, h("label", { for: "trace" }, "Trace id"), trace),
  h("div", { class: "field actions" }, h("button", { type: "submit", id: "run-search" }, "Search"),
    h("button", { type: "button", onclick: () => update((p) => { for (const k of ["q", "service", "trace", "level", "log"]) p.delete(k); }) }, "Clear")));
  const help = h("p", { class: "hint", id: "search-help" },
    "Every word must match; ", h("code", {}, '"a phrase"'), ", ", h("code", {}, "-exclude"), ", ",
    h("code", {}, "prefix*"), ". Case does not matter.");

  const bucket = autoBucket((range.end - range.start) / 1000, 90);
  const volumeBox = h("div", { class: "chart", id: "volume", role: "img",
    "aria-label": `Log volume per ${bucket}, errors and error spikes highlighted` });
  const summary = h("p", { class: "summary", id: "log-summary", "aria-live": "polite" }, "Searching…");
  const modeBar = h("div", { class: "toolbar", role: "group", "aria-label": "Show" },
    ["list", "patterns"].map((m) => h("button", { type: "button", id: `mode-${m}`, "aria-pressed": String(mode === m),
      onclick: () => update((p) => p.set("mode", m)) }, m === "list" ? "Logs" : "Patterns")),
    select("log-tz", "Time zone", [["local", `local (${zoneName("local")})`], ["UTC", "UTC"]], tz,
      (v) => update((p) => p.set("tz", v), false)));
  const body = h("div", { class: "logs-body" });
  root.append(h("h2", { class: "visually-hidden" }, "Logs"), form, help,
    rangeControls(params, range, tz, update, "logs"),
    volumeBox, h("p", { class: "hint" }, `Grey: the matching logs per ${bucket}; red: the errors among them; dark red: those errors in an error spike of the service (or of the project). Click a bar to narrow the range to it.`),
    modeBar, summary, body);

  // -- volume and spikes
  // grey: the matching logs; red: the errors among them; dark red: where those errors fall in
  // a service-wide error spike (/api/logs/error-spikes judges spikes on all the errors)
  const errorLevels = (levels.length ? levels : LEVELS).filter((l) => l === "ERROR" || l === "FATAL");
  const none = Promise.resolve(null);
  Promise.all([
    api.get("/api/logs/volume", { ...filters, time_bucket: bucket }, signal),
    errorLevels.length ? api.get("/api/logs/volume", { ...filters, level: errorLevels.join(","),
      time_bucket: bucket }, signal) : none,
    api.get("/api/logs/error-spikes", { start_time: filters.start_time, end_time: filters.end_time,
      time_bucket: bucket, service_name: filters.service_name }, signal),
  ]).then(([volume, errors, spikes]) => {
    volumeChart(volumeBox, { volume, errors, spikes, tz, onPick: (start) =>
      update((p) => setRange(p, start, start + seconds(bucket) * 1000)) });
    volumeBox.dataset.spikes = String(spikes.spikes);
  }).catch((err) => {
    if (!signal.aborted) volumeBox.replaceChildren(h("p", { class: "error" }, `Volume failed: ${err.message}`));
  });

  const openLog = (id) => update((p) => p.set("log", id));
  // every log of the trace: the other filters would hide some of it
  const showTrace = (traceId) => update((p) => {
    for (const key of ["q", "log", "level", "service"]) p.delete(key);
    p.set("trace", traceId);
    p.set("mode", "list");
  });

  if (mode === "patterns") {
    loadPatterns(ctx, filters, body, summary, (pattern) => update((p) => {
      p.set("q", patternSearch(pattern)); p.set("mode", "list"); p.delete("log");
    }));
  } else {
    loadList(ctx, filters, body, summary, tz, openLog, showTrace);
  }
  if (params.get("log")) showContext(ctx, params.get("log"), tz, () => update((p) => p.delete("log")), openLog, showTrace);
}

function logRow(log, i, tz, openLog, showTrace) {
  return h("div", { class: "logrow", role: "listitem", "data-index": String(i) },
    h("time", { datetime: log.timestamp }, formatTime(log.timestamp, tz, true)),
    h("span", { class: `lvl lvl-${log.level}` }, log.level),
    h("span", { class: "svc", title: log.service_name || "" }, log.service_name || "–"),
    h("button", { type: "button", class: "msg", id: `log-${i}`, title: "Show the logs around this one",
      onclick: () => openLog(log.id) }, log.message),
    log.trace_id ? h("button", { type: "button", class: "trace", title: `All logs of trace ${log.trace_id}`,
      onclick: () => showTrace(log.trace_id) }, log.trace_id.slice(0, 10)) : h("span", { class: "trace none" }, ""));
}

function loadList(ctx, filters, body, summary, tz, openLog, showTrace) {
  const { api, signal } = ctx;
  const box = h("div", { class: "vlist", id: "log-list", role: "list", tabindex: "0",
    "aria-label": "Matching logs, newest first" });
  body.append(h("div", { class: "logrow head", "aria-hidden": "true" },
    h("span", {}, "time"), h("span", {}, "level"), h("span", {}, "service"), h("span", {}, "message (click for context)"), h("span", {}, "trace")), box);
  let cursor = null, loading = false, total = 0, pages = 0;
  const list = new VirtualList(box, { rowHeight: ROW_HEIGHT,
    renderRow: (log, i) => logRow(log, i, tz, openLog, showTrace),
    onNearEnd: () => next() });
  const say = () => {
    summary.textContent = `${formatNumber(total)} matching log${total === 1 ? "" : "s"} · ${formatNumber(list.rows.length)} loaded` +
      `${cursor ? " · scroll for more" : ""} · newest first`;
    box.dataset.loaded = String(list.rows.length);
    box.dataset.pages = String(pages);
  };
  async function next() {
    if (loading || (pages && !cursor)) return;
    loading = true;
    try {
      const page = await api.get("/api/logs/query", { ...filters, limit: PAGE, cursor }, signal);
      pages += 1;
      cursor = page.next_cursor;
      total = page.total;
      if (pages === 1) list.set(page.logs, Boolean(cursor));
      else list.append(page.logs, Boolean(cursor));
      say();
      if (!page.logs.length && pages === 1) summary.textContent = "No logs match. Widen the range or loosen the filters.";
    } catch (err) {
      if (!signal.aborted) summary.textContent = `Search failed: ${err.message}`;
    } finally {
      loading = false;
    }
  }
  next();
}

function loadPatterns(ctx, filters, body, summary, onPick) {
  const { api, signal } = ctx;
  api.get("/api/logs/patterns", { ...filters, limit: 5000 }, signal).then((doc) => {
    summary.textContent = `${doc.patterns.length} patterns in ${formatNumber(doc.logs_analyzed)} logs analysed (newest first, at most 5,000)`;
    const rows = doc.patterns.map((p, i) => h("tr", {},
      h("td", {}, h("button", { type: "button", class: "pattern", id: `pattern-${i}`, title: "Search the logs of this pattern",
        onclick: () => onPick(p.pattern) }, p.pattern)),
      h("td", { class: "num" }, formatNumber(p.count)),
      h("td", {}, Object.entries(p.levels).map(([l, n]) => h("span", { class: `lvl lvl-${l}` }, `${l} ${n}`))),
      h("td", { class: "samples" }, h("ul", {}, p.samples.slice(0, 3).map((s) => h("li", {}, s))))));
    body.append(h("table", { class: "patterns", id: "patterns" },
      h("caption", { class: "visually-hidden" }, "Log patterns"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Pattern (click to search it)"),
        h("th", { scope: "col" }, "Count"), h("th", { scope: "col" }, "Levels"), h("th", { scope: "col" }, "Samples"))),
      h("tbody", {}, rows)));
  }).catch((err) => {
    if (!signal.aborted) summary.textContent = `Patterns failed: ${err.message}`;
  });
}

function showContext(ctx, logId, tz, close, openLog, showTrace) {
  const { api, signal, root } = ctx;
  const closeBtn = h("button", { type: "button", id: "close-context", onclick: close }, "Close");
  const list = h("div", { class: "context-list", role: "list", "aria-label": "Logs around the chosen one, oldest first" }, "Loading…");
  const panel = h("aside", { class: "panel", id: "context", role: "dialog", "aria-modal": "false",
    "aria-labelledby": "context-title", onkeydown: (e) => { if (e.key === "Escape") close(); } },
  h("div", { class: "panel-head" }, h("h3", { id: "context-title" }, "Log context"), closeBtn), list);
  root.append(panel);
  closeBtn.focus();
  api.get(`/api/logs/${encodeURIComponent(logId)}/context`, { before: 15, after: 15, scope: "project" }, signal).then((doc) => {
    const rows = [...doc.before, doc.log, ...doc.after];
    list.replaceChildren(h("p", { class: "hint" },
      `${doc.before.length} before and ${doc.after.length} after, across all services of the project, oldest first.`),
    ...rows.map((log, i) => {
      const row = logRow(log, `ctx-${i}`, tz, openLog, showTrace);
      if (log.id === doc.log.id) { row.classList.add("anchor"); row.setAttribute("aria-current", "true"); }
      return row;
    }));
    if (Object.keys(doc.log.context || {}).length) {
      list.append(h("details", { open: true }, h("summary", {}, "Fields of this log"),
        h("pre", {}, JSON.stringify(doc.log.context, null, 2))));
    }
  }).catch((err) => {
    if (!signal.aborted) list.replaceChildren(h("p", { class: "error", role: "alert" }, `Context failed: ${err.message}`));
  });
}
