"""Self-monitoring of a process: what its /metrics serves besides the request instruments.

`start_monitoring` is called once per process, with the registry its /metrics serves:

- always (when PostgreSQL is configured): the asyncpg pool collector, read at scrape time;
- `worker=True` (the ingestion worker, and `serve`): every `queue_seconds` (5 s) the
  queue depth of metrics.ingest, logs.ingest and their .dlq into `opspilot_queue_depth`
  (and the message age and the worker's busy share, ADR 0028), and every `store_seconds` (15 s) the PostgreSQL and OpenSearch exporters. They run in a
  background task, never on a request or a scrape;
- `include=[...]`: other registries of the same process served on this one's /metrics
  (`serve`: the worker's and the alert engine's behind the API's).

`await monitoring.stop()` ends the task. Failures are logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs
from prometheus_client import CollectorRegistry

from opspilot.adapters.prometheus.exporters import (
    ExporterHealth,
    OpenSearchExporter,
    PoolCollector,
    PoolSource,
    PostgresExporter,
    QueueDepthSampler,
)
from opspilot.adapters.prometheus.serving import include_registries
from opspilot.adapters.prometheus.worker import WorkerTelemetry
from opspilot.domain.ports import QueueDepth

QUEUE_SECONDS = 5.0
STORE_SECONDS = 15.0


class Refreshable(Protocol):
    name: str

    async def refresh(self) -> None: ...


@attrs.define
class SelfMonitoring:
    task: asyncio.Task[None] | None

    async def stop(self) -> None:
        if self.task is None:
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.task = None


def start_monitoring(
    registry: CollectorRegistry,
    *,
    worker: bool,
    queue: QueueDepth,
    telemetry: WorkerTelemetry,
    pool: PoolSource | None = None,
    opensearch: Any = None,
    index_pattern: str = "",
    include: Iterable[CollectorRegistry] = (),
    queue_seconds: float = QUEUE_SECONDS,
    store_seconds: float = STORE_SECONDS,
) -> SelfMonitoring:
    """Register the collectors on `registry` and start the sampling task (inside the event
    loop). `pool`: the current asyncpg pool's getter; `opensearch`: the OpenSearch client
    whose `index_pattern` indices are counted (both None without those stores); the queue
    depth, the message age and the worker's busy share go to `telemetry`."""
    include_registries(registry, include)
    if pool is not None:
        registry.register(PoolCollector(pool))
    if not worker:
        return SelfMonitoring(None)
    health = ExporterHealth(registry)
    queue_loop: list[Refreshable] = [
        QueueDepthSampler(queue, telemetry.queue_depth, on_depth=telemetry.queue_sampled),
        WorkerLoad(telemetry),
    ]
    stores: list[Refreshable] = []
    if pool is not None:
        stores.append(PostgresExporter(pool))
    if opensearch is not None:
        stores.append(OpenSearchExporter(opensearch, index_pattern))
    for exporter in stores:
        registry.register(exporter)  # type: ignore[arg-type]  # a Collector as well
    task = asyncio.create_task(
        _run(health, [(queue_loop, queue_seconds), (stores, store_seconds)]),
        name="self-monitoring",
    )
    return SelfMonitoring(task)


class WorkerLoad:
    """Every queue sample: the worker's busy share since the previous one."""

    name = "worker_load"

    def __init__(self, telemetry: WorkerTelemetry) -> None:
        self._telemetry = telemetry

    async def refresh(self) -> None:
        self._telemetry.sample_utilisation()


async def _run(health: ExporterHealth, loops: Sequence[tuple[list[Refreshable], float]]) -> None:
    await asyncio.gather(*(_every(health, items, seconds) for items, seconds in loops if items))


async def _every(health: ExporterHealth, items: list[Refreshable], seconds: float) -> None:
    while True:
        started = time.monotonic()
        for item in items:
            await refresh_once(health, item, max(1.0, seconds))
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))


async def refresh_once(health: ExporterHealth, item: Refreshable, seconds: float) -> bool:
    """One refresh, bounded by `seconds`; True when it worked (failures are counted)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            await item.refresh()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # telemetry never takes the process down
        health.failed(item.name, exc)
        return False
    health.worked(item.name, time.monotonic() - started)
    return True
