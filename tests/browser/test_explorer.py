"""The explorer in a real browser, as a user takes it: sign in, chart a metric with an
overlay and its anomaly markers, zoom, search logs and scroll past the first cursor page,
open a log's context, open a pattern, acknowledge an incident, follow a deep link; and an
axe-core accessibility check of every view."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.browser.conftest import Demo, Page


def _chart_series(tab: Page) -> list[str]:
    return tab.page.eval_on_selector_all("#chart .u-legend .u-series th",
                                         "els => els.map(e => e.textContent.trim())")


def _draw_metric(tab: Page, metric: str, service: str, button: str) -> None:
    page = tab.page
    page.wait_for_selector(f'#metric option[value="{metric}"]', state="attached")
    page.select_option("#metric", metric)
    page.wait_for_selector(f'#service option[value="{service}"]', state="attached")
    page.select_option("#service", service)
    page.click(button)


def test_sign_in_with_the_keyboard_and_see_a_chart(tab: Page) -> None:
    tab.open()
    assert tab.page.url.endswith("/ui/")
    assert tab.page.is_visible("#signin") and not tab.page.is_visible("#tabs")
    tab.shot("sign-in")
    tab.sign_in()
    tab.page.wait_for_selector("#chart .uplot")
    assert tab.page.input_value("#project") == tab.demo.project_id
    assert tab.params()["project"] == [tab.demo.project_id]
    # the token lives in this tab's session storage, never in the URL or local storage
    stored = tab.page.evaluate("[sessionStorage.getItem('opspilot.token'), localStorage.length]")
    assert stored == [tab.demo.token, 0] and tab.demo.token not in tab.page.url
    tab.shot("first-chart")
    tab.page.click("#sign-out")
    assert tab.page.is_visible("#signin")
    assert tab.page.evaluate("sessionStorage.getItem('opspilot.token')") is None


def test_pick_another_project_of_the_token(tab: Page, demo: Demo) -> None:
    page = tab.page
    # a second project owned by the demo's user (owner@<project name>, as the demo made it)
    second = _call(demo, "/api/admin/projects", {"name": f"second-{time.time_ns()}",
                                                 "owner": f"owner@{demo.project_name}"})
    tab.sign_in()
    page.wait_for_selector("#chart .uplot")
    options = page.eval_on_selector_all("#project option", "els => els.map(e => e.value)")
    assert set(options) >= {demo.project_id, second["project_id"]}, options
    page.select_option("#project", second["project_id"])
    page.wait_for_function(f"() => location.search.includes('{second['project_id']}')")
    page.wait_for_selector("#chart .empty")  # the new project has no metrics yet
    assert "No metrics" in page.inner_text("#chart")
    tab.shot("second-project")
    page.go_back()
    page.wait_for_selector("#chart .uplot")
    assert page.input_value("#project") == demo.project_id


def _call(demo: Demo, path: str, body: Any) -> Any:
    import urllib.request

    request = urllib.request.Request(
        demo.base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {demo.admin_token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_chart_an_overlay_with_anomaly_markers_then_zoom(tab: Page) -> None:
    page = tab.page
    tab.sign_in()
    page.wait_for_selector("#chart .uplot")
    _draw_metric(tab, "latency_ms_p95", "checkout", "#chart-it")
    page.wait_for_function("() => document.querySelector('#chart')?.dataset.points"
                           " && location.search.includes('checkout')")
    _draw_metric(tab, "latency_ms_p95", "api", "#add-overlay")
    page.wait_for_function("() => document.querySelectorAll('.chips .chip').length === 2"
                           " && document.querySelector('#chart .uplot')")
    page.wait_for_function("() => document.querySelector('#chart').dataset.anomalies !== undefined")
    legend = _chart_series(tab)
    assert any("service=checkout" in s for s in legend), legend
    assert any("service=api" in s for s in legend), legend
    assert any(s.startswith("anomalies: latency_ms_p95 (checkout)") for s in legend), legend
    assert int(page.get_attribute("#chart", "data-anomalies") or 0) >= 1
    info = page.inner_text("#chart-info")
    assert "unit: ms" in info and "time zone:" in info and "bucket: 1m" in info
    page.wait_for_selector("#histogram .uplot")
    tab.shot("overlay-anomalies")
    assert tab.params()["s"] == ["latency_ms_p95|checkout|avg|", "latency_ms_p95|api|avg|"]

    # drag across the middle of the plot: the range shrinks to the selection and re-queries
    box = page.locator("#chart .u-over").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=8)
    page.mouse.up()
    page.wait_for_function("() => new URLSearchParams(location.search).has('from')")
    params = tab.params()
    span = (_ts(params["to"][0]) - _ts(params["from"][0]))
    assert 600 < span < 1200, span  # a quarter of the hour
    page.wait_for_function("() => document.querySelector('#chart .uplot')"
                           " && document.querySelector('#chart').dataset.points")
    assert "range" not in params and len(params["s"]) == 2
    tab.shot("zoomed")


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_search_logs_and_scroll_past_the_first_cursor_page(tab: Page) -> None:
    page = tab.page
    tab.sign_in("?view=logs")
    page.fill("#search", "worker processed")
    page.press("#search", "Enter")
    page.wait_for_function("() => location.search.includes('worker')")
    page.wait_for_selector("#log-list .logrow")
    page.wait_for_selector("#volume .uplot")
    first = int(page.get_attribute("#log-list", "data-loaded") or 0)
    assert first == 200, first
    summary = page.inner_text("#log-summary")
    total = int(summary.split(" ")[0].replace(",", ""))
    assert total > 400, summary
    for _ in range(10):  # scroll to the bottom until a third page has arrived
        page.eval_on_selector("#log-list", "el => el.scrollTop = el.scrollHeight")
        page.wait_for_timeout(300)
        if int(page.get_attribute("#log-list", "data-pages") or 0) >= 3:
            break
    loaded = int(page.get_attribute("#log-list", "data-loaded") or 0)
    assert loaded >= 600 or loaded == total, loaded
    in_dom = page.eval_on_selector_all("#log-list .logrow", "els => els.length")
    assert in_dom < 80, f"{in_dom} rows in the DOM for {loaded} loaded: not virtualised"
    messages = page.eval_on_selector_all("#log-list .msg", "els => els.map(e => e.textContent)")
    assert messages and all("worker processed" in m for m in messages)
    tab.shot("scrolled")


def test_open_a_logs_context_and_follow_its_trace(tab: Page) -> None:
    page = tab.page
    tab.sign_in("?view=logs&level=ERROR")
    page.wait_for_selector("#log-list .logrow")
    page.click("#log-5")
    page.wait_for_selector("#context .logrow.anchor")
    assert "log" in tab.params()
    rows = page.eval_on_selector_all("#context .logrow", "els => els.length")
    assert rows == 31  # 15 before, the log, 15 after
    services = set(page.eval_on_selector_all("#context .logrow .svc", "els => els.map(e => e.textContent)"))
    assert len(services) > 1, services  # across services
    anchor_level = page.inner_text("#context .logrow.anchor .lvl")
    assert anchor_level == "ERROR"
    tab.shot("context")
    page.keyboard.press("Escape")
    page.wait_for_selector("#context", state="detached")
    # a trace id shows every log of that trace
    trace = page.get_attribute("#log-list .logrow .trace", "title") or ""
    page.click("#log-list .logrow .trace")
    page.wait_for_function("() => new URLSearchParams(location.search).has('trace')")
    page.wait_for_function("() => document.querySelector('#log-list')?.dataset.loaded")
    params = tab.params()
    assert params["trace"][0] in trace and "level" not in params  # all of the trace
    assert not page.is_checked("#level-ERROR")
    tab.shot("trace")


def test_click_a_volume_bar_to_narrow_the_range(tab: Page) -> None:
    page = tab.page
    tab.sign_in("?view=logs&range=1h")
    page.wait_for_selector("#volume .uplot")
    assert int(page.get_attribute("#volume", "data-spikes") or 0) >= 1  # the demo's spike
    legend = page.inner_text("#volume .u-legend")
    assert "matching logs" in legend and "error spike" in legend
    tab.shot("volume")
    box = page.locator("#volume .u-over").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.8
    page.mouse.move(x - 5, y)
    page.mouse.move(x, y)  # the chart's cursor follows the mouse: the bar under it is picked
    page.mouse.click(x, y)
    page.wait_for_function("() => new URLSearchParams(location.search).has('from')")
    params = tab.params()
    assert _ts(params["to"][0]) - _ts(params["from"][0]) == 60  # one 1-minute bar
    page.wait_for_selector("#log-list .logrow, #log-summary:has-text('No logs')")
    times = page.eval_on_selector_all("#log-list time", "els => els.map(e => e.dateTime)")
    assert all(params["from"][0][:16] <= t.replace("+00:00", "Z")[:16] for t in times), times
    tab.shot("narrowed")


def test_the_keyboard_reaches_the_controls_and_the_rows(tab: Page) -> None:
    page = tab.page
    tab.sign_in("?view=logs")
    page.wait_for_selector("#log-list .logrow")
    page.focus("#search")
    reached = []
    for _ in range(60):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id || document.activeElement.className")
        reached.append(focused)
        if str(focused).startswith("log-") and focused not in ("log-service", "log-tz", "log-list"):
            break
    for wanted in ("level-ERROR", "log-service", "trace", "run-search", "logs-from", "mode-patterns",
                   "log-tz"):
        assert wanted in reached, (wanted, reached)
    assert reached[-1] == "log-0", reached  # the newest row's message, reached by Tab
    page.keyboard.press("Enter")
    page.wait_for_selector("#context .logrow.anchor")
    assert page.evaluate("document.activeElement.id") == "close-context"
    page.keyboard.press("Escape")
    page.wait_for_selector("#context", state="detached")


def test_open_a_pattern(tab: Page) -> None:
    page = tab.page
    # a fixed range: "last 1h" would slide between the patterns and the search, and the
    # demo's oldest logs sit at its edge
    now = datetime.now(UTC)
    window = urlencode({"from": (now - timedelta(hours=2)).isoformat(),
                        "to": (now + timedelta(minutes=5)).isoformat()})
    tab.sign_in(f"?view=logs&mode=patterns&{window}")
    page.wait_for_selector("#patterns tbody tr")
    tab.shot("patterns")
    count = int(page.inner_text("#patterns tbody tr:first-child td.num").replace(",", ""))
    template = page.inner_text("#pattern-0")
    page.click("#pattern-0")
    page.wait_for_function("() => new URLSearchParams(location.search).get('mode') === 'list'")
    page.wait_for_selector("#log-list .logrow")
    total = int(page.inner_text("#log-summary").split(" ")[0].replace(",", ""))
    assert total >= count, (template, total, count)  # its constant words, maybe in others too
    assert page.input_value("#search") == tab.params()["q"][0]
    tab.shot("pattern-logs")


def test_acknowledge_an_incident_and_toggle_its_rule(tab: Page, receiver: str) -> None:
    page = tab.page
    tab.sign_in("?view=incidents")
    latency = '#incidents .incident-link:has-text("checkout latency")'
    errors = '#incidents .incident-link:has-text("checkout errors")'
    deadline = time.monotonic() + 60  # the scheduler ticks every 2 s in this session
    while not (page.query_selector(latency) and page.query_selector(errors)):
        assert time.monotonic() < deadline, "the rules opened no incident"
        page.wait_for_timeout(1000)
        page.reload()
        page.wait_for_selector("#incident-list table, #incident-list .empty")
    # the rule with a webhook channel: its delivery is in the detail
    page.click(errors)
    page.wait_for_selector("#incident .facts")
    while not page.query_selector("#incident table"):  # delivered after the page loaded it
        assert time.monotonic() < deadline + 30, "no delivery to the webhook"
        page.wait_for_timeout(1000)
        page.reload()
        page.wait_for_selector("#incident .facts")
    delivery = page.inner_text("#incident table tbody tr:first-child")
    assert "fired" in delivery and "ok:" in delivery, delivery
    tab.shot("incident-delivered")
    page.click("#close-incident")
    page.click(latency)
    page.wait_for_selector("#acknowledge:enabled")
    assert page.inner_text("#incident-state") == "open"
    assert "fired" in page.inner_text("#incident .timeline")
    tab.shot("incident-open")
    page.click("#acknowledge")
    page.wait_for_function("() => document.querySelector('#incident-state')?.textContent === 'acknowledged'")
    assert "acknowledged" in page.inner_text("#incident .timeline")
    tab.shot("incident-acknowledged")
    # its links: the metric around the start, and the logs around it
    metric_link = page.get_attribute("#incident-metrics", "href") or ""
    logs_link = page.get_attribute("#incident-logs", "href") or ""
    assert "view=logs" in logs_link and "service=checkout" in logs_link
    page.click("#incident-metrics")
    page.wait_for_selector("#chart .uplot")
    assert tab.params()["s"] == ["latency_ms_p95|checkout|avg|"], metric_link
    page.go_back()
    page.wait_for_selector("#close-incident")
    page.click("#close-incident")
    page.wait_for_selector("#incident", state="detached")
    assert "incident" not in tab.params()
    # resolve: the incident closes and its timeline says so
    page.click(latency)
    page.wait_for_selector("#resolve:enabled")
    page.click("#resolve")
    page.wait_for_function("() => document.querySelector('#incident-state')?.textContent === 'resolved'")
    assert "resolved" in page.inner_text("#incident .timeline")
    page.click("#close-incident")
    page.wait_for_selector("#incident", state="detached")
    toggle = '#rule-table tr:has-text("checkout latency") .toggle'
    page.click(toggle)
    page.wait_for_selector(f'{toggle}[aria-pressed="false"]')
    page.click(toggle)
    page.wait_for_selector(f'{toggle}[aria-pressed="true"]')


def test_a_deep_link_opens_the_same_view(tab: Page, demo: Demo) -> None:
    page = tab.page
    query = urlencode({"view": "logs", "project": demo.project_id, "level": "ERROR",
                       "service": "checkout", "q": "payment", "tz": "UTC", "range": "6h"})
    tab.sign_in(f"?{query}")  # a pasted link: sign in first, then the same view opens
    page.wait_for_selector("#log-list .logrow")
    assert page.input_value("#search") == "payment"
    assert page.input_value("#log-service") == "checkout"
    assert page.is_checked("#level-ERROR") and not page.is_checked("#level-INFO")
    assert page.get_attribute(".range .preset[aria-pressed=true]", "aria-pressed") == "true"
    assert page.inner_text(".range .preset[aria-pressed=true]") == "last 6h"
    levels = set(page.eval_on_selector_all("#log-list .lvl", "els => els.map(e => e.textContent)"))
    assert levels == {"ERROR"}
    assert page.input_value("#log-tz") == "UTC"
    tab.shot("deep-link-logs")

    metrics = urlencode([("view", "metrics"), ("project", demo.project_id),
                         ("s", "error_rate|checkout|max|"), ("s", "error_rate|payments|max|"),
                         ("bucket", "5m"), ("anomalies", "0")])
    page.goto(f"{demo.base}/ui/?{metrics}")  # same tab: still signed in
    page.wait_for_selector("#chart .uplot")
    assert page.eval_on_selector_all(".chips .chip", "els => els.length") == 2
    assert page.input_value("#bucket") == "5m"
    assert "bucket: 5m" in page.inner_text("#chart-info")
    assert not any(s.startswith("anomalies") for s in _chart_series(tab))
    tab.shot("deep-link-metrics")


VIEWS = ["?view=metrics", "?view=logs", "?view=logs&mode=patterns", "?view=incidents"]


@pytest.mark.parametrize("view", VIEWS)
def test_axe_finds_no_serious_accessibility_violation(browser: Any, demo: Demo, axe: str,
                                                      view: str) -> None:
    # axe is injected as a script: this context alone bypasses the page's CSP to allow it
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    tab = Page(context.new_page(), demo, f"axe-{view.replace('?view=', '').replace('&', '-')}")
    try:
        tab.sign_in(view)
        tab.page.wait_for_selector("#chart .uplot, #log-list .logrow, #patterns, #incident-list table, #incident-list .empty")
        tab.page.wait_for_timeout(500)
        tab.page.add_script_tag(content=axe)
        found: Any = tab.page.evaluate("""async () => {
            const r = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
            return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,
                                           target: v.nodes[0].target.join(' '), help: v.help}));
        }""")
        serious = [v for v in found if v["impact"] in ("serious", "critical")]
        assert not serious, json.dumps(serious, indent=1)
        assert not tab.problems, tab.problems
    finally:
        context.close()
