"""Fault suite on the cluster (`scripts/services up --cluster`): 2 API replicas and 3 workers
ingest metrics and logs at a steady rate while, in turn, the OpenSearch cluster manager is
killed -9 and restarted, a RabbitMQ node (the metrics queue's leader) is killed -9 and
restarted, PostgreSQL is restarted, a worker is killed -9 (and replaced), an API replica is
killed -9 (and restarted). After each fault, everything that got a 202 must be stored exactly
once, counted by the unique value / correlation id each record carries.

    bash scripts/services up --cluster && eval "$(bash scripts/services env --cluster)"
    nice -n 10 .venv/bin/python bench/faults.py            # full (~60 s hold per fault)
    scripts/test faults                                      # the short form CI runs

The client is a small load balancer: each request goes to the next API replica (a replica
that refused a connection is skipped for 5 s, as a load balancer's health check would); a
refused connection or a 503/429 is retried (after Retry-After) with the same body. Such a re-sent request may legitimately be stored twice (a publish the broker confirmed
after the API had given up); duplicates are reported for never-re-sent requests (a defect)
and re-sent ones (the documented at-least-once edge) apart. Queries (metrics p95 and a log
search) run every 0.5 s against the replicas in turn, without retries: their non-2xx share
during each fault window is the "5xx during" column.

Time to recover: from the fault until the broken part is back (cluster green with 3 nodes /
3 RabbitMQ nodes running / PostgreSQL answering / a replacement worker or replica ready) AND
a probe (one metric point and one log posted after that) is visible in the stores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Counts, log_body, log_id, metric_body  # noqa: E402
from tests.integration.test_pipeline_e2e import BIN, PG_BIN, Proc, Project, Stack  # noqa: E402

CLUSTER = Path(os.environ.get("OPSPILOT_CLUSTER_DIR", ROOT / ".services" / "cluster"))
API_PORTS = (22410, 22411)
WORKER_PORTS = (22420, 22421, 22422, 22423, 22424)
RMQ_BIN = Path("/usr/lib/rabbitmq/bin")


# -- the client side --------------------------------------------------------------------------


@attrs.define
class Ledger:
    """What the client saw. Request numbers are global; each kind has its own body size."""

    accepted: dict[tuple[str, int], int] = attrs.field(factory=dict)
    resent: set[tuple[str, int]] = attrs.field(factory=set)
    failed: dict[tuple[str, int], str] = attrs.field(factory=dict)
    # (monotonic time, kind, status) of every attempt: 0 = transport error
    attempts: list[tuple[float, str, int]] = attrs.field(factory=list)


class Balancer:
    """Round robin with a passive health check, as a load balancer or a Kubernetes Service
    (readiness) would: a replica that refused a connection is skipped for `hold` seconds."""

    def __init__(self, apis: list[str], hold: float = 5.0) -> None:
        self.apis = apis
        self._turn = itertools.count()
        self._down: dict[str, float] = {}
        self._hold = hold

    def next(self) -> str:
        now = time.monotonic()
        for _ in range(len(self.apis)):
            api = self.apis[next(self._turn) % len(self.apis)]
            if self._down.get(api, 0.0) <= now:
                return api
        return self.apis[next(self._turn) % len(self.apis)]

    def refused(self, api: str) -> None:
        self._down[api] = time.monotonic() + self._hold


async def ingest_one(session: aiohttp.ClientSession, lb: Balancer, kind: str, number: int,
                     body: bytes, key: str, ledger: Ledger, give_up: float = 180.0) -> None:
    deadline = time.monotonic() + give_up
    path = "/api/ingest/metrics" if kind == "metrics" else "/api/ingest/logs"
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    while True:
        delay = 0.5
        api = lb.next()
        try:
            async with session.post(api + path, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=30)) as r:
                ledger.attempts.append((time.monotonic(), kind, r.status))
                doc = orjson.loads(await r.read() or b"{}")
                if r.status == 202:
                    ledger.accepted[(kind, number)] = int(doc["accepted"])
                    return
                if r.status not in (429, 503):
                    ledger.failed[(kind, number)] = f"HTTP {r.status}: {str(doc)[:300]}"
                    return
                delay = min(5.0, float(r.headers.get("Retry-After", "1")))
        except aiohttp.ClientConnectorError:
            ledger.attempts.append((time.monotonic(), kind, 0))
            lb.refused(api)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            ledger.attempts.append((time.monotonic(), kind, 0))
        ledger.resent.add((kind, number))
        if time.monotonic() > deadline:
            ledger.failed[(kind, number)] = "gave up"
            return
        await asyncio.sleep(delay)


async def steady_ingest(lb: Balancer, project: Project, ledger: Ledger, rate: float,
                        points: int, logs: int, stop: asyncio.Event) -> None:
    """`rate` metrics requests and `rate` logs requests per second until `stop`."""
    numbers = itertools.count()
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for tick in itertools.count():
            if stop.is_set():
                break
            n = next(numbers)
            at = datetime.now(UTC)
            for kind, body in (("metrics", metric_body(n, points, at)),
                               ("logs", log_body(n, logs, at, tag="f"))):
                task = asyncio.create_task(
                    ingest_one(session, lb, kind, n, body, project.api_key, ledger))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, started + (tick + 1) / rate - time.monotonic()))
        if tasks:
            await asyncio.wait(tasks, timeout=240)


async def steady_queries(lb: Balancer, project: Project, stop: asyncio.Event,
                         seen: list[tuple[float, int]], every: float = 0.5) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            now = datetime.now(UTC)
            window = {"start_time": now.replace(minute=0, second=0).isoformat(),
                      "end_time": now.isoformat()}
            for path, params in (
                ("/api/metrics/query", {"metric_name": "soak_latency", "aggregation": "p95",
                                        "time_bucket": "1m", **window}),
                ("/api/logs/query", {"search": "handled", "limit": "20", **window}),
            ):
                api = lb.next()
                try:
                    async with s.get(api + path, params=params,
                                     headers=project.query_headers(),
                                     timeout=aiohttp.ClientTimeout(total=15)) as r:
                        await r.read()
                        seen.append((time.monotonic(), r.status))
                except aiohttp.ClientConnectorError:
                    seen.append((time.monotonic(), 0))
                    lb.refused(api)
                except (aiohttp.ClientError, TimeoutError):
                    seen.append((time.monotonic(), 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


# -- the cluster's processes -----------------------------------------------------------------


def services(*args: str) -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "services"), *args, "--cluster"],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/services {' '.join(args)} --cluster failed:\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def pid_of(path: Path) -> int:
    return int(path.read_text().split()[0])


async def http_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(
            url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return await r.json(content_type=None)


async def os_manager(os_urls: list[str]) -> int:
    """The node number (1-3) of the elected cluster manager."""
    for url in os_urls:
        with contextlib.suppress(Exception):
            rows = await http_json(url + "/_cat/cluster_manager?format=json")
            return int(rows[0]["node"].split("-")[-1])
    raise RuntimeError("no OpenSearch node names a cluster manager")


async def os_green(os_urls: list[str]) -> bool:
    for url in os_urls:
        with contextlib.suppress(Exception):
            doc = await http_json(url + "/_cluster/health")
            return bool(doc["status"] == "green" and doc["number_of_nodes"] == 3)
    return False


def rabbitmqctl(node: int, *args: str) -> str:
    d = CLUSTER / "rabbitmq"
    env = {**os.environ, "HOME": str(d / "home"), "RABBITMQ_USE_LONGNAME": "false",
           "ERL_EPMD_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": "22869",
           "RABBITMQ_CTL_DIST_PORT_MIN": "22680", "RABBITMQ_CTL_DIST_PORT_MAX": "22699",
           "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
           "RABBITMQ_NODENAME": f"opspilot-c{node}@localhost",
           "RABBITMQ_CONF_ENV_FILE": str(d / f"node{node}" / "rabbitmq-env.conf"),
           "RABBITMQ_CONFIG_FILE": str(d / f"node{node}" / "rabbitmq.conf"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
           "RABBITMQ_MNESIA_BASE": str(d / f"node{node}" / "mnesia"),
           "RABBITMQ_LOG_BASE": str(d / f"node{node}" / "log")}
    done = subprocess.run([str(RMQ_BIN / "rabbitmqctl"), "-q", "-n",
                           f"opspilot-c{node}@localhost", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    return done.stdout


def queue_leader(queue: str) -> int:
    """The node leading a quorum queue (1-3); node 1 when it cannot be told."""
    for node in (1, 2, 3):
        with contextlib.suppress(Exception):
            for line in rabbitmqctl(node, "list_queues", "name", "leader").splitlines():
                name, _, leader = line.partition("\t")
                if name == queue and "@" in leader:
                    return int(leader.split("@")[0].rsplit("c", 1)[-1])
    return 1


def quorum_members(queue: str) -> int:
    with contextlib.suppress(Exception):
        for line in rabbitmqctl(1, "list_queues", "name", "members").splitlines():
            name, _, members = line.partition("\t")
            if name == queue:
                return members.count("@")
    return 0


def pg_restart() -> None:
    data = (CLUSTER / "pg").resolve() / "data"
    command = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-t", "60", "-w",
               "restart", "-l", str(data.parent / "log" / "postgres.log")]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl restart failed: {done.stderr}")


# -- one run ----------------------------------------------------------------------------------


@attrs.define
class Row:
    fault: str
    lost: int
    duplicated: int
    duplicated_resent: int
    errors_during: str
    query_errors_during: str
    recover_s: float
    longest_gap_s: float = 0.0
    detail: str = ""


@attrs.define
class Run:
    stack: Stack
    project: Project
    counts: Counts
    os_urls: list[str]
    amqp_urls: list[str]
    apis: dict[int, Proc]
    workers: dict[int, Proc]
    ledger: Ledger
    queries: list[tuple[float, int]]
    points: int
    logs: int
    probe_no: itertools.count[int] = attrs.field(factory=lambda: itertools.count(10_000_000))

    async def start_api(self, port: int) -> None:
        proc = self.stack._spawn("api", ["api", "--port", str(port)],
                                 f"http://127.0.0.1:{port}/healthz")
        await proc.wait_ready(180)
        self.apis[port] = proc

    async def start_worker(self, port: int) -> None:
        proc = self.stack._spawn("worker", ["worker", "--metrics-port", str(port)],
                                 f"http://127.0.0.1:{port}/healthz")
        await proc.wait_ready(180)
        self.workers[port] = proc

    async def probe_visible(self, within: float = 300.0) -> None:
        """One metric point and one log, posted now (retried like any request), visible."""
        n = next(self.probe_no)
        at = datetime.now(UTC)
        ledger = Ledger()
        lb = Balancer([f"http://127.0.0.1:{p}" for p, proc in self.apis.items() if proc.alive()])
        async with aiohttp.ClientSession() as s:
            await ingest_one(s, lb, "metrics", n, metric_body(n, 1, at), self.project.api_key,
                             ledger, give_up=within)
            await ingest_one(s, lb, "logs", n, log_body(n, 1, at, tag="f"), self.project.api_key,
                             ledger, give_up=within)
        if ledger.failed:
            raise RuntimeError(f"probe refused: {ledger.failed}")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                values = await self.counts.metric_values(self.project.project_id)
                ids = await self.counts.log_ids(self.project.project_id)
                if float(n) in values and log_id("f", n, 0) in ids:
                    return
            await asyncio.sleep(0.5)
        raise RuntimeError("the probe never became visible")

    async def census(self, since: int, within: float) -> tuple[int, int, int, str]:
        """(lost, duplicated, duplicated among re-sent, detail) over everything accepted so
        far, once the stores hold it all (or `within` passed)."""
        accepted = dict(self.ledger.accepted)
        want_points = sum(v for (k, _), v in accepted.items() if k == "metrics")
        want_logs = sum(v for (k, _), v in accepted.items() if k == "logs")
        deadline = time.monotonic() + within
        while True:
            values = await self.counts.metric_values(self.project.project_id)
            ids = await self.counts.log_ids(self.project.project_id)
            lost_p = [(n, i) for (k, n), size in accepted.items() if k == "metrics"
                      for i in range(size) if float(n * self.points + i) not in values]
            lost_l = [(n, i) for (k, n), size in accepted.items() if k == "logs"
                      for i in range(size) if log_id("f", n, i) not in ids]
            if (not lost_p and not lost_l) or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)
        await asyncio.sleep(3)  # late redeliveries would show now
        values = await self.counts.metric_values(self.project.project_id)
        ids = await self.counts.log_ids(self.project.project_id)
        resent = self.ledger.resent
        dup = dup_resent = 0
        for v, c in values.items():
            if c > 1 and v < 10_000_000:
                if ("metrics", int(v) // self.points) in resent:
                    dup_resent += c - 1
                else:
                    dup += c - 1
        for key, c in ids.items():
            if c > 1:
                number = int(key.split("-")[1])
                if ("logs", number) in resent:
                    dup_resent += c - 1
                else:
                    dup += c - 1
        detail = (f"{want_points} points / {want_logs} logs accepted so far; "
                  f"lost {len(lost_p)} points {lost_p[:3]}, {len(lost_l)} logs {lost_l[:3]}")
        return len(lost_p) + len(lost_l), dup, dup_resent, detail


def longest_gap(attempts: list[tuple[float, str, int]], t0: float, t1: float) -> float:
    """The longest stretch in [t0, t1] without a 202 (ingest interrupted for that long)."""
    times = [a[0] for a in attempts if a[2] == 202 and a[0] <= t1]
    before = [t for t in times if t < t0]
    inside = [t for t in times if t >= t0]
    points = ([before[-1]] if before else [t0]) + inside + [t1]
    return round(max(b - a for a, b in zip(points, points[1:], strict=False)), 1)


def error_share(attempts: list[tuple[float, Any, int]], t0: float, t1: float) -> str:
    window = [a[-1] for a in attempts if t0 <= a[0] <= t1]
    bad = sum(1 for s in window if s >= 500 or s == 0)
    return f"{bad}/{len(window)}" + (f" ({100 * bad / len(window):.0f}%)" if window else "")


async def until(check: Callable[[], Awaitable[bool]], within: float = 300.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the cluster to be whole again")
        await asyncio.sleep(1)


async def fault_os_manager(run: Run, hold: float) -> str:
    manager = await os_manager(run.os_urls)
    pid = pid_of(CLUSTER / "opensearch" / f"node{manager}" / "opensearch.pid")
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(hold)
    await asyncio.to_thread(services, "up")
    await until(lambda: os_green(run.os_urls))
    return f"killed os-{manager} (pid {pid}), new manager os-{await os_manager(run.os_urls)}"


async def fault_rabbitmq_node(run: Run, hold: float) -> str:
    leader = await asyncio.to_thread(queue_leader, f"{run.stack.queue_prefix}metrics.ingest")
    pid = pid_of(CLUSTER / "rabbitmq" / f"node{leader}" / "rabbitmq.pid")
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(hold)
    await asyncio.to_thread(services, "up")  # returns once all three nodes answer AMQP
    return f"killed opspilot-c{leader} (metrics.ingest leader, pid {pid})"


async def fault_postgres(run: Run, hold: float) -> str:
    await asyncio.to_thread(pg_restart)
    return "pg_ctl restart -m fast"


async def fault_worker(run: Run, hold: float) -> str:
    port, victim = next(iter(run.workers.items()))
    victim.kill9()
    del run.workers[port]
    await asyncio.sleep(hold)
    spare = next(p for p in WORKER_PORTS if p not in run.workers and p != port)
    await run.start_worker(spare)
    return f"kill -9 worker :{port}, replacement on :{spare}"


async def fault_api(run: Run, hold: float) -> str:
    port = API_PORTS[0]
    run.apis[port].kill9()
    await asyncio.sleep(hold)
    await run.start_api(port)
    return f"kill -9 API replica :{port}, restarted"


FAULTS: list[tuple[str, Callable[[Run, float], Awaitable[str]]]] = [
    ("OpenSearch cluster manager kill -9 + restart", fault_os_manager),
    ("RabbitMQ node (queue leader) kill -9 + restart", fault_rabbitmq_node),
    ("PostgreSQL restart", fault_postgres),
    ("worker kill -9 (+ replacement)", fault_worker),
    ("API replica kill -9 (+ restart)", fault_api),
]


async def run_faults(short: bool, only: list[str] | None = None) -> list[Row]:
    os_urls = [u.strip() for u in os.environ["OPSPILOT_OPENSEARCH_URL"].split(",")]
    amqp_urls = [u.strip() for u in os.environ["OPSPILOT_AMQP_URL"].split(",")]
    if len(os_urls) < 3 or len(amqp_urls) < 3:
        raise SystemExit('run on the cluster: eval "$(bash scripts/services env --cluster)"')
    urls = {"database": os.environ["OPSPILOT_DATABASE_URL"],
            "amqp": os.environ["OPSPILOT_AMQP_URL"],
            "opensearch": os.environ["OPSPILOT_OPENSEARCH_URL"]}
    tag = uuid.uuid4().hex[:8]
    rate, points, logs = (2.0, 50, 20) if short else (4.0, 100, 50)
    hold, settle = (5.0, 4.0) if short else (20.0, 20.0)
    stack = Stack(urls, f"faults_{tag}", f"faults-{tag}-", f"faults-{tag}.", f"faults:{tag}:",
                  Path(tempfile.mkdtemp(prefix="opspilot-faults-")),
                  extra_env={"OPSPILOT_RATE_LIMITS_ENABLED": "false",
                             "OPSPILOT_LOG_INDEX_SHARDS": "3",
                             "OPSPILOT_LOG_INDEX_REPLICAS": "1"})
    await asyncio.to_thread(subprocess.run, [str(BIN), "migrate"], env=stack.env(), check=True,
                            capture_output=True, timeout=300)
    counts = Counts({**urls, "amqp": amqp_urls[0]}, stack.schema, stack.index_prefix)
    rows: list[Row] = []
    try:
        project = stack.create_project("faults")
        run = Run(stack, project, counts, os_urls, amqp_urls, {}, {}, Ledger(), [], points, logs)
        for port in API_PORTS:
            await run.start_api(port)
        for port in WORKER_PORTS[:3]:
            await run.start_worker(port)
        members = await asyncio.to_thread(quorum_members, f"{stack.queue_prefix}metrics.ingest")
        print(f"faults {tag}: 2 APIs, 3 workers; metrics.ingest quorum members: {members}",
              flush=True)
        lb = Balancer([f"http://127.0.0.1:{p}" for p in API_PORTS])
        stop = asyncio.Event()
        load = asyncio.create_task(steady_ingest(lb, project, run.ledger, rate, points, logs,
                                                 stop))
        queries = asyncio.create_task(steady_queries(lb, project, stop, run.queries))
        await run.probe_visible()
        await asyncio.sleep(settle)
        for name, inject in FAULTS:
            if only and not any(o in name for o in only):
                continue
            t0 = time.monotonic()
            try:
                detail = await inject(run, hold)
                await run.probe_visible()
                recovered = time.monotonic() - t0
            except Exception as exc:
                rows.append(Row(name, -1, -1, -1, "", "", -1, -1, f"FAILED: {exc!r}"[:500]))
                print(f"{name}: FAILED {exc!r}", flush=True)
                await asyncio.sleep(settle)
                continue
            t1 = time.monotonic()
            await asyncio.sleep(settle)
            lost, dup, dup_resent, census = await run.census(0, 240)
            row = Row(name, lost, dup, dup_resent, error_share(run.ledger.attempts, t0, t1),
                      error_share(run.queries, t0, t1), round(recovered, 1),
                      longest_gap(run.ledger.attempts, t0, t1), f"{detail}; {census}")
            rows.append(row)
            print(attrs.asdict(row), flush=True)
        stop.set()
        await asyncio.wait_for(load, 300)
        await queries
        lost, dup, dup_resent, census = await run.census(0, 240)
        rows.append(Row("(end of run: all accepted)", lost, dup, dup_resent,
                        error_share(run.ledger.attempts, 0, time.monotonic()),
                        error_share(run.queries, 0, time.monotonic()), 0.0, 0.0,
                        f"{census}; requests that never got a 202: {len(run.ledger.failed)}"
                        f" {list(run.ledger.failed.items())[:3]}"))
    finally:
        stack.stop_all()
        await counts.drop(stack.queue_prefix)
    return rows


def table(rows: list[Row]) -> str:
    out = ["| fault | lost | duplicated (never re-sent / re-sent by the client) | "
           "ingest 5xx+refused during | query 5xx+refused during | longest stretch without "
           "a 202 (s) | time to recover (s) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.fault} | {r.lost} | {r.duplicated} / {r.duplicated_resent} | "
                   f"{r.errors_during} | {r.query_errors_during} | {r.longest_gap_s} | "
                   f"{r.recover_s} |")
    return "\n".join(out)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI form (lower rate, 8 s holds)")
    parser.add_argument("--only", nargs="*", help="faults whose name contains one of these")
    args = parser.parse_args()
    load0 = os.getloadavg()
    started = time.monotonic()
    rows = await run_faults(args.short, args.only)
    print()
    print(table(rows))
    print(f"\n{'short' if args.short else 'full'} run, {time.monotonic() - started:.0f} s, "
          f"load average at start {load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}")
    for r in rows:
        print(f"- {r.fault}: {r.detail}")
    bad = [r for r in rows if r.lost != 0 or r.duplicated != 0]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
