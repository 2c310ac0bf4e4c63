"""Soak: steady ingest + queries + alert ticks for a while, watching every process's RSS, open
file descriptors and the queue depth.

    eval "$(scripts/services env)"
    nice -n 10 .venv/bin/python bench/soak.py --duration 1800      # or: scripts/test soak 1800

On the services it is given (the single-node set-up of `scripts/services`), it starts one
`opspilot api`, one `opspilot worker` and one `opspilot alerts` (alert interval 15 s, so ~120
ticks in 30 minutes) on a schema, index prefix, queue prefix and project of its own, on ports
`--port-base` .. +2 (default 22100: issue #22's range). Then, for `--duration` seconds:

- every second one metrics request (`--points` points) and one logs request (`--logs`
  records), each with values unique to it;
- every `--query-every` seconds a metrics query and a logs search through the API;
- two alert rules are evaluated on every tick (one of them fires and stays firing);
- every `--sample-every` seconds: VmRSS and the number of open fds of each process (from
  /proc), the worker's `opspilot_queue_depth` (its /metrics), the load average.

At the end: the RSS slope per process (least squares over the samples after the first
`--warmup` seconds, in MiB per hour), fd min/max, queue-depth max, the 5xx count, and a check
that everything that got a 202 is stored exactly once (metric rows in PostgreSQL, log
documents in OpenSearch, counted by their unique values / ids). Exit 1 when something
accepted was lost or doubled, when the RSS slope of a process exceeds `--max-slope` MiB/h,
when a process's fd count peaked higher in the second half than in the first by more than 5
(pools grow to the peak concurrency and hold; a leak keeps growing), or when the queue depth exceeded `--max-depth`.
A JSON with every sample goes to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    Counts,
    fd_count,
    log_body,
    metric_body,
    queue_depths,
    rss_kib,
    services_from_env,
    slope_per_hour,
)
from tests.integration.test_pipeline_e2e import BIN, IngestLog, Proc, Stack  # noqa: E402

RULES = [
    {"name": "soak latency above 10", "metric_name": "soak_latency", "service_name": "soak-svc",
     "aggregation": "avg", "comparator": "gt", "threshold": 10.0, "window": "1m",
     "severity": "warning"},
    {"name": "soak latency no data", "metric_name": "soak_latency", "service_name": "soak-svc",
     "aggregation": "count", "comparator": "lt", "threshold": 1.0, "window": "1m",
     "severity": "critical"},
]


async def post(session: aiohttp.ClientSession, url: str, body: bytes, key: str,
               seen: IngestLog, number: int) -> None:
    """One POST; a 202 is recorded with its count, anything else counted (no retry: the soak
    measures a healthy system, a refusal is a finding)."""
    try:
        async with session.post(url, data=body, headers={"X-API-Key": key,
                                "Content-Type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=30)) as r:
            seen.status_counts[r.status] = seen.status_counts.get(r.status, 0) + 1
            doc = await r.json(content_type=None)
            if r.status == 202:
                seen.accepted[number] = int(doc["accepted"])
            else:
                seen.failed[number] = f"HTTP {r.status}: {str(doc)[:200]}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        seen.status_counts[0] = seen.status_counts.get(0, 0) + 1
        seen.failed[number] = repr(exc)


async def query_loop(api: str, headers: dict[str, str], every: float, stop: asyncio.Event,
                     statuses: dict[int, int], latencies: list[float]) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            now = datetime.now(UTC)
            window = {"start_time": (now - timedelta(minutes=15)).isoformat(),
                      "end_time": now.isoformat()}
            for path, params in (
                ("/api/metrics/query", {"metric_name": "soak_latency", "aggregation": "p95",
                                        "time_bucket": "1m", **window}),
                ("/api/logs/query", {"search": "handled -timeout", "limit": "50", **window}),
            ):
                started = time.perf_counter()
                try:
                    async with s.get(api + path, params=params, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=30)) as r:
                        await r.read()
                        statuses[r.status] = statuses.get(r.status, 0) + 1
                except (aiohttp.ClientError, TimeoutError):
                    statuses[0] = statuses.get(0, 0) + 1
                latencies.append(time.perf_counter() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800)
    parser.add_argument("--points", type=int, default=100, help="metric points per second")
    parser.add_argument("--logs", type=int, default=50, help="log records per second")
    parser.add_argument("--query-every", type=float, default=2.0)
    parser.add_argument("--sample-every", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=120.0)
    parser.add_argument("--port-base", type=int, default=22100)
    parser.add_argument("--max-slope", type=float, default=20.0, help="MiB/h per process")
    parser.add_argument("--max-depth", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "build" / "soak.json"))
    args = parser.parse_args()
    urls = services_from_env()
    tag = uuid.uuid4().hex[:8]
    stack = Stack(urls, f"soak_{tag}", f"soak-{tag}-", f"soak-{tag}.", f"soak:{tag}:",
                  Path(tempfile.mkdtemp(prefix="opspilot-soak-")),
                  extra_env={"OPSPILOT_ALERT_INTERVAL_SECONDS": "15",
                             "OPSPILOT_RATE_LIMITS_ENABLED": "false"})
    await asyncio.to_thread(subprocess.run, [str(BIN), "migrate"], env=stack.env(), check=True,
                            capture_output=True, timeout=300)
    counts = Counts(urls, stack.schema, stack.index_prefix)
    samples: list[dict[str, Any]] = []
    metric_seen, log_seen = IngestLog(), IngestLog()
    query_status: dict[int, int] = {}
    query_latency: list[float] = []
    try:
        project = stack.create_project("soak")
        port = args.port_base
        api_proc = stack._spawn("api", ["api", "--port", str(port)],
                                f"http://127.0.0.1:{port}/healthz")
        worker = stack._spawn("worker", ["worker", "--metrics-port", str(port + 1)],
                              f"http://127.0.0.1:{port + 1}/healthz")
        alerts = stack._spawn("alerts", ["alerts", "--metrics-port", str(port + 2)],
                              f"http://127.0.0.1:{port + 2}/metrics")
        for proc in (api_proc, worker, alerts):
            await proc.wait_ready()
        api = f"http://127.0.0.1:{port}"
        headers = project.query_headers()
        async with aiohttp.ClientSession() as s:
            for rule in RULES:
                async with s.post(api + "/api/rules", json=rule, headers=headers) as r:
                    if r.status != 201:
                        raise SystemExit(f"rule refused: {r.status} {await r.text()}")
        procs: dict[str, Proc] = {"api": api_proc, "worker": worker, "alerts": alerts}
        stop = asyncio.Event()
        queries = asyncio.create_task(query_loop(api, headers, args.query_every, stop,
                                                 query_status, query_latency))
        started = time.monotonic()
        next_sample = started
        second = 0
        pending: set[asyncio.Task[None]] = set()
        print(f"soak {tag}: {args.duration:.0f} s, {args.points} points/s + {args.logs} logs/s, "
              f"queries every {args.query_every} s, alert tick 15 s", flush=True)
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < args.duration:
                for proc in procs.values():
                    if not proc.alive():
                        raise SystemExit(f"{proc.name} died:\n{proc.output()}")
                at = datetime.now(UTC)
                for coro in (
                    post(session, api + "/api/ingest/metrics",
                         metric_body(second, args.points, at), project.api_key, metric_seen,
                         second),
                    post(session, api + "/api/ingest/logs", log_body(second, args.logs, at),
                         project.api_key, log_seen, second),
                ):
                    task = asyncio.create_task(coro)
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if time.monotonic() >= next_sample:
                    gauges = await queue_depths(worker)
                    sample = {"t": round(time.monotonic() - started, 1),
                              "load1": round(os.getloadavg()[0], 2),
                              "depth": sum(v for k, v in gauges.items() if "depth" in k),
                              "age_s": max((v for k, v in gauges.items() if "age" in k),
                                           default=0.0),
                              "utilisation": gauges.get("opspilot_worker_utilisation", 0.0)}
                    for name, proc in procs.items():
                        sample[f"{name}_rss_kib"] = rss_kib(proc.pid)
                        sample[f"{name}_fds"] = fd_count(proc.pid)
                    samples.append(sample)
                    print(json.dumps(sample), flush=True)
                    next_sample += args.sample_every
                second += 1
                await asyncio.sleep(max(0.0, started + second - time.monotonic()))
            if pending:
                await asyncio.wait(pending, timeout=60)
        stop.set()
        await queries
        expected_points = metric_seen.accepted_points
        expected_logs = log_seen.accepted_points
        stored = await counts.wait_exact(project.project_id, expected_points, expected_logs, 300)
        metric_census = await counts.metric_values(project.project_id)
        log_census = await counts.log_ids(project.project_id)
        alert_metrics = await _text(f"http://127.0.0.1:{port + 2}/metrics")
    finally:
        stack.stop_all()
        await counts.drop(stack.queue_prefix)

    report = summarise(args, samples, metric_seen, log_seen, query_status, query_latency,
                       stored, metric_census, log_census, alert_metrics)
    write_json(Path(args.out), {"report": report, "samples": samples})
    print_report(args, report)
    return 0 if report["ok"] else 1


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))


async def _text(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()


def summarise(args: Any, samples: list[dict[str, Any]], metric_seen: IngestLog,
              log_seen: IngestLog, query_status: dict[int, int], query_latency: list[float],
              stored: tuple[int, int], metric_census: dict[float, int],
              log_census: dict[str, int], alert_metrics: str) -> dict[str, Any]:
    steady = [s for s in samples if s["t"] >= args.warmup] or samples
    procs = {}
    for name in ("api", "worker", "alerts"):
        xs = [s["t"] for s in steady]
        rss = [s[f"{name}_rss_kib"] / 1024 for s in steady]
        fds = [s[f"{name}_fds"] for s in samples]
        half = len(fds) // 2
        procs[name] = {"rss_start_mib": round(rss[0], 1), "rss_end_mib": round(rss[-1], 1),
                       "rss_max_mib": round(max(rss), 1),
                       "rss_slope_mib_per_h": round(slope_per_hour(xs, rss), 2),
                       "fds_min": min(fds), "fds_max": max(fds),
                       # pools grow to the peak concurrency, then hold: a leak keeps growing,
                       # so compare the second half's peak with the first half's
                       "fds_growth": max(fds[half:]) - max(fds[:half]) if half else 0}
    depth_max = max((s["depth"] for s in samples), default=0)
    age_max = max((s["age_s"] for s in samples), default=0)
    busy = [s["utilisation"] for s in steady]
    lost_points = expected_missing(metric_seen, metric_census, args.points)
    lost_logs = sum(1 for n, k in log_seen.accepted.items() for i in range(k)
                    if f"soak-{n}-{i}" not in log_census)
    doubled = sum(1 for c in metric_census.values() if c > 1) + sum(
        1 for c in log_census.values() if c > 1)
    ticks = sum(float(line.split()[-1]) for line in alert_metrics.splitlines()
                if line.startswith("opspilot_alert_ticks_total"))
    evaluated = sum(float(line.split()[-1]) for line in alert_metrics.splitlines()
                    if line.startswith("opspilot_alert_rules_evaluated_total"))
    fivexx = sum(c for st, c in {**metric_seen.status_counts}.items() if st >= 500) + sum(
        c for st, c in log_seen.status_counts.items() if st >= 500) + sum(
        c for st, c in query_status.items() if st >= 500 or st == 0)
    report = {
        "duration_s": args.duration, "points_accepted": metric_seen.accepted_points,
        "logs_accepted": log_seen.accepted_points, "stored_points": stored[0],
        "stored_logs": stored[1], "lost_points": lost_points, "lost_logs": lost_logs,
        "duplicated": doubled, "ingest_refused": len(metric_seen.failed) + len(log_seen.failed),
        "refusals": [f"metrics #{n}: {why}" for n, why in metric_seen.failed.items()][:5]
        + [f"logs #{n}: {why}" for n, why in log_seen.failed.items()][:5],
        "queries": sum(query_status.values()), "query_statuses": query_status,
        "query_p50_ms": round(statistics.median(query_latency) * 1000, 1) if query_latency else None,
        "query_p95_ms": round(statistics.quantiles(query_latency, n=20)[-1] * 1000, 1)
        if len(query_latency) > 20 else None,
        "errors_5xx_or_transport": fivexx, "alert_ticks": ticks,
        "alert_rules_evaluated": evaluated,
        "queue_depth_max": depth_max, "message_age_max_s": round(age_max, 2),
        "worker_utilisation_median": round(statistics.median(busy), 3) if busy else None,
        "processes": procs,
        "load1_median": round(statistics.median(s["load1"] for s in samples), 2) if samples else None,
    }
    report["ok"] = (evaluated > 0 and not lost_points and not lost_logs and not doubled
                    and all(p["rss_slope_mib_per_h"] <= args.max_slope for p in procs.values())
                    and all(p["fds_growth"] <= 5 for p in procs.values())
                    and depth_max <= args.max_depth)
    return report


def expected_missing(seen: IngestLog, census: dict[float, int], size: int) -> int:
    return sum(1 for n, k in seen.accepted.items() for i in range(k)
               if float(n * size + i) not in census)


def print_report(args: Any, report: dict[str, Any]) -> None:
    print()
    print(f"soak: {report['duration_s']:.0f} s, {args.points} points/s + {args.logs} logs/s, "
          f"load1 median {report['load1_median']}")
    print("| process | RSS start → end (MiB) | RSS max | RSS slope (MiB/h) | fds min–max | "
          "fd peak, 2nd half − 1st half |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, p in report["processes"].items():
        print(f"| {name} | {p['rss_start_mib']} → {p['rss_end_mib']} | {p['rss_max_mib']} | "
              f"{p['rss_slope_mib_per_h']:+.2f} | {p['fds_min']}–{p['fds_max']} | "
              f"{p['fds_growth']:+d} |")
    print(f"\naccepted {report['points_accepted']:,} points, {report['logs_accepted']:,} logs; "
          f"stored {report['stored_points']:,} / {report['stored_logs']:,}; lost "
          f"{report['lost_points']} / {report['lost_logs']}; duplicated {report['duplicated']}; "
          f"refused {report['ingest_refused']} {report['refusals']}")
    print(f"queries {report['queries']} (statuses {report['query_statuses']}), p50 "
          f"{report['query_p50_ms']} ms, p95 {report['query_p95_ms']} ms; 5xx/transport "
          f"{report['errors_5xx_or_transport']}; alert ticks {report['alert_ticks']:.0f}, rules "
          f"evaluated {report['alert_rules_evaluated']:.0f};"
          f" queue depth max {report['queue_depth_max']}, message age max "
          f"{report['message_age_max_s']} s, worker utilisation median "
          f"{report['worker_utilisation_median']}")
    print("OK" if report["ok"] else "FAILED")


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
