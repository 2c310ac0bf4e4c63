"""Delivering notifications: each channel of a rule, concurrently, retried with capped
exponential backoff inside a time budget, every attempt recorded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import attrs

from opspilot.domain.alerts import AlertRule, Channel, DeliveryAttempt, Notification
from opspilot.domain.errors import DeliveryFailed
from opspilot.domain.ports import AlertObserver, ChannelStore, Clock, IncidentStore, Notifier

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@attrs.frozen
class RetryPolicy:
    max_attempts: int = 4
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    budget_seconds: float = 45.0  # per channel and event, attempts and waits included

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return min(self.backoff_cap, max(backoff, retry_after or 0.0))


@attrs.frozen
class Outbound:
    """One notification owed to the channels of one rule."""

    rule: AlertRule
    notification: Notification


class NotificationDispatcher:
    """Delivers to each channel of a rule, concurrently, with retries inside a time budget;
    records every attempt. Never raises: a failure is an attempt with `ok=False`."""

    def __init__(
        self,
        notifier: Notifier,
        channels: ChannelStore,
        incidents: IncidentStore,
        clock: Clock,
        policy: RetryPolicy = RetryPolicy(),
        observer: AlertObserver | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._notifier = notifier
        self._channels = channels
        self._incidents = incidents
        self._clock = clock
        self._policy = policy
        self._observer = observer or AlertObserver()
        self._sleep = sleep

    async def dispatch(self, outbound: Sequence[Outbound]) -> list[DeliveryAttempt]:
        """Every channel of every item at once; returns each channel's last attempt."""
        jobs = [job for item in outbound for job in await self._jobs(item)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        finals: list[DeliveryAttempt] = []
        for result in results:
            if isinstance(result, BaseException):
                log.error("notification job failed unexpectedly", exc_info=result)
            else:
                finals.append(result)
        return finals

    async def send_once(self, channel: Channel, notification: Notification) -> DeliveryAttempt:
        try:
            async with asyncio.timeout(self._policy.budget_seconds):
                return (await self._attempt(channel, notification, 1)).attempt
        except TimeoutError:
            return self._failed(channel, notification, 1, "timed out")

    async def _jobs(self, item: Outbound) -> list[Awaitable[DeliveryAttempt]]:
        jobs: list[Awaitable[DeliveryAttempt]] = []
        for channel_id in item.rule.channels:
            try:
                channel = await self._channels.get_channel(item.rule.project_id, channel_id)
            except Exception:
                log.exception("channel %s could not be read", channel_id)
                channel = None
            if channel is None:
                jobs.append(self._missing(channel_id, item.notification))
            else:
                jobs.append(self._deliver(channel, item.notification))
        return jobs

    async def _missing(self, channel_id: str, notification: Notification) -> DeliveryAttempt:
        attempt = DeliveryAttempt(
            channel_id, notification.incident_id, notification.event, 1, self._clock.now(),
            False, "channel no longer exists",
        )
        await self._record(attempt)
        return attempt

    async def _deliver(self, channel: Channel, notification: Notification) -> DeliveryAttempt:
        number, last_recorded = 0, None
        try:
            async with asyncio.timeout(self._policy.budget_seconds):
                while True:
                    number += 1
                    tried = await self._attempt(channel, notification, number)
                    await self._record(tried.attempt)
                    last_recorded = tried.attempt
                    final = number >= self._policy.max_attempts
                    if tried.attempt.ok or not tried.retryable or final:
                        outcome = "delivered" if tried.attempt.ok else "failed"
                        self._observer.notified(channel.type.value, outcome)
                        return tried.attempt
                    await self._sleep(self._policy.delay(number, tried.retry_after))
        except TimeoutError:
            self._observer.notified(channel.type.value, "timed_out")
            if last_recorded is not None and last_recorded.attempt == number:
                return last_recorded  # the budget ran out while waiting to retry
            attempt = self._failed(  # ...or during this attempt, which never answered
                channel, notification, number,
                f"no answer within the {self._policy.budget_seconds:g}s budget",
            )
            await self._record(attempt)
            return attempt

    async def _attempt(self, channel: Channel, notification: Notification, number: int) -> _Tried:
        try:
            await self._notifier.send(channel, notification)
        except DeliveryFailed as exc:
            retry_after = exc.details.get("retry_after")
            return _Tried(
                self._failed(channel, notification, number, exc.message), exc.retryable,
                float(retry_after) if isinstance(retry_after, int | float) else None,
            )
        except Exception as exc:  # a bug in a notifier must not take the tick down
            log.exception("notifier raised an untranslated error for channel %s", channel.id)
            return _Tried(self._failed(channel, notification, number, repr(exc)), False)
        attempt = DeliveryAttempt(
            channel.id, notification.incident_id, notification.event, number,
            self._clock.now(), True, "delivered",
        )
        return _Tried(attempt, False)

    def _failed(
        self, channel: Channel, notification: Notification, number: int, detail: str
    ) -> DeliveryAttempt:
        return DeliveryAttempt(
            channel.id, notification.incident_id, notification.event, number,
            self._clock.now(), False, detail[:500],
        )

    async def _record(self, attempt: DeliveryAttempt) -> None:
        if attempt.incident_id is None:
            return
        try:
            await self._incidents.record_delivery(attempt)
        except Exception:
            log.exception("could not record a delivery attempt for %s", attempt.incident_id)


@attrs.frozen
class _Tried:
    attempt: DeliveryAttempt
    retryable: bool
    retry_after: float | None = None
