"""A real Prometheus as the reference for OpsPilot's PromQL: a seeded data set, written as
OpenMetrics, turned into TSDB blocks by `promtool tsdb create-blocks-from openmetrics`, served
by `prometheus` on its own port and data directory; the query corpus; the comparison.

Used by tests/integration/test_promql_differential.py and bench/promql_queries.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from opspilot.domain.ingest import MetricBatch
from opspilot.domain.metrics import MetricPoint

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START_MS = 1_709_251_200_000  # 2024-03-01T00:00:00Z
CORPUS = Path(__file__).parent / "integration" / "promql_corpus.jsonl"
BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")


@attrs.define
class SeriesData:
    name: str
    service: str | None
    tags: dict[str, str]
    times: list[int] = attrs.Factory(list)
    values: list[float] = attrs.Factory(list)

    def labels_text(self) -> str:
        pairs = dict(self.tags)
        if self.service:
            pairs["service"] = self.service
        return ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))


def _timeline(rng: random.Random, start: int, end: int, interval: int, jitter: int,
              gaps: bool) -> list[int]:
    times = []
    t = start
    while t < end:
        if gaps and rng.random() < 0.004:
            t += rng.choice([7, 12, 20]) * 60_000  # a scrape outage longer than the lookback
        times.append(t + (rng.randint(-jitter, jitter) if jitter else 0))
        t += interval
    return [x for x in times if x < end]


def generate(seed: int = 20, start: int = START_MS, hours: float = 3.0,
             interval_ms: int = 15_000, services: tuple[str, ...] = ("api", "db", "web"),
             hosts: int = 2) -> list[SeriesData]:
    """Counters with resets, gauges (some negative, some with gaps), a classic histogram, a
    series without a service; scrape jitter on most series."""
    rng = random.Random(seed)
    end = start + int(hours * 3_600_000)
    out: list[SeriesData] = []
    for service in services:
        for code in ("200", "500"):
            for method in ("GET", "POST"):
                s = SeriesData("http_requests_total", service,
                               {"code": code, "method": method})
                value = rng.uniform(0, 1000)
                for t in _timeline(rng, start, end, interval_ms, 300, False):
                    if rng.random() < 0.004:
                        value = rng.uniform(0, 5)  # a restart: the counter starts again
                    value += rng.expovariate(1 / (50 if code == "200" else 3))
                    s.times.append(t)
                    s.values.append(round(value, 3))
                out.append(s)
        for h in range(hosts):
            s = SeriesData("cpu_usage", service, {"host": f"h{h + 1}"})
            for t in _timeline(rng, start, end, interval_ms, 300, h == 0):
                s.times.append(t)
                s.values.append(round(rng.betavariate(2, 5), 4))
            out.append(s)
        s = SeriesData("queue_depth", service, {})
        for t in _timeline(rng, start, end, interval_ms * 2, 0, True):
            s.times.append(t)
            s.values.append(float(rng.randint(0, 40)))
        out.append(s)
        s = SeriesData("temperature", service, {"region": rng.choice(["eu", "us"])})
        for t in _timeline(rng, start, end, interval_ms, 0, False):
            s.times.append(t)
            s.values.append(round(rng.gauss(0, 8), 2))
        out.append(s)
        out.extend(_histogram(rng, service, start, end, interval_ms))
    build = SeriesData("build_info", None, {"version": "1.4.2"})
    build.times = list(range(start, end, 60_000))
    build.values = [1.0] * len(build.times)
    out.append(build)
    return out


def _histogram(rng: random.Random, service: str, start: int, end: int, interval_ms: int
               ) -> list[SeriesData]:
    buckets = [SeriesData("request_duration_seconds_bucket", service, {"le": le})
               for le in BUCKETS]
    total = SeriesData("request_duration_seconds_sum", service, {})
    count = SeriesData("request_duration_seconds_count", service, {})
    counts = [0] * len(BUCKETS)
    observed = 0.0
    bounds = [float(b) for b in BUCKETS]
    for t in _timeline(rng, start, end, interval_ms, 200, False):
        for _ in range(rng.randint(0, 30)):
            duration = rng.lognormvariate(-1.6, 0.9)
            observed += duration
            for i, bound in enumerate(bounds):
                if duration <= bound:
                    counts[i] += 1
        for series, value in zip(buckets, counts, strict=True):
            series.times.append(t)
            series.values.append(float(value))
        total.times.append(t)
        total.values.append(round(observed, 6))
        count.times.append(t)
        count.values.append(float(counts[-1]))
    return [*buckets, total, count]


def sample_count(series: list[SeriesData]) -> int:
    return sum(len(s.times) for s in series)


def write_openmetrics(series: list[SeriesData], path: Path) -> None:
    """One family at a time (OpenMetrics wants a family's samples together), `# EOF` last."""
    with path.open("w") as out:
        for s in sorted(series, key=lambda s: s.name):
            labels = s.labels_text()
            head = f"{s.name}{{{labels}}}" if labels else s.name
            out.writelines(f"{head} {v!r} {t / 1000:.3f}\n"
                           for t, v in zip(s.times, s.values, strict=True))
        out.write("# EOF\n")


def points(series: list[SeriesData], project_id: str, per_batch: int = 5_000
           ) -> Iterator[MetricBatch]:
    """The same samples as OpsPilot points, in batches."""
    batch: list[MetricPoint] = []
    n = 0
    for s in series:
        for t, v in zip(s.times, s.values, strict=True):
            batch.append(MetricPoint(project_id, EPOCH + timedelta(milliseconds=t), s.name, v,
                                     s.service, s.tags))
            if len(batch) == per_batch:
                n += 1
                yield MetricBatch(f"promql-{project_id}-{n}", project_id, batch[0].timestamp,
                                  batch)
                batch = []
    if batch:
        yield MetricBatch(f"promql-{project_id}-{n + 1}", project_id, batch[0].timestamp, batch)


# -- the Prometheus peer -------------------------------------------------------------------


def available() -> bool:
    return Path(PROMETHEUS).exists() and Path(PROMTOOL).exists()


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), so that parallel runs do not meet."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def prometheus_on(series: list[SeriesData], port: int, flags: tuple[str, ...] = ()
                        ) -> AsyncIterator[str]:
    """A Prometheus serving exactly `series` on 127.0.0.1:port (with extra command-line
    `flags`); yields its base URL."""
    workdir = Path(tempfile.mkdtemp(prefix="opspilot-promql-"))
    process = None
    try:
        source = workdir / "data.om"
        write_openmetrics(series, source)
        data = workdir / "tsdb"
        promtool = await asyncio.create_subprocess_exec(
            PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, errors = await promtool.communicate()
        if promtool.returncode != 0:
            raise RuntimeError(f"promtool failed: {errors.decode()[-2000:]}")
        source.unlink()
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\n")
        with (workdir / "prometheus.log").open("w") as log:
            process = await asyncio.create_subprocess_exec(
                PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y",
                "--log.level=warn", *flags, stdout=asyncio.subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        await _wait_ready(url, process)
        yield url
    finally:
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def _wait_ready(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("prometheus did not become ready")


# -- the corpus ------------------------------------------------------------------------------


COUNTERS = [
    "http_requests_total", 'http_requests_total{service="api"}',
    'http_requests_total{code=~"5.."}', 'http_requests_total{service!="db",method="GET"}',
    'http_requests_total{method!~"G.*"}',
]
GAUGES = [
    "cpu_usage", 'cpu_usage{host!~"h1"}', "queue_depth", "temperature",
    '{__name__=~"cpu_usage|temperature"}', 'cpu_usage{service=~"api|web"}',
]
SELECTORS = [*COUNTERS, *GAUGES, "build_info", 'build_info{service=""}',
             "queue_depth offset 10m", 'http_requests_total{code="500"} offset 7m',
             "request_duration_seconds_bucket"]


def expressions() -> list[str]:
    """The supported subset, from templates: selectors, range functions, aggregations,
    operators and instant functions, each combined with the others where it makes sense."""
    found = list(SELECTORS)
    for fn in ("rate", "irate", "increase"):
        for sel, rng in zip(COUNTERS, ("1m", "5m", "10m", "2m", "90s"), strict=True):
            found.append(f"{fn}({sel}[{rng}])")
        found.append(f"{fn}(http_requests_total[5m] offset 3m)")
        found.append(f"{fn}(request_duration_seconds_count[3m])")
    for fn in ("avg", "sum", "min", "max", "count", "last"):
        for sel, rng in (("cpu_usage", "5m"), ("queue_depth", "10m"), ("temperature", "2m")):
            found.append(f"{fn}_over_time({sel}[{rng}])")
    found += ["quantile_over_time(0.9, cpu_usage[10m])",
              "quantile_over_time(0.5, temperature[5m] offset 1m)",
              "quantile_over_time(0, queue_depth[5m])"]
    for agg in ("sum", "avg", "min", "max", "count"):
        found.append(f"{agg}(cpu_usage)")
        found.append(f"{agg} by (service) (rate(http_requests_total[5m]))")
        found.append(f"{agg} without (host) (cpu_usage)")
        found.append(f"{agg} by (service, code) (increase(http_requests_total[10m]))")
    found += [
        "topk(2, cpu_usage)", "bottomk(1, temperature)", "topk by (service) (1, cpu_usage)",
        "bottomk without (host) (1, cpu_usage)", "topk(3, rate(http_requests_total[5m]))",
        "quantile(0.5, cpu_usage)", "quantile by (service) (0.9, cpu_usage)",
        "quantile(0.25, rate(http_requests_total[5m]))",
        "sum by (method) (rate(http_requests_total[5m])) * 60",
    ]
    found += [
        "cpu_usage * 100", "cpu_usage > 0.3", "0.3 < cpu_usage", "cpu_usage > bool 0.3",
        "1 - cpu_usage", "temperature / 2", "temperature % 3", "2 ^ queue_depth / 1e6",
        "-temperature", "temperature <= -3", "queue_depth == 10", "queue_depth != bool 10",
        "cpu_usage / on(service) group_left queue_depth",
        "cpu_usage * on(service) group_left(region) temperature",
        "queue_depth / on(service) group_right cpu_usage",
        "rate(http_requests_total{code=\"500\"}[5m]) / ignoring(code) "
        "rate(http_requests_total{code=\"200\"}[5m])",
        "sum by (service) (rate(http_requests_total{code=\"500\"}[5m])) / "
        "sum by (service) (rate(http_requests_total[5m]))",
        "sum by (service) (rate(http_requests_total[5m])) > on(service) "
        "sum by (service) (rate(http_requests_total[5m] offset 10m))",
        "cpu_usage > bool on(service, host) cpu_usage offset 1m",
        "temperature + on(service) group_left sum by (service) (queue_depth)",
        "cpu_usage + on(service) queue_depth", "queue_depth + on(service) cpu_usage",
        "cpu_usage + ignoring(host) cpu_usage", "sum(cpu_usage) + on() group_left cpu_usage",
        "1 + 2 * 3", "2 ^ 3 ^ 2", "5 % 3", "1 > bool 2", "time()", "time() - 60",
        "vector(1)", "vector(time())", "scalar(sum(queue_depth))",
        "scalar(cpu_usage)", "queue_depth * scalar(count(cpu_usage))",
    ]
    for q in ("0.5", "0.95", "0.99"):
        found.append(f"histogram_quantile({q}, sum by (le) "
                     f"(rate(request_duration_seconds_bucket[5m])))")
        found.append(f"histogram_quantile({q}, sum by (service, le) "
                     f"(rate(request_duration_seconds_bucket[10m])))")
    found += [
        "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
        "histogram_quantile(0.9, request_duration_seconds_bucket)",
        "rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])",
        "abs(temperature)", "clamp(temperature, -5, 5)", "clamp_min(temperature, 0)",
        "clamp_max(cpu_usage, 0.25)", "round(cpu_usage, 0.1)", "round(temperature)",
        "round(rate(http_requests_total[5m]), 0.01)", "abs(-cpu_usage)",
        "clamp(temperature, 5, -5)",
    ]
    return found


def corpus(start: int = START_MS) -> list[dict[str, Any]]:
    """Each expression as one instant query and one range query, at times and steps cycled
    through edges: mid-data, right after a gap, past the data's end, unaligned steps."""
    minute = 60_000
    instants = [start + 31 * minute, start + 77 * minute + 7_500, start + 179 * minute,
                start + 183 * minute, start + 121 * minute]
    ranges = [(start + 10 * minute, start + 120 * minute, 60_000),
              (start, start + 185 * minute, 300_000),
              (start + 60 * minute, start + 90 * minute, 15_000),
              (start + 5 * minute, start + 65 * minute, 37_000)]
    out: list[dict[str, Any]] = []
    for i, expr in enumerate(expressions()):
        out.append({"query": expr, "time": instants[i % len(instants)] / 1000})
        r_start, r_end, step = ranges[i % len(ranges)]
        out.append({"query": expr, "start": r_start / 1000, "end": r_end / 1000,
                    "step": step / 1000})
    return out


def write_corpus(path: Path = CORPUS) -> None:
    path.write_text("".join(json.dumps(c, sort_keys=True) + "\n" for c in corpus()))


def read_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- comparison ------------------------------------------------------------------------------


def _close(a: str, b: str, rel: float) -> bool:
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return x == y or abs(x - y) <= rel * max(abs(x), abs(y))


def _points(item: dict[str, Any]) -> list[list[Any]]:
    return item["values"] if "values" in item else [item["value"]]


def difference(prometheus: dict[str, Any], opspilot: dict[str, Any], rel: float = 1e-9
               ) -> str | None:
    """None when both answers agree (same status and error type, or same result type, same
    label sets, same timestamps, values within `rel`); else what differs."""
    if prometheus["status"] != opspilot["status"]:
        return f"status {prometheus['status']} vs {opspilot['status']}: " \
               f"{prometheus.get('error') or opspilot.get('error')}"
    if prometheus["status"] == "error":
        same = prometheus["errorType"] == opspilot["errorType"]
        return None if same else f"errorType {prometheus['errorType']} vs {opspilot['errorType']}"
    p, o = prometheus["data"], opspilot["data"]
    if p["resultType"] != o["resultType"]:
        return f"resultType {p['resultType']} vs {o['resultType']}"
    if p["resultType"] in ("scalar", "string"):
        ok = p["result"][0] == o["result"][0] and _close(p["result"][1], o["result"][1], rel)
        return None if ok else f"{p['result']} vs {o['result']}"
    mine = {json.dumps(i["metric"], sort_keys=True): _points(i) for i in o["result"]}
    theirs = {json.dumps(i["metric"], sort_keys=True): _points(i) for i in p["result"]}
    if set(mine) != set(theirs):
        return (f"series only in Prometheus: {sorted(set(theirs) - set(mine))[:3]}; "
                f"only in OpsPilot: {sorted(set(mine) - set(theirs))[:3]}")
    for key, points in theirs.items():
        ours = mine[key]
        if [float(t) for t, _ in points] != [float(t) for t, _ in ours]:
            return f"{key}: timestamps differ ({len(points)} vs {len(ours)} points)"
        for (t, a), (_, b) in zip(points, ours, strict=True):
            if not _close(a, b, rel):
                return f"{key} at {t}: {a} vs {b}"
    return None


if __name__ == "__main__":
    write_corpus()
    print(f"{len(corpus())} queries written to {CORPUS}")
