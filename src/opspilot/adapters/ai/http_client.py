"""The Analyzer port answered by a remote `opspilot ai` over HTTP.

Contract, beyond the port's: every call is bounded by `timeout` seconds per attempt; connect
errors and 5xx answers are retried `retries` times with exponential backoff (timeouts are
not: the service is slow, asking again only doubles the wait); after `failure_threshold`
consecutive failed calls the circuit opens for `cooldown` seconds, during which calls fail
at once with ServiceUnavailable (`retry_after` = the time left), then one trial call decides
whether it closes again. A 4xx answer is the caller's fault, not the service's: it becomes
ValidationError (LimitExceeded for limits) naming the service's field, and does not count as
a failure. One aiohttp ClientSession serves the analyzer's lifetime (`start`/`close`, or
`async with`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from opspilot.domain.analysis import Anomaly, AnomalyReport, AnomalyRequest, LogCluster, LogLine
from opspilot.domain.errors import LimitExceeded, ServiceUnavailable, ValidationError


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; half-open (one trial) after `cooldown`."""

    def __init__(self, threshold: int, cooldown: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def admit(self) -> None:
        """Raise ServiceUnavailable unless a call may go out now."""
        if self._opened_at is None:
            return
        left = self._opened_at + self.cooldown - self._clock()
        if left > 0 or self._trial_running:
            raise ServiceUnavailable("AI service circuit is open after repeated failures",
                                     retry_after=max(left, 1.0), failures=self.failures)
        self._trial_running = True  # half-open: this call is the trial

    def succeeded(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._trial_running = False

    def failed(self) -> None:
        self.failures += 1
        self._trial_running = False
        if self._opened_at is not None or self.failures >= self.threshold:
            self._opened_at = self._clock()


class _Retryable(Exception):
    """An attempt failed in a way another attempt may fix (connect error, 5xx)."""


class HttpAnalyzer:
    def __init__(
        self,
        base_url: str,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.1,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries = retries
        self._backoff = backoff
        self.breaker = CircuitBreaker(failure_threshold, cooldown, clock)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def start(self) -> None:
        if self._session is None and not self._closed:
            self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HttpAnalyzer:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # the port -------------------------------------------------------------------------------

    async def detect_anomalies(self, request: AnomalyRequest) -> AnomalyReport:
        body = {
            "metric_name": request.metric_name,
            "data_points": [{"timestamp": p.timestamp.isoformat(), "value": p.value}
                            for p in request.points],
            "method": str(request.method),
            "threshold": request.threshold,
            "include_scores": request.include_scores,
        }
        doc = await self._call("/ai/anomaly", body)
        scores = doc.get("scores")
        ongoing = doc.get("ongoing")
        return AnomalyReport(tuple(_anomaly(item) for item in doc["anomalies"]),
                             tuple(float(s) for s in scores) if scores is not None else None,
                             _anomaly(ongoing) if ongoing is not None else None)

    async def cluster_logs(
        self, lines: Sequence[LogLine], include_members: bool = False
    ) -> list[LogCluster]:
        body = {"logs": [{"message": line.message, "level": line.level} for line in lines],
                "include_members": include_members}
        doc = await self._call("/ai/cluster", body)
        return [_cluster(item) for item in doc["clusters"]]

    # calls, retries, the breaker ------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise ServiceUnavailable("the AI client is closed")
        await self.start()
        self.breaker.admit()
        try:
            doc = await self._with_retries(path, orjson.dumps(body))
        except ValidationError:
            self.breaker.succeeded()  # the service answered: it is healthy
            raise
        except ServiceUnavailable:
            self.breaker.failed()
            raise
        self.breaker.succeeded()
        return doc

    async def _with_retries(self, path: str, payload: bytes) -> dict[str, Any]:
        for attempt in range(self._retries + 1):
            try:
                return await self._attempt(path, payload)
            except _Retryable as exc:
                if attempt == self._retries:
                    raise ServiceUnavailable(f"AI service unavailable: {exc}",
                                             attempts=attempt + 1) from None
                await asyncio.sleep(self._backoff * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(self, path: str, payload: bytes) -> dict[str, Any]:
        assert self._session is not None
        try:
            async with self._session.post(
                self._base + path, data=payload, timeout=self._timeout,
                headers={"Content-Type": "application/json"},
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise ServiceUnavailable(
                f"AI service did not answer within {self._timeout.total} s") from None
        except aiohttp.ClientError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        return _answer(status, raw)


def _answer(status: int, raw: bytes) -> dict[str, Any]:
    if status >= 500:
        raise _Retryable(f"HTTP {status}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ServiceUnavailable(f"AI service sent HTTP {status} without JSON") from None
    if status >= 400:
        raise _client_error(status, doc)
    return doc  # type: ignore[no-any-return]


def _client_error(status: int, doc: Any) -> ValidationError:
    error = doc.get("error", {}) if isinstance(doc, dict) else {}
    details = error.get("details") or {}
    field = str(details.get("field") or "body")
    message = str(error.get("message") or f"HTTP {status}")
    message = message.removeprefix(f"{field}: ")  # ValidationError adds it back
    if status == 413 or error.get("code") in ("limit_exceeded", "body_too_large"):
        return LimitExceeded(field, message)
    return ValidationError(field, message)


def _anomaly(item: dict[str, Any]) -> Anomaly:
    return Anomaly(datetime.fromisoformat(item["timestamp"]), float(item["value"]),
                   float(item["score"]), float(item["deviation"]), item.get("expected"))


def _cluster(item: dict[str, Any]) -> LogCluster:
    members = item.get("members")
    return LogCluster(item["pattern"], int(item["count"]), dict(item["levels"]),
                      tuple(item["samples"]), tuple(members) if members is not None else None)
