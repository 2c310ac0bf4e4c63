// The explorer's shell: sign-in (token kept in sessionStorage only), the project picker, and
// the views. The URL's query string holds everything a view shows (view, project, metric,
// range, filters), so a pasted link opens the same view; the token is never in it.

import { Api } from "./api.js";
import { renderIncidents } from "./incidents.js";
import { renderLogs } from "./logs.js";
import { renderMetrics } from "./metrics.js";

const VIEWS = { metrics: renderMetrics, logs: renderLogs, incidents: renderIncidents };
const TOKEN_KEY = "opspilot.token";
const $ = (id) => document.getElementById(id);

let session = null; // { api, projects: [{id, name}] }
let current = null; // AbortController of the view on screen

let statusTimer = 0;

function status(message, isError = false) {
  const el = $("status");
  el.textContent = message || "";
  el.classList.toggle("error", Boolean(isError));
  clearTimeout(statusTimer);
  if (message) statusTimer = setTimeout(() => { el.textContent = ""; }, isError ? 12000 : 5000);
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  session = null;
  if (current) current.abort();
  $("view").replaceChildren();
  $("tabs").hidden = true;
  $("session").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("token").focus();
}

async function signIn(token) {
  const api = new Api(token, null, () => signOut("The token was refused; sign in again."));
  const me = await api.get("/api/me");
  if (!me.projects.length) throw new Error("this token's user belongs to no project");
  sessionStorage.setItem(TOKEN_KEY, token);
  session = { api, projects: me.projects };
  const picker = $("project");
  picker.replaceChildren(...me.projects.map((p) => new Option(`${p.name}`, p.id)));
  $("signin").hidden = true;
  $("tabs").hidden = false;
  $("session").hidden = false;
}

function params() {
  return new URLSearchParams(window.location.search);
}

// Writes the query string (push: a new history entry, so Back returns) and re-renders.
function navigate(next, { push = false } = {}) {
  const url = `${window.location.pathname}?${next.toString()}`;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  show();
}

function show() {
  if (!session) return;
  const p = params();
  const ids = session.projects.map((x) => x.id);
  if (!ids.includes(p.get("project"))) {
    p.set("project", ids[0]);
    history.replaceState(null, "", `${window.location.pathname}?${p}`);
  }
  if (!VIEWS[p.get("view")]) {
    p.set("view", "metrics");
    history.replaceState(null, "", `${window.location.pathname}?${p}`);
  }
  session.api.projectId = p.get("project");
  $("project").value = p.get("project");
  for (const a of document.querySelectorAll("#tabs a")) {
    const link = new URLSearchParams({ view: a.dataset.view, project: p.get("project") });
    a.href = `?${link}`;
    if (a.dataset.view === p.get("view")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const focused = document.activeElement && document.activeElement.id;
  if (current) current.abort();
  current = new AbortController();
  const root = $("view");
  root.replaceChildren();
  document.title = `${p.get("view")[0].toUpperCase()}${p.get("view").slice(1)} · OpsPilot Explorer`;
  VIEWS[p.get("view")]({ api: session.api, params: p, root, navigate, status,
    signal: current.signal });
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

function wire() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      await signIn($("token").value.trim());
      $("token").value = "";
      show();
      $("main").focus({ preventScroll: true });
    } catch (err) {
      $("signin-error").textContent = `Sign-in failed: ${err.message}`;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("project").addEventListener("change", () => {
    const p = new URLSearchParams({ view: params().get("view") || "metrics",
      project: $("project").value });
    navigate(p, { push: true });
  });
  $("copy-link").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(window.location.href);
      status("Link copied: it opens this same view (the reader signs in with their own token).");
    } catch {
      status(`Link: ${window.location.href}`);
    }
  });
  // In-page links (tabs, an incident's links) change the query string without a reload.
  document.body.addEventListener("click", (event) => {
    const a = event.target.closest('a[href^="?"]');
    if (!a || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    navigate(new URLSearchParams(a.search), { push: true });
  });
  window.addEventListener("popstate", show);
}

async function start() {
  wire();
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return signOut();
  try {
    await signIn(token);
    show();
  } catch (err) {
    signOut(`Sign in again: ${err.message}`);
  }
}

start();
