"""Self-monitoring of a process: what its /metrics serves besides the request instruments.

Each process calls `start_self_monitoring` once, with the registry its /metrics serves:

- always (when PostgreSQL is configured): the asyncpg pool collector, read at scrape time;
- `worker=True` (the ingestion worker, and `serve`): every `queue_seconds` (5 s) the
  queue depth of metrics.ingest, logs.ingest and their .dlq into `opspilot_queue_depth`,
  and every `store_seconds` (15 s) the PostgreSQL and OpenSearch exporters. They run in a
  background task, never on a request or a scrape;
- `include=[...]`: other registries of the same process served on this one's /metrics
  (`serve`: the worker's and the alert engine's behind the API's).

`await monitoring.stop()` ends the task. Failures are logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs
from prometheus_client import CollectorRegistry

from opspilot.adapters.telemetry import include_registries
from opspilot.adapters.telemetry_stores import (
    ExporterHealth,
    OpenSearchExporter,
    PoolCollector,
    PostgresExporter,
    QueueDepthSampler,
)

log = logging.getLogger("opspilot.self_monitoring")

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


def start_self_monitoring(
    container: Any,
    registry: CollectorRegistry,
    *,
    worker: bool,
    include: Iterable[CollectorRegistry] = (),
    queue_seconds: float = QUEUE_SECONDS,
    store_seconds: float = STORE_SECONDS,
) -> SelfMonitoring:
    """Register this process's collectors on `registry` and start the sampling task.
    Call after `start_container` (the connections must be open), inside the event loop."""
    include_registries(registry, include)
    database = _postgres(container)
    if database is not None:
        registry.register(PoolCollector(lambda: pool_of(database)))
    if not worker:
        return SelfMonitoring(None)
    health = ExporterHealth(registry)
    telemetry = container.worker_telemetry()
    queue_loop: list[Any] = [
        QueueDepthSampler(container.queue(), telemetry.queue_depth,
                          on_depth=telemetry.queue_sampled),
        WorkerLoad(telemetry),
    ]
    stores: list[Any] = []
    if database is not None:
        stores.append(PostgresExporter(lambda: pool_of(database)))
    client = _opensearch_client(container)
    if client is not None:
        from opspilot.adapters.opensearch.mapping import index_pattern

        stores.append(OpenSearchExporter(client, index_pattern(container.config.index_prefix())))
    for exporter in stores:
        registry.register(exporter)
    task = asyncio.create_task(
        _run(health, [(queue_loop, queue_seconds), (stores, store_seconds)]),
        name="self-monitoring",
    )
    return SelfMonitoring(task)


class WorkerLoad:
    """Every queue sample: the worker's busy share since the previous one."""

    name = "worker_load"

    def __init__(self, telemetry: Any) -> None:
        self._telemetry = telemetry

    async def refresh(self) -> None:
        self._telemetry.sample_utilisation()


def pool_of(database: Any) -> Any:
    """The asyncpg pool of a PostgresDatabase (None while closed)."""
    pool = getattr(database, "pool", None)
    return pool if pool is not None else getattr(database, "_pool", None)


def _postgres(container: Any) -> Any:
    if container.config.backends()["sql"] != "postgres":
        return None
    return container.postgres()


def _opensearch_client(container: Any) -> Any:
    if container.config.backends()["logs"] != "opensearch":
        return None
    store = container.opensearch()
    client = getattr(store, "client", None)
    return client if client is not None else getattr(store, "_client", None)


async def _run(health: ExporterHealth, loops: Sequence[tuple[list[Any], float]]) -> None:
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
