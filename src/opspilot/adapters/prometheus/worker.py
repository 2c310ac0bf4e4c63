"""The ingestion worker's instruments (`WorkerObserver`) and the queue depth gauge."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from opspilot.adapters.prometheus.api import LATENCY_BUCKETS
from opspilot.domain.ports import WorkerObserver


class WorkerTelemetry(WorkerObserver):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.written = Counter(
            "opspilot_worker_records_written_total", "Records written to the stores", ["stream"],
            registry=r,
        )
        self.batches = Histogram(
            "opspilot_worker_batch_size", "Records per store write", ["stream"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000), registry=r,
        )
        self.write_latency = Histogram(
            "opspilot_worker_write_duration_seconds", "Store write latency", ["stream"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.retries = Counter(
            "opspilot_worker_retries_total", "Transient write failures retried", ["stream"],
            registry=r,
        )
        self.dead_letters = Counter(
            "opspilot_worker_dead_lettered_total", "Messages sent to the dead-letter queue",
            ["stream"], registry=r,
        )
        self.queue_depth = Gauge(
            "opspilot_queue_depth",
            "Messages waiting in a queue, sampled every few seconds (the consumer lag)",
            ["queue"], registry=r,
        )
        self.last_write = Gauge(
            "opspilot_worker_last_write_timestamp_seconds",
            "When this worker last committed a batch (Unix time)", ["stream"], registry=r,
        )

        # What an autoscaler needs besides the depth (ADR 0028): how old the waiting work
        # is, and how busy the consumers already are.
        self.message_age = Gauge(
            "opspilot_queue_message_age_seconds",
            "Age of the oldest waiting message: accept → delivery of the last message taken "
            "(FIFO), growing while the queue holds messages and none is taken; 0 when empty",
            ["queue"], registry=r,
        )
        self.busy = Counter(
            "opspilot_worker_busy_seconds_total",
            "Seconds this worker spent writing to the stores", ["stream"], registry=r,
        )
        self.utilisation = Gauge(
            "opspilot_worker_utilisation",
            "Share of the last sampling interval this worker spent writing (0-1): near 1, "
            "more replicas help; near 0 with a deep queue, the stores are the bottleneck",
            registry=r,
        )
        self._busy_seconds = 0.0
        self._sampled_at: tuple[float, float] | None = None  # (monotonic, busy seconds)
        self._last_delivery: dict[str, tuple[float, float]] = {}  # stream → (monotonic, age)
        self._monotonic = time.monotonic

    def delivered(self, stream: str, age_seconds: float) -> None:
        self._last_delivery[stream] = (self._monotonic(), age_seconds)
        self.message_age.labels(stream).set(age_seconds)

    def queue_sampled(self, queue: str, depth: int) -> None:
        """From the depth sampler: an empty queue has no age; a non-empty one that gave this
        worker nothing since the last message ages from that message's age on (a lower
        bound of the head's age: the worker may be stuck, e.g. its store is down)."""
        if queue.endswith(".dlq"):
            return
        if depth == 0:
            self.message_age.labels(queue).set(0.0)
            return
        last = self._last_delivery.get(queue)
        if last is not None:
            at, age = last
            self.message_age.labels(queue).set(age + max(0.0, self._monotonic() - at))

    def sample_utilisation(self) -> None:
        now = self._monotonic()
        if self._sampled_at is not None:
            then, busy = self._sampled_at
            if now > then:
                self.utilisation.set(min(1.0, (self._busy_seconds - busy) / (now - then)))
        self._sampled_at = (now, self._busy_seconds)

    def batch_written(self, stream: str, records: int, seconds: float) -> None:
        self._busy_seconds += seconds
        self.busy.labels(stream).inc(seconds)
        self.written.labels(stream).inc(records)
        self.last_write.labels(stream).set(time.time())
        self.batches.labels(stream).observe(records)
        self.write_latency.labels(stream).observe(seconds)

    def retried(self, stream: str, reason: str) -> None:
        self.retries.labels(stream).inc()

    def dead_lettered(self, stream: str, reason: str) -> None:
        self.dead_letters.labels(stream).inc()
