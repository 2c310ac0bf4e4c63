"""End-to-end ingest with 1, 2 and 4 workers against the 3-node OpenSearch cluster, the 3-node
RabbitMQ cluster and one PostgreSQL (`scripts/services up --cluster`), to see where adding
workers stops helping, and why.

    bash scripts/services up --cluster && eval "$(bash scripts/services env --cluster)"
    nice -n 10 .venv/bin/python bench/worker_scaling.py --points 60000 --logs 20000

For each worker count, on a queue prefix and project of its own (same schema and index prefix):
one `opspilot api`, N `opspilot worker`s started and ready; then `--clients` HTTP clients POST
the metric requests (1,000 points) and the log requests (500 records) interleaved, and the
clock stops when PostgreSQL holds every point and OpenSearch counts every log (refresh 1 s).
`--drain` times the worker stage alone: everything is accepted into the queue with no worker
running, then the N workers start and the clock runs from all N ready until all is visible.
Reported: metrics and logs apart (each until its last record is visible), the accept rate
(all 202s), and the CPU seconds each part used during the timed part (from /proc: the API, the workers, the three OpenSearch JVMs, the three
RabbitMQ nodes, PostgreSQL's processes), with the load average: on a 2-core machine the
ceiling is CPU, and the table says whose.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Counts, log_body, metric_body  # noqa: E402
from tests.integration.test_pipeline_e2e import (  # noqa: E402
    BIN,
    IngestLog,
    Proc,
    Stack,
    post_with_retries,
)

CLUSTER = Path(os.environ.get("OPSPILOT_CLUSTER_DIR", ROOT / ".services" / "cluster"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid: int) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in done.stdout.split()]


def engine_pids() -> dict[str, list[int]]:
    def pid_file(path: Path) -> list[int]:
        try:
            return [int(path.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    opensearch = [p for n in (1, 2, 3)
                  for p in pid_file(CLUSTER / "opensearch" / f"node{n}" / "opensearch.pid")]
    rabbitmq = [p for n in (1, 2, 3)
                for p in pid_file(CLUSTER / "rabbitmq" / f"node{n}" / "rabbitmq.pid")]
    postmaster = pid_file((CLUSTER / "pg").resolve() / "data" / "postmaster.pid")
    return {"opensearch (3 JVMs)": opensearch, "rabbitmq (3 nodes)": rabbitmq,
            "postgresql": postmaster}


def engine_cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    out = {}
    for name, roots in pids.items():
        every = list(roots)
        if name == "postgresql":
            for root in roots:
                every += children(root)  # backends come and go; the live ones at this moment
        out[name] = sum(cpu_seconds(p) for p in every)
    return out


async def one_run(urls: dict[str, str], schema: str, index_prefix: str, workers: int,
                  points: int, logs: int, clients: int, port_base: int,
                  drain: bool = False) -> dict[str, object]:
    """One measurement. End to end (default): workers ready first, the clock runs from the
    first POST until everything is visible. `drain`: everything is accepted into the queue
    first with no worker running; then the N workers start, and the clock runs from the
    moment all N are ready until everything is visible (the worker stage alone)."""
    tag = uuid.uuid4().hex[:6]
    stack = Stack(urls, schema, index_prefix, f"scale-{tag}.", f"scale:{tag}:",
                  Path(tempfile.mkdtemp(prefix="opspilot-scaling-")),
                  extra_env={"OPSPILOT_RATE_LIMITS_ENABLED": "false",
                             "OPSPILOT_LOG_INDEX_SHARDS": "3",
                             "OPSPILOT_LOG_INDEX_REPLICAS": "1"})
    counts = Counts(urls, schema, index_prefix)
    try:
        project = stack.create_project(f"scale-{workers}-{tag}")
        api = stack._spawn("api", ["api", "--port", str(port_base)],
                           f"http://127.0.0.1:{port_base}/healthz")
        await api.wait_ready(180)
        def spawn_workers() -> list[Proc]:
            return [stack._spawn("worker", ["worker", "--metrics-port", str(port_base + 1 + i)],
                                 f"http://127.0.0.1:{port_base + 1 + i}/healthz")
                    for i in range(workers)]

        procs: list[Proc] = []
        if not drain:
            procs = spawn_workers()
            for proc in procs:
                await proc.wait_ready(180)
        at = datetime.now(UTC) - timedelta(minutes=5)
        bodies = [("/api/ingest/metrics", metric_body(n, 1000, at, metric=f"scale_{tag}"))
                  for n in range(points // 1000)]
        log_bodies = [("/api/ingest/logs", log_body(n, 500, at, tag=tag))
                      for n in range(logs // 500)]
        mixed = [b for pair in zip(bodies, log_bodies + [None] * len(bodies), strict=False)
                 for b in pair if b is not None] + bodies[len(log_bodies):]
        mixed += log_bodies[len(bodies):]
        pids = engine_pids()
        engines0 = engine_cpu(pids)
        own0 = {p.pid: cpu_seconds(p.pid) for p in (api, *procs)}
        load0 = os.getloadavg()[0]
        seen = IngestLog()
        queue = iter(enumerate(mixed))
        started = time.perf_counter()

        async def client(session: aiohttp.ClientSession) -> None:
            for number, (path, body) in queue:
                await post_with_retries(session, f"http://127.0.0.1:{port_base}{path}", body,
                                        project.api_key, number, seen)

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(client(session) for _ in range(clients)))
        accepted_s = time.perf_counter() - started
        if seen.failed:
            raise SystemExit(f"refused: {list(seen.failed.items())[:3]}")
        done_points = done_logs = 0
        if drain:
            procs = spawn_workers()
            for proc in procs:
                await proc.wait_ready(180)
            started = time.perf_counter()
            done_points = await counts.points(project.project_id)
            done_logs = await counts.logs(project.project_id)
            engines0 = engine_cpu(pids)
            own0 = {p.pid: cpu_seconds(p.pid) for p in (api, *procs)}
            load0 = os.getloadavg()[0]
        deadline = time.perf_counter() + 900
        points_s = logs_s = None
        while points_s is None or logs_s is None:
            if points_s is None and await counts.points(project.project_id) >= points:
                points_s = time.perf_counter() - started
            if logs_s is None and await counts.logs(project.project_id) >= logs:
                logs_s = time.perf_counter() - started
            if time.perf_counter() > deadline:
                raise SystemExit(f"timed out: points at {points_s}, logs at {logs_s}")
            await asyncio.sleep(0.25)
        visible_s = time.perf_counter() - started
        engines1 = engine_cpu(pids)
        cpu = {"api": cpu_seconds(api.pid) - own0[api.pid],
               "workers": sum(cpu_seconds(p.pid) - own0[p.pid] for p in procs)}
        cpu.update({k: engines1[k] - engines0[k] for k in engines0})
        return {"workers": workers, "records": points + logs, "visible_s": visible_s,
                "rate": (points + logs - done_points - done_logs) / visible_s,
                "points_rate": (points - done_points) / points_s,
                "logs_rate": (logs - done_logs) / logs_s,
                "accept_rate": (points + logs) / accepted_s, "drain": drain,
                "already_stored_at_start": done_points + done_logs,
                "cpu": cpu, "wall": visible_s, "load_start": load0, "load_end": os.getloadavg()[0]}
    finally:
        stack.stop_all()
        from tests.contract.queue_fixtures import delete_queues

        await delete_queues(urls["amqp"].split(",")[0], stack.queue_prefix)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=60_000)
    parser.add_argument("--logs", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--port-base", type=int, default=22150)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--drain", action="store_true",
                        help="fill the queue first, then time N workers draining it")
    args = parser.parse_args()
    urls = {"database": os.environ["OPSPILOT_DATABASE_URL"],
            "amqp": os.environ["OPSPILOT_AMQP_URL"],
            "opensearch": os.environ["OPSPILOT_OPENSEARCH_URL"]}
    if len(urls["opensearch"].split(",")) < 3:
        raise SystemExit('run on the cluster: eval "$(bash scripts/services env --cluster)"')
    tag = uuid.uuid4().hex[:8]
    schema, index_prefix = f"scale_{tag}", f"scale-{tag}-"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    env.update(OPSPILOT_DATABASE_URL=urls["database"], OPSPILOT_DATABASE_SCHEMA=schema)
    await asyncio.to_thread(subprocess.run, [str(BIN), "migrate"], env=env, check=True,
                            capture_output=True, timeout=300)
    results = []
    try:
        # a first write creates the day's index (3 shards × 1 replica): not part of any run
        await one_run(urls, schema, index_prefix, 1, 1000, 500, 1, args.port_base)
        for _ in range(args.repeat):
            for n in args.workers:
                result = await one_run(urls, schema, index_prefix, n, args.points, args.logs,
                                       args.clients, args.port_base, drain=args.drain)
                print(orjson.dumps(result).decode(), flush=True)
                results.append(result)
    finally:
        await Counts(urls, schema, index_prefix).drop("-unused-")
    print()
    print("| workers | run | metrics e2e (points/s) | logs e2e (records/s) | all records/s | "
          "accept rate (records/s) | CPU s: api / workers / OpenSearch / RabbitMQ / PostgreSQL "
          "| our CPU s per wall s | load1 start → end |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for i, r in enumerate(results):
        cpu = r["cpu"]
        total = sum(cpu.values())  # type: ignore[union-attr]
        parts = " / ".join(f"{v:.1f}" for v in cpu.values())  # type: ignore[union-attr]
        print(f"| {r['workers']} | {i // len(args.workers) + 1} | {r['points_rate']:,.0f} | "
              f"{r['logs_rate']:,.0f} | {r['rate']:,.0f} | "
              f"{r['accept_rate']:,.0f} | {parts} | {total / r['wall']:.2f} | "  # type: ignore[operator]
              f"{r['load_start']:.1f} → {r['load_end']:.1f} |")
    print()
    print("| workers | median metrics e2e | vs 1 | median logs e2e | vs 1 |")
    print("|---:|---:|---:|---:|---:|")
    med = {n: (statistics.median(r["points_rate"] for r in results if r["workers"] == n),
               statistics.median(r["logs_rate"] for r in results if r["workers"] == n))
           for n in args.workers}
    one = med[args.workers[0]]
    for n, (p, lg) in med.items():
        print(f"| {n} | {p:,.0f} | {p / one[0]:.2f}x | {lg:,.0f} | {lg / one[1]:.2f}x |")
    print(f"\n{args.points:,} points + {args.logs:,} logs per run, {args.clients} clients, "
          f"cores={os.cpu_count()}")


if __name__ == "__main__":
    asyncio.run(main())
