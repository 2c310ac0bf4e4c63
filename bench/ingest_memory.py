"""Peak RSS of one `opspilot api` under N concurrent max-size ingest requests, with the
in-flight byte budget (OPSPILOT_MAX_INFLIGHT_BYTES, default 32 MiB) and without it
(budget 100 GiB), side by side in one run.

The API runs on in-memory stores and publishes to RabbitMQ (OPSPILOT_AMQP_URL, on a queue
prefix of its own, deleted afterwards) with a queue depth of 1, so after the first batches
every request is parsed and validated in full (the memory this measures) and then refused
at publish with 429: nothing accepted piles up anywhere.

    eval "$(scripts/services env)"
    .venv/bin/python bench/ingest_memory.py --clients 50 --port 21510
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson

BIN = Path(sys.executable).parent / "opspilot"
AMQP = os.environ.get("OPSPILOT_AMQP_URL", "")
PREFIX = f"bench-mem-{os.getpid()}."
ADMIN = f"bench-admin-{os.getpid()}-{time.time_ns()}"


async def delete_queues(url: str, prefix: str) -> None:
    import aio_pika

    from opspilot.adapters.rabbitmq.topology import dlq_name, queue_name
    from opspilot.domain.ingest import Stream

    connection = await aio_pika.connect(url)
    try:
        for stream in Stream:
            for name in (queue_name(prefix, stream), dlq_name(prefix, stream)):
                channel = await connection.channel()
                with contextlib.suppress(Exception):  # never declared: nothing to delete
                    await channel.queue_delete(name)
    finally:
        await connection.close()


def body(target_bytes: int) -> bytes:
    """One ingest body just under `target_bytes`: 10,000 points padded with tags."""
    stamp = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    tags = {f"t{k}": "v" * 190 for k in range(max(1, (target_bytes // 10_000 - 100) // 198))}
    point = {"name": "bench_mem", "value": 1.0, "timestamp": stamp, "service": "svc", "tags": tags}
    doc = orjson.dumps({"metrics": [point] * 10_000})
    while len(doc) > target_bytes:
        tags.popitem()
        doc = orjson.dumps({"metrics": [point] * 10_000})
    return doc


def wait_ready(base: str) -> None:
    for _ in range(600):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def run(budget: int, clients: int, port: int, payload: bytes) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    env.update(OPSPILOT_QUEUE_MAX_DEPTH="1", OPSPILOT_RATE_LIMITS_ENABLED="false",
               OPSPILOT_MAX_INFLIGHT_BYTES=str(budget), OPSPILOT_AMQP_URL=AMQP,
               OPSPILOT_QUEUE_PREFIX=PREFIX, OPSPILOT_ADMIN_TOKEN=ADMIN)
    proc = subprocess.Popen([str(BIN), "api", "--port", str(port)], env=env,  # noqa: ASYNC220
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_ready, base)
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/api/admin/projects", json={"name": "mem"},
                                    headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                key = (await r.json())["api_key"]
            idle = rss_kib(proc.pid, "VmRSS")
            started = time.monotonic()

            async def one() -> int:
                async with session.post(base + "/api/ingest/metrics", data=payload, headers={
                        "X-API-Key": key, "Content-Type": "application/json"}) as r:
                    await r.read()
                    return r.status

            statuses = Counter(await asyncio.gather(*(one() for _ in range(clients))))
            elapsed = time.monotonic() - started
        return {"budget": budget, "idle_mib": idle / 1024,
                "peak_mib": rss_kib(proc.pid, "VmHWM") / 1024, "statuses": dict(statuses),
                "seconds": elapsed}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await delete_queues(AMQP, PREFIX)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--port", type=int, default=21510)
    parser.add_argument("--body-mib", type=float, default=9.5)
    parser.add_argument("--budgets-mib", default="32,102400",
                        help="OPSPILOT_MAX_INFLIGHT_BYTES values to compare, in MiB")
    args = parser.parse_args()
    if not AMQP:
        sys.exit('set OPSPILOT_AMQP_URL (eval "$(scripts/services env)")')
    payload = body(int(args.body_mib * 1024 * 1024))
    print(f"{args.clients} concurrent ingests of {len(payload) / 2**20:.1f} MiB (10,000 points)")
    for mib in (int(m) for m in args.budgets_mib.split(",")):
        result = await run(mib * 2**20, args.clients, args.port, payload)
        label = f"budget {mib} MiB"
        print(f"{label}: idle {result['idle_mib']:.0f} MiB, peak {result['peak_mib']:.0f} MiB,"
              f" answers {result['statuses']}, {result['seconds']:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
