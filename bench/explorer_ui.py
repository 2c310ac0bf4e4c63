"""The explorer page in headless Chromium, timed by the browser itself.

Starts `opspilot serve` (the embedded default, as a user runs it) on a loopback port, loads
24 h of 1-minute points for 5 series and 10,000 logs through the HTTP API, then measures in
Debian's Chromium (Playwright, /usr/bin/chromium):

1. first paint of /ui/ in a fresh browser context (no cache): `first-contentful-paint` from
   the Paint Timing API, and the signed-in metrics view until its chart is drawn;
2. a 24 h / 1 m chart of 5 overlaid series: the page's own `explorer:chart` measure (from the
   API's answer to the frame after uPlot drew it), side by side with bare uPlot drawing the
   same 5 × 1,440 points on an empty page (the raw engine);
3. the log list with 10,000 rows loaded (50 cursor pages): frame intervals while scrolling
   it top to bottom (requestAnimationFrame timestamps), side by side with the same 10,000
   rows rendered as plain DOM rows (no virtualisation).

    .venv/bin/python bench/explorer_ui.py --runs 7
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SERVICES = ["api", "checkout", "payments", "search", "auth"]

ADMIN_TOKEN = "bench-admin-" + secrets.token_urlsafe(24)

def _post(base: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _port(preferred: int) -> int:
    for port in range(preferred, preferred + 40):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def start_server(port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    env["OPSPILOT_RATE_LIMITS_ENABLED"] = "false"  # the bench pages 50 times in a second
    env["OPSPILOT_ADMIN_TOKEN"] = ADMIN_TOKEN
    proc = subprocess.Popen([str(Path(sys.executable).parent / "opspilot"), "serve", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve did not start")


def load(base: str) -> dict[str, str]:
    project = _post(base, "/api/admin/projects", {"name": f"bench-{time.time_ns()}"},
                    {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    key = {"X-API-Key": project["api_key"]}
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(hours=24)
    for i, service in enumerate(SERVICES):
        points = [{"name": "latency_ms", "service": service,
                   "value": 100 + 20 * i + (m % 37), "timestamp": (start + timedelta(minutes=m)).isoformat()}
                  for m in range(1440)]
        _post(base, "/api/ingest/metrics", {"metrics": points}, key)
    for chunk in range(10):
        logs = [{"level": "ERROR" if n % 17 == 0 else "INFO", "service": SERVICES[n % 5],
                 "message": f"request {chunk * 1000 + n} served in {n % 300} ms",
                 "timestamp": (now - timedelta(seconds=0.3 * (chunk * 1000 + n))).isoformat()}
                for n in range(1000)]
        _post(base, "/api/ingest/logs", {"logs": logs}, key)
    return {"project_id": project["project_id"], "token": project["token"]}


def signed_in(context: Any, token: str) -> None:
    context.add_init_script(f"sessionStorage.setItem('opspilot.token', {json.dumps(token)})")


def first_paint(browser: Any, base: str, creds: dict[str, str]) -> tuple[float, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(base + "/ui/")
    page.wait_for_selector("#signin-button")
    fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
    context.close()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    signed_in(context, creds["token"])
    page = context.new_page()
    page.goto(f"{base}/ui/?view=metrics&project={creds['project_id']}"
              "&s=latency_ms|api|avg|&range=1h&anomalies=0")
    page.wait_for_function("() => performance.getEntriesByName('explorer:chart').length")
    ready = page.evaluate("performance.getEntriesByName('explorer:chart')[0].startTime"
                          " + performance.getEntriesByName('explorer:chart')[0].duration")
    context.close()
    return fcp, ready


def overlay_chart(browser: Any, base: str, creds: dict[str, str]) -> tuple[float, float, int]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    signed_in(context, creds["token"])
    page = context.new_page()
    series = "&".join(f"s=latency_ms|{s}|avg|" for s in SERVICES)
    page.goto(f"{base}/ui/?view=metrics&project={creds['project_id']}&{series}"
              "&range=24h&bucket=1m&anomalies=0")
    page.wait_for_function("() => performance.getEntriesByName('explorer:chart').length")
    chart = page.evaluate("performance.getEntriesByName('explorer:chart')[0].duration")
    query = page.evaluate("performance.getEntriesByName('explorer:query')[0].duration")
    points = int(page.get_attribute("#chart", "data-points") or 0)
    context.close()
    return chart, query, points


RAW_UPLOT = """async ([width, data]) => {
  const el = document.createElement('div'); document.body.append(el);
  const t0 = performance.now();
  const opts = {width, height: 320, series: [{}, ...data.slice(1).map(() => ({stroke: '#1f5fbf'}))]};
  new uPlot(opts, data, el);
  await new Promise(r => requestAnimationFrame(() => setTimeout(r)));
  return performance.now() - t0;
}"""


def raw_uplot(browser: Any, uplot_js: str, data: list[list[float]]) -> float:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_content("<!doctype html><body></body>")
    page.add_script_tag(content=uplot_js)
    elapsed = float(page.evaluate(RAW_UPLOT, [1360, data]))
    context.close()
    return elapsed


SCROLL = """async () => {
  const box = document.querySelector(SELECTOR);
  box.scrollTop = 0;
  await new Promise(r => requestAnimationFrame(r));
  const stamps = [];
  const step = Math.max(1, Math.floor((box.scrollHeight - box.clientHeight) / 600));
  while (box.scrollTop + box.clientHeight < box.scrollHeight - 1) {
    box.scrollTop += step;
    stamps.push(await new Promise(r => requestAnimationFrame(r)));
  }
  const gaps = stamps.slice(1).map((t, i) => t - stamps[i]);
  return {frames: gaps.length, gaps, rows: box.querySelectorAll('.logrow').length};
}"""


def scroll_stats(result: dict[str, Any]) -> dict[str, float]:
    gaps = sorted(result["gaps"])
    return {"frames": result["frames"], "median": statistics.median(gaps),
            "p95": gaps[int(0.95 * (len(gaps) - 1))],
            "over_33ms": sum(g > 33.4 for g in gaps), "rows_in_dom": result["rows"]}


def log_scroll(browser: Any, base: str, creds: dict[str, str]) -> tuple[dict[str, float], dict[str, float]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    signed_in(context, creds["token"])
    page = context.new_page()
    page.goto(f"{base}/ui/?view=logs&project={creds['project_id']}&range=6h")
    page.wait_for_selector("#log-list .logrow")
    for _ in range(200):  # page through with the cursor until all 10,000 are loaded
        page.eval_on_selector("#log-list", "el => el.scrollTop = el.scrollHeight")
        page.wait_for_timeout(50)
        if int(page.get_attribute("#log-list", "data-loaded") or 0) >= 10_000:
            break
    loaded = int(page.get_attribute("#log-list", "data-loaded") or 0)
    assert loaded >= 10_000, loaded
    ours = scroll_stats(page.evaluate(SCROLL.replace("SELECTOR", "'#log-list'")))
    # the peer: the same rows as plain DOM (what a list without virtualisation does)
    page.evaluate("""() => {
      const proto = document.querySelector('#log-list .logrow');
      const box = document.createElement('div'); box.id = 'plain'; box.className = 'vlist';
      document.querySelector('.logs-body').replaceChildren(box);
      for (let i = 0; i < 10000; i++) {
        const r = proto.cloneNode(true); r.style.position = 'static'; r.style.transform = '';
        box.append(r);
      }
    }""")
    plain = scroll_stats(page.evaluate(SCROLL.replace("SELECTOR", "'#plain'")))
    context.close()
    return ours, plain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--port", type=int, default=22150)
    args = parser.parse_args()
    port = _port(args.port)
    base = f"http://127.0.0.1:{port}"
    server = start_server(port)
    try:
        creds = load(base)
        time.sleep(1.0)  # the in-process worker stores what the API accepted
        uplot_js = (ROOT / "src/opspilot/entrypoints/ui/static/vendor/uPlot.iife.min.js").read_text()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            paints = [first_paint(browser, base, creds) for _ in range(args.runs)]
            charts = [overlay_chart(browser, base, creds) for _ in range(args.runs)]
            data = overlay_data(base, creds)
            raws = [raw_uplot(browser, uplot_js, data) for _ in range(args.runs)]
            ours, plain = log_scroll(browser, base, creds)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    med = statistics.median
    print(f"runs: {args.runs} (medians; loaded 2-core machine)")
    print(f"first contentful paint of /ui/ (cold context): {med(p[0] for p in paints):.0f} ms "
          f"(min {min(p[0] for p in paints):.0f}, max {max(p[0] for p in paints):.0f})")
    print(f"signed-in metrics view until its chart is drawn: {med(p[1] for p in paints):.0f} ms")
    print(f"24 h / 1 m chart, 5 series ({charts[0][2]} points): draw {med(c[0] for c in charts):.1f} ms "
          f"(min {min(c[0] for c in charts):.1f}, max {max(c[0] for c in charts):.1f}); "
          f"query {med(c[1] for c in charts):.1f} ms")
    print(f"bare uPlot, same data: {med(raws):.1f} ms -> ratio {med(c[0] for c in charts) / med(raws):.2f}x")
    print(f"log list scroll, 10,000 rows loaded, virtualised: {json.dumps(ours)}")
    print(f"same rows as plain DOM: {json.dumps(plain)}")


def overlay_data(base: str, creds: dict[str, str]) -> list[list[float]]:
    end = datetime.now(UTC)
    body = {"metrics": [{"name": "latency_ms", "service": s} for s in SERVICES],
            "start_time": (end - timedelta(hours=24)).isoformat(), "end_time": end.isoformat(),
            "time_bucket": "1m"}
    doc = _post(base, "/api/metrics/query-multiple", body,
                {"Authorization": f"Bearer {creds['token']}", "X-Project-ID": creds["project_id"]})
    stamps = sorted({p["timestamp"] for s in doc["series"] for p in s["points"]})
    index = {t: i for i, t in enumerate(stamps)}
    columns: list[list[Any]] = [[datetime.fromisoformat(t).timestamp() for t in stamps]]
    for s in doc["series"]:
        column: list[Any] = [None] * len(stamps)
        for p in s["points"]:
            column[index[p["timestamp"]]] = p["value"]
        columns.append(column)
    return columns


if __name__ == "__main__":
    main()
