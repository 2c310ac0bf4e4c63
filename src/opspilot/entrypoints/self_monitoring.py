"""A process's self-monitoring, from what the container holds (the collectors and the
sampling task are `adapters/prometheus/monitoring.py`'s)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from opspilot.adapters.prometheus.monitoring import (
    QUEUE_SECONDS,
    STORE_SECONDS,
    SelfMonitoring,
    start_monitoring,
)
from opspilot.container import Container


def start_self_monitoring(
    container: Container,
    registry: CollectorRegistry,
    *,
    worker: bool,
    include: Iterable[CollectorRegistry] = (),
    queue_seconds: float = QUEUE_SECONDS,
    store_seconds: float = STORE_SECONDS,
) -> SelfMonitoring:
    """Register this process's collectors on `registry` and start the sampling task.
    Call after `start_container` (the connections must be open), inside the event loop."""
    database, log_store = container.postgres(), container.opensearch()
    pattern = ""
    if log_store is not None:
        from opspilot.adapters.opensearch.mapping import index_pattern

        pattern = index_pattern(container.config.index_prefix())
    return start_monitoring(
        registry, worker=worker, include=include,
        queue=container.queue_depth(), telemetry=container.worker_telemetry(),
        pool=None if database is None else (lambda: database.pool),
        opensearch=None if log_store is None else log_store.client, index_pattern=pattern,
        queue_seconds=queue_seconds, store_seconds=store_seconds,
    )
