// The incidents view: the list with filters, an incident's detail (timeline, deliveries,
// acknowledge/resolve, links to its metric chart and the logs around its start), and the
// rules with enable/disable.

import { formatSeries } from "./metrics.js";
import { formatNumber, formatTime, h, select } from "./util.js";

const STATUSES = [["", "any status"], ["open", "open"], ["acknowledged", "acknowledged"], ["resolved", "resolved"]];

// The explorer views an incident's API links point at (same metric, range and filters).
export function linkToView(apiPath, projectId) {
  const url = new URL(apiPath, window.location.origin);
  const q = url.searchParams;
  const view = new URLSearchParams({ project: projectId });
  if (url.pathname === "/api/metrics/query") {
    view.set("view", "metrics");
    view.append("s", formatSeries({ name: q.get("metric_name"), service: q.get("service_name") || "",
      aggregation: q.get("aggregation") || "avg", tags: q.get("tags") || "" }));
    if (q.get("time_bucket")) view.set("bucket", q.get("time_bucket"));
  } else {
    view.set("view", "logs");
    if (q.get("service_name")) view.set("service", q.get("service_name"));
  }
  if (q.get("start_time")) view.set("from", new Date(q.get("start_time")).toISOString());
  if (q.get("end_time")) view.set("to", new Date(Math.min(Date.parse(q.get("end_time")), Date.now())).toISOString());
  return `?${view}`;
}

