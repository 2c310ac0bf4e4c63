"""In-memory tick lock and evaluation queue: the embedded default, and the reference
semantics of the PostgreSQL lock and the RabbitMQ queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from opspilot.domain.errors import ServiceUnavailable
from opspilot.domain.ports import EvaluationTask


class InMemorySchedulerLock:
    """Remembers every tick key ever taken, so a tick is owned once per process lifetime
    (the whole lifetime of the embedded deployment)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    async def acquire_tick(self, tick_key: str) -> bool:
        # No await between the test and the insert: atomic on the event loop.
        if tick_key in self.taken:
            return False
        self.taken.add(tick_key)
        return True


class InMemoryEvaluationDelivery:
    def __init__(self, queue: InMemoryEvaluationQueue, task: EvaluationTask, attempt: int) -> None:
        self._queue = queue
        self._task = task
        self._attempt = attempt
        self._settled = False

    @property
    def task(self) -> EvaluationTask:
        return self._task

    @property
    def attempt(self) -> int:
        return self._attempt

    async def ack(self) -> None:
        self._settle()

    async def retry(self) -> None:
        self._settle()
        self._queue._put(self._task, self._attempt + 1)

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError("delivery already settled")
        self._settled = True
        self._queue.in_flight -= 1


class InMemoryEvaluationQueue:
    """FIFO of tasks; a task taken and neither acked nor retried stays counted in
    `in_flight` (inspection helper for tests)."""

    def __init__(self) -> None:
        self._tasks: asyncio.Queue[tuple[EvaluationTask, int]] = asyncio.Queue()
        self.in_flight = 0
        self.published = 0
        self._closed = False

    async def publish(self, tasks: Sequence[EvaluationTask]) -> None:
        if self._closed:
            raise ServiceUnavailable("evaluation queue is closed")
        for task in tasks:
            self._put(task, 1)
            self.published += 1

    async def take(self, wait_seconds: float) -> InMemoryEvaluationDelivery | None:
        try:
            if wait_seconds <= 0:
                task, attempt = self._tasks.get_nowait()
            else:
                async with asyncio.timeout(wait_seconds):
                    task, attempt = await self._tasks.get()
        except (asyncio.QueueEmpty, TimeoutError):
            return None
        self.in_flight += 1
        return InMemoryEvaluationDelivery(self, task, attempt)

    def depth(self) -> int:
        return self._tasks.qsize()

    def close(self) -> None:
        self._closed = True

    def _put(self, task: EvaluationTask, attempt: int) -> None:
        self._tasks.put_nowait((task, attempt))
