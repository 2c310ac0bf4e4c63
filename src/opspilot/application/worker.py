"""The ingestion worker: batch deliveries, write through the stores, ack after commit.

Guarantees: a delivery is acknowledged only after every store it feeds committed; a
transient store failure is retried with capped exponential backoff (never dropped, never
hot-looped); records a store refuses as such (RecordsRejected) are found by bisecting the
message and dead-lettered at once, alone, while the rest of the message is written; a
delivery that cannot be decoded or keeps failing for another reason goes to the dead-letter
queue with the reason; a stop request drains (flush, ack, then stop).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import attrs

from opspilot.application.caching import DataVersions
from opspilot.domain.errors import RecordsRejected, TransientStoreError
from opspilot.domain.ingest import LogBatch, MetricBatch, Stream
from opspilot.domain.ports import (
    Delivery,
    IngestConsumer,
    LogMetadataStore,
    LogStore,
    MetricStore,
    WorkerObserver,
)

log = logging.getLogger(__name__)
Batch = MetricBatch | LogBatch


@attrs.frozen
class WorkerSettings:
    max_records: int = 1000
    flush_interval: float = 0.2
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    permanent_attempts: int = 3


class IngestWorker:
    def __init__(
        self,
        consumer: IngestConsumer,
        metrics: MetricStore,
        logs: LogStore,
        log_metadata: LogMetadataStore,
        settings: WorkerSettings = WorkerSettings(),
        observer: WorkerObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] | None = None,
        versions: DataVersions | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._consumer = consumer
        self._clock = clock
        self._metrics = metrics
        self._logs = logs
        self._log_metadata = log_metadata
        self._settings = settings
        self._observer = observer or WorkerObserver()
        self._sleep = sleep
        self._monotonic = monotonic or asyncio.get_running_loop().time
        self._stopping = asyncio.Event()
        self._versions = versions

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self, streams: Sequence[Stream] = (Stream.METRICS, Stream.LOGS)) -> None:
        deliveries = aiter(self._consumer.deliveries(streams))
        pending: list[Delivery] = []
        fetch: asyncio.Task[Delivery] | None = None
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        deadline: float | None = None
        try:
            while not self._stopping.is_set():
                if fetch is None:
                    fetch = asyncio.ensure_future(anext(deliveries))
                timeout = None if deadline is None else max(0.0, deadline - self._monotonic())
                done, _ = await asyncio.wait(
                    {fetch, stop_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if fetch in done:
                    try:
                        pending.append(fetch.result())
                        self._note_age(pending[-1])
                    except StopAsyncIteration:
                        break
                    finally:
                        fetch = None
                    deadline = deadline or self._monotonic() + self._settings.flush_interval
                if pending and (
                    _records(pending) >= self._settings.max_records
                    or (deadline is not None and self._monotonic() >= deadline)
                ):
                    await self.flush(pending)
                    pending, deadline = [], None
        finally:
            stop_wait.cancel()
            if fetch is not None:
                fetch.cancel()
            if pending:
                await self.flush(pending)
            await self._consumer.stop()

    def _note_age(self, delivery: Delivery) -> None:
        batch = delivery.batch
        if batch is not None:
            age = (self._clock() - batch.received_at).total_seconds()
            self._observer.delivered(_stream_of(batch), max(0.0, age))

    async def flush(self, deliveries: Sequence[Delivery]) -> None:
        decodable = []
        for delivery in deliveries:
            if delivery.batch is None:
                await self._dead_letter(delivery, f"undecodable: {delivery.error}")
            else:
                decodable.append(delivery)
        if decodable:
            await self._write_with_retries(decodable)

    async def _write_with_retries(self, deliveries: Sequence[Delivery]) -> None:
        permanent = 0
        while True:
            try:
                if len(deliveries) == 1:
                    if not await self._write_isolating(deliveries[0]):
                        return  # dead-lettered, or handed back to the queue
                else:
                    await self._write_transient_retried([d.batch for d in deliveries])
                break
            except RecordsRejected:
                for delivery in deliveries:  # find the message(s) at fault
                    await self._write_with_retries([delivery])
                return
            except Exception as exc:  # neither the moment nor the records: retried a few times
                permanent += 1
                if len(deliveries) > 1:
                    for delivery in deliveries:  # isolate the bad message
                        await self._write_with_retries([delivery])
                    return
                if permanent >= self._settings.permanent_attempts:
                    await self._dead_letter(deliveries[0], f"{type(exc).__name__}: {exc}")
                    return
                log.warning("write failed (%s), attempt %d", exc, permanent)
                await self._sleep(self._backoff(permanent))
        for delivery in deliveries:
            await delivery.ack()

    async def _write_transient_retried(self, batches: Sequence[Batch | None]) -> None:
        transient = 0
        while True:
            try:
                await self._write(batches)
                return
            except TransientStoreError as exc:
                transient += 1
                self._observer.retried(_stream_of(batches[0]), exc.message)
                await self._sleep(self._backoff(transient))

    async def _write_isolating(self, delivery: Delivery) -> bool:
        """Write one message; when a store refuses records of it, bisect to the records at
        fault, write all the others and dead-letter only those, at once (no retry can
        help them). True when the message may be acked."""
        batch = delivery.batch
        assert batch is not None
        refused: list[tuple[int, str]] = []
        await self._bisect(batch, 0, _size(batch), refused)
        if not refused:
            return True
        reason = f"{RecordsRejected.__name__}: {refused[0][1]}"
        if len(refused) == _size(batch):
            await self._dead_letter(delivery, reason)
            return False
        self._observer.dead_lettered(_stream_of(batch), reason[:100])
        log.error("dead-lettering %d of %d records of %s: %s",
                  len(refused), _size(batch), batch.message_id, reason)
        return await delivery.set_aside(_part(batch, [i for i, _ in refused]), reason)

    async def _bisect(self, batch: Batch, lo: int, hi: int, refused: list[tuple[int, str]]) -> None:
        try:
            await self._write_transient_retried([_slice(batch, lo, hi)])
        except RecordsRejected as exc:
            if hi - lo == 1:
                refused.append((lo, exc.message))
                return
            middle = (lo + hi) // 2
            await self._bisect(batch, lo, middle, refused)
            await self._bisect(batch, middle, hi, refused)

    async def _write(self, batches: Sequence[Batch | None]) -> None:
        metric_batches = [b for b in batches if isinstance(b, MetricBatch)]
        log_batches = [b for b in batches if isinstance(b, LogBatch)]
        started = self._monotonic()
        if metric_batches:
            await self._metrics.write_batches(metric_batches)
            if self._versions is not None:  # late points: cached past windows are stale now
                await self._versions.note_written(metric_batches)
            self._observer.batch_written(
                Stream.METRICS.value, sum(len(b.points) for b in metric_batches),
                self._monotonic() - started,
            )
        if log_batches:
            started = self._monotonic()
            # PostgreSQL first: it is the store that refuses text (NUL), and a record it
            # refuses must not stay searchable in OpenSearch while it is dead-lettered.
            await self._log_metadata.write_batches(log_batches)
            await self._logs.write_batches(log_batches)
            self._observer.batch_written(
                Stream.LOGS.value, sum(len(b.records) for b in log_batches),
                self._monotonic() - started,
            )

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        log.error("dead-lettering a message: %s", reason)
        self._observer.dead_lettered(_stream([delivery]), reason[:100])
        await delivery.dead_letter(reason)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._settings.backoff_cap, self._settings.backoff_base * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + random.random() / 2)  # jitter keeps workers from syncing up


def _size(batch: Batch) -> int:
    return len(batch.points) if isinstance(batch, MetricBatch) else len(batch.records)


def _slice(batch: Batch, lo: int, hi: int) -> Batch:
    """Records [lo, hi) of a batch. A part gets its own message id, derived from the
    positions: the stores' inbox keeps each written part from being written twice when the
    message is redelivered (and bisected the same way again), and a part never hides the
    rest of its message behind the whole message's id."""
    if lo == 0 and hi == _size(batch):
        return batch
    message_id = f"{batch.message_id}/{lo}-{hi}"
    if isinstance(batch, MetricBatch):
        return attrs.evolve(batch, message_id=message_id, points=batch.points[lo:hi])
    return attrs.evolve(batch, message_id=message_id, records=batch.records[lo:hi])


def _part(batch: Batch, positions: Sequence[int]) -> Batch:
    """The records at `positions`, under the message's own id (a replay writes them once)."""
    if isinstance(batch, MetricBatch):
        return attrs.evolve(batch, points=[batch.points[i] for i in positions])
    return attrs.evolve(batch, records=[batch.records[i] for i in positions])


def _records(deliveries: Sequence[Delivery]) -> int:
    total = 0
    for delivery in deliveries:
        batch = delivery.batch
        if isinstance(batch, MetricBatch):
            total += len(batch.points)
        elif isinstance(batch, LogBatch):
            total += len(batch.records)
    return total


def _stream(deliveries: Sequence[Delivery]) -> str:
    return _stream_of(deliveries[0].batch)


def _stream_of(batch: Batch | None) -> str:
    if isinstance(batch, MetricBatch):
        return Stream.METRICS.value
    return Stream.LOGS.value if isinstance(batch, LogBatch) else "unknown"
