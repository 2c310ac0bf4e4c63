"""OpsPilot in a plain script: ingest metrics and logs in memory, then query them (no HTTP).

Run: python examples/ingest_and_query.py
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import opspilot
from opspilot import Log, Metric, OpsPilot


async def main() -> None:
    now = datetime.now(UTC)
    async with OpsPilot.in_memory() as ops:
        project = await ops.create_project("shop")
        pid = project.project_id

        # An hour of latency, one point a minute, with a spike 10 minutes ago.
        points = [
            Metric("latency_ms", 900.0 if i == 10 else 100.0 + i % 5, now - timedelta(minutes=i),
                   service="checkout", tags={"region": "eu"})
            for i in range(60)
        ]
        logs = [
            Log("ERROR" if i % 10 == 0 else "INFO", f"order {i} {'failed: db timeout' if i % 10 == 0 else 'paid'}",
                now - timedelta(seconds=30 * i), service="checkout", trace_id=f"t{i}")
            for i in range(100)
        ]
        accepted = await ops.ingest_metrics(pid, points)
        await ops.ingest_logs(pid, logs)
        print(f"accepted {accepted.accepted} points in batch {accepted.batch_id}")

        await ops.drain()  # the in-process worker has written everything accepted

        series = await ops.query_metrics(pid, "latency_ms", service="checkout",
                                         aggregation="max", time_bucket="5m",
                                         start=now - timedelta(hours=1), end=now + timedelta(minutes=1))
        print(f"{len(series.points)} buckets of max latency; highest {max(series.values):.0f} ms")

        spikes = await ops.anomalies(pid, "latency_ms", service="checkout",
                                     start=now - timedelta(hours=1), end=now + timedelta(minutes=1))
        print("anomalies at", [a.timestamp.isoformat(timespec="minutes") for a in spikes])

        page = await ops.search_logs(pid, search="timeout", levels=["ERROR"], limit=5)
        print(f"{page.total} logs match 'timeout'; newest: {page.records[0].message!r}")

        context = await ops.log_context(pid, page.records[0].id, before=2, after=2)
        print("context:", [r.message for r in (*context.before, context.anchor, *context.after)])

        patterns = await ops.log_patterns(pid)
        print("patterns:", [(c.pattern, c.count) for c in patterns])

        try:
            await ops.ingest_metrics(pid, [Metric("latency ms", 1.0, now)])
        except opspilot.ValidationError as exc:
            print(f"refused, naming the field: {exc.field}")


if __name__ == "__main__":
    asyncio.run(main())