export function renderIncidents(ctx) {
  const { api, params, root, navigate, signal } = ctx;
  const tz = params.get("tz") === "UTC" ? "UTC" : "local";
  const update = (change, push = true) => {
    const next = new URLSearchParams(params);
    change(next);
    navigate(next, { push });
  };
  const status = params.get("status") || "";
  const ruleId = params.get("rule") || "";
  const listBox = h("div", { id: "incident-list" }, "Loading…");
  const rulesBox = h("div", { id: "rules" }, "Loading…");
  const ruleFilter = h("select", { id: "incident-rule", onchange: () =>
    update((p) => (ruleFilter.value ? p.set("rule", ruleFilter.value) : p.delete("rule")), false) },
  h("option", { value: "" }, "any rule"));
  root.append(h("h2", {}, "Incidents"),
    h("div", { class: "toolbar", role: "group", "aria-label": "Incident filters" },
      select("incident-status", "Status", STATUSES, status, (v) =>
        update((p) => (v ? p.set("status", v) : p.delete("status")), false)),
      h("div", { class: "field" }, h("label", { for: "incident-rule" }, "Rule"), ruleFilter)),
    listBox, h("h2", {}, "Alert rules"), rulesBox);

  const load = async () => {
    const [incidents, rules] = await Promise.all([
      api.get("/api/incidents", { status, rule_id: ruleId, limit: 200 }, signal),
      api.get("/api/rules", {}, signal),
    ]);
    const names = new Map(rules.rules.map((r) => [r.id, r.name]));
    ruleFilter.append(...rules.rules.map((r) => h("option", { value: r.id, selected: r.id === ruleId }, r.name)));
    listBox.replaceChildren(incidents.incidents.length ? h("table", { class: "grid", id: "incidents" },
      h("caption", { class: "visually-hidden" }, "Incidents, newest first"),
      h("thead", {}, h("tr", {}, ["Incident", "Severity", "Status", "Started", "Rule"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, incidents.incidents.map((inc) => h("tr", { class: params.get("incident") === inc.id ? "selected" : "" },
        h("td", {}, h("a", { href: `?${withIncident(params, inc.id)}`, class: "incident-link",
          onclick: (e) => { e.preventDefault(); update((p) => p.set("incident", inc.id)); } }, inc.title)),
        h("td", {}, h("span", { class: `sev sev-${inc.severity}` }, inc.severity)),
        h("td", {}, h("span", { class: `st st-${inc.status}` }, inc.status)),
        h("td", {}, formatTime(inc.started_at, tz, true)),
        h("td", {}, names.get(inc.rule_id) || inc.rule_id)))))
      : h("p", { class: "empty" }, "No incidents match. Rules open one when their condition holds."));
    rulesBox.replaceChildren(rulesTable(rules.rules, api, () => update(() => {}, false)));
  };
  load().catch((err) => {
    if (!signal.aborted) listBox.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load incidents: ${err.message}`));
  });
  if (params.get("incident")) showIncident(ctx, params.get("incident"), tz, () => update((p) => p.delete("incident")));
}

function withIncident(params, id) {
  const p = new URLSearchParams(params);
  p.set("incident", id);
  return p;
}

function condition(rule) {
  const where = [rule.service_name && `service=${rule.service_name}`,
    ...Object.entries(rule.tags).map(([k, v]) => `${k}=${v}`)].filter(Boolean);
  const series = `${rule.aggregation}(${rule.metric_name}${where.length ? `{${where.join(",")}}` : ""}) over ${rule.window}`;
  if (rule.kind === "anomaly") return `${series} is anomalous (score ≥ ${rule.threshold})`;
  if (rule.kind === "no_data") return `${series} has no data`;
  const cmp = { gt: ">", gte: "≥", lt: "<", lte: "≤", eq: "=", ne: "≠" }[rule.comparator] || rule.comparator;
  return `${series} ${cmp} ${formatNumber(rule.threshold)}${rule.for_duration !== "0" ? ` for ${rule.for_duration}` : ""}`;
}

function rulesTable(rules, api, refresh) {
  if (!rules.length) return h("p", { class: "empty" }, "No rules yet (POST /api/rules).");
  return h("table", { class: "grid", id: "rule-table" },
    h("caption", { class: "visually-hidden" }, "Alert rules"),
    h("thead", {}, h("tr", {}, ["Rule", "Condition", "Severity", "State", "Enabled"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rules.map((r) => h("tr", {},
      h("td", {}, r.name), h("td", {}, h("code", {}, condition(r))),
      h("td", {}, h("span", { class: `sev sev-${r.severity}` }, r.severity)),
      h("td", {}, r.state.status, r.state.last_value !== null ? ` (last ${formatNumber(r.state.last_value)})` : ""),
      h("td", {}, h("button", { type: "button", class: "toggle", "aria-pressed": String(r.enabled),
        "aria-label": `${r.enabled ? "Disable" : "Enable"} rule ${r.name}`,
        onclick: async (e) => {
          e.target.disabled = true;
          try { await api.post(`/api/rules/${r.id}/${r.enabled ? "disable" : "enable"}`); refresh(); }
          catch (err) { e.target.disabled = false; e.target.textContent = `failed: ${err.message}`; }
        } }, r.enabled ? "Enabled · disable" : "Disabled · enable"))))));
}

function showIncident(ctx, id, tz, close) {
  const { api, signal, root, params } = ctx;
  const closeBtn = h("button", { type: "button", id: "close-incident", onclick: close }, "Close");
  const content = h("div", {}, "Loading…");
  const panel = h("aside", { class: "panel", id: "incident", role: "dialog", "aria-modal": "false",
    "aria-labelledby": "incident-title", onkeydown: (e) => { if (e.key === "Escape") close(); } },
  h("div", { class: "panel-head" }, h("h3", { id: "incident-title" }, "Incident"), closeBtn), content);
  root.append(panel);
  closeBtn.focus();
  const act = async (action, button) => {
    button.disabled = true;
    try {
      await api.post(`/api/incidents/${encodeURIComponent(id)}/${action}`);
      ctx.navigate(new URLSearchParams(params), { push: false });
      ctx.status(`Incident ${action === "acknowledge" ? "acknowledged" : "resolved"}.`);
    } catch (err) {
      button.disabled = false;
      ctx.status(`Could not ${action}: ${err.message}`, true);
    }
  };
  api.get(`/api/incidents/${encodeURIComponent(id)}`, {}, signal).then((inc) => {
    document.getElementById("incident-title").textContent = inc.title;
    const project = params.get("project");
    const ack = h("button", { type: "button", id: "acknowledge", disabled: inc.status !== "open",
      onclick: (e) => act("acknowledge", e.target) }, "Acknowledge");
    const resolve = h("button", { type: "button", id: "resolve", disabled: inc.status === "resolved",
      onclick: (e) => act("resolve", e.target) }, "Resolve");
    content.replaceChildren(
      h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", {}, h("span", { class: `st st-${inc.status}`, id: "incident-state" }, inc.status)),
        h("dt", {}, "Severity"), h("dd", {}, h("span", { class: `sev sev-${inc.severity}` }, inc.severity)),
        h("dt", {}, "Started"), h("dd", {}, formatTime(inc.started_at, tz, true)),
        h("dt", {}, "Last values"), h("dd", {}, inc.values.map(formatNumber).join(", ") || "–")),
      h("div", { class: "toolbar" }, ack, resolve,
        inc.links.metrics ? h("a", { class: "button", id: "incident-metrics", href: linkToView(inc.links.metrics, project) }, "Metric chart") : null,
        inc.links.logs ? h("a", { class: "button", id: "incident-logs", href: linkToView(inc.links.logs, project) }, "Logs around the start") : null),
      h("h4", {}, "Timeline"),
      h("ol", { class: "timeline" }, inc.timeline.map((t) => h("li", {},
        h("time", { datetime: t.at }, formatTime(t.at, tz, true)), " ", h("strong", {}, t.event), " ",
        t.detail, t.value !== null ? ` (value ${formatNumber(t.value)})` : ""))),
      h("h4", {}, "Deliveries"),
      inc.deliveries.length ? h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, ["At", "Channel", "Event", "Attempt", "Result"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, inc.deliveries.map((d) => h("tr", {},
          h("td", {}, formatTime(d.at, tz, true)), h("td", {}, h("code", {}, d.channel_id)), h("td", {}, d.event),
          h("td", { class: "num" }, String(d.attempt)), h("td", {}, `${d.ok ? "ok" : "failed"}: ${d.detail}`)))))
        : h("p", { class: "empty" }, "No notifications sent (the rule has no channel)."));
  }).catch((err) => {
    if (!signal.aborted) content.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load the incident: ${err.message}`));
  });
}
