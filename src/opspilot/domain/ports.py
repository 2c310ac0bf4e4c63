"""The ports: what the use cases need from the outside world.

Each has an in-memory adapter (adapters/memory) and at least one real one, and one contract
suite (tests/contract) that every adapter of the port must pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

import attrs

from opspilot.domain.alerts import (
    AlertRule,
    Channel,
    ChannelType,
    DeliveryAttempt,
    Incident,
    IncidentStatus,
    Notification,
    RuleState,
)
from opspilot.domain.analysis import Analyzer as Analyzer
from opspilot.domain.ingest import LogBatch, MetricBatch, Stream
from opspilot.domain.labels import Labels, SampleSeries, SeriesSelection
from opspilot.domain.logs import (
    CountBucket,
    LogContext,
    LogFilter,
    LogLevel,
    LogPage,
    LogQuery,
    LogRecord,
    VolumeQuery,
)
from opspilot.domain.metrics import (
    Aggregation,
    Histogram,
    HistogramQuery,
    MetricMetadata,
    MetricQuery,
    Series,
    SeriesSelector,
)
from opspilot.domain.step_windows import StepValues, StepWindows
from opspilot.domain.tenancy import (
    ApiKey,
    AuditEvent,
    Membership,
    MetricRetention,
    Project,
    Role,
    Token,
    User,
)
from opspilot.domain.timewindow import TimeRange


class Clock(Protocol):
    def now(self) -> datetime: ...


class IdGenerator(Protocol):
    def new_id(self) -> str: ...


# -- metrics -----------------------------------------------------------------------------


@attrs.frozen
class WindowRequest:
    """One aggregate over one window, as the alert engine asks for it."""

    project_id: str
    series: SeriesSelector
    aggregation: Aggregation
    window: TimeRange


@attrs.frozen
class WindowValue:
    value: float | None  # None: no points in the window
    count: int


class MetricStore(Protocol):
    """Metric points, queried as bucketed aggregates. Every read is scoped to a project."""

    async def write_batches(self, batches: Sequence[MetricBatch]) -> int:
        """Store the batches atomically; a batch whose message id was already stored is
        skipped. Returns the points written. Raises TransientStoreError when the store is
        unreachable (the caller retries)."""
        ...

    async def query(self, queries: Sequence[MetricQuery]) -> list[Series]:
        """One series per query, in order; buckets with no points are absent."""
        ...

    async def histogram(self, query: HistogramQuery) -> Histogram: ...

    # Discovery (the explorer's pickers): what has a point in the window, sorted, bounded.
    async def metric_names(self, project_id: str, window: TimeRange, limit: int) -> list[str]:
        """Distinct metric names, at most `limit`, ascending."""
        ...

    async def service_names(
        self, project_id: str, window: TimeRange, metric_name: str | None, limit: int
    ) -> list[str]:
        """Distinct non-null services (of one metric if given), at most `limit`, ascending."""
        ...

    async def tag_values(
        self, project_id: str, metric_name: str, window: TimeRange, limit: int
    ) -> dict[str, list[str]]:
        """Tag key → its distinct values on the metric's points, at most `limit` keys
        (ascending) and `limit` values per key (ascending)."""
        ...

    async def bucket_increases(self, query: MetricQuery) -> dict[str, Series]:
        """Per `le` bound of the histogram bucket counters the query selects
        (`<name>_bucket`), the observations at or below it in each bucket of time
        (domain.bucket_counts: cumulative series by their increases, delta exports each read
        at its own bounds); `le` texts that name no bound are left out, and the query's
        aggregation is not used."""
        ...

    async def aggregate_windows(self, requests: Sequence[WindowRequest]) -> list[WindowValue]:
        """One value per request, in order, in as few round trips as the store allows."""
        ...

    async def select_samples(self, selection: SeriesSelection) -> list[SampleSeries]:
        """Every series of the project matching all of the selection's matchers that has a
        sample in [start, end], with those samples, in one round trip. Raises LimitExceeded
        past the selection's limits (samples read, series returned) rather than answer in part."""
        ...

    async def select_labels(self, selection: SeriesSelection) -> list[Labels]:
        """The label sets select_samples would return, without reading the samples."""
        ...

    async def metric_metadata(self, project_id: str) -> dict[str, MetricMetadata]:
        """What the ingest protocols said about the project's metric families (the latest
        description of each), by family name."""
        ...

    async def select_step_values(self, selection: SeriesSelection, windows: StepWindows
                                 ) -> StepValues:
        """`windows.function` at every step (domain.step_windows is the reference) over the
        series select_samples would return for `selection` (which spans every window),
        each series with its labels as stored; series without a value at any step are left
        out. Raises LimitExceeded past the selection's limits, as select_samples does."""
        ...

    async def drop_before(self, cutoff: datetime | None,
                          by_project: Mapping[str, datetime | None] | None = None) -> list[str]:
        """Retention, at the store's granularity (whole UTC days): afterwards nothing older
        than the start of `cutoff`'s UTC day is left, and everything at or after `cutoff` is
        kept. The projects named in `by_project` (their own retention) go by their own
        cutoff instead; None keeps (a project's, or everyone else's) data. Returns what was
        dropped (partition or index names, or `table<day project`; the in-memory stores name
        the days). Raises TransientStoreError when the store is unreachable."""
        ...

    async def ping(self) -> None: ...


@attrs.frozen
class CompactionResult:
    periods: int  # periods compacted (or merged with late points) by this call
    points: int  # hot points moved into blocks
    backlog: int  # closed periods still holding hot points afterwards (another compactor
    #               holds them, or over max_periods): the next run's work


class MetricCompaction(Protocol):
    """The metric store's second tier: closed periods (COMPACTION_PERIOD, epoch-aligned) of
    hot points become per-series blocks (values + summary), and later the values expire
    while the summaries stay. Reads of the store give the same answers before and after
    compaction; after values expire, whole-period summaries answer (see MetricStore)."""

    async def compact(self, before: datetime, max_periods: int = 1_000) -> CompactionResult:
        """Compact every period that ends at or before `before` and still holds hot points
        (late points are merged into the period's blocks), oldest first, at most
        `max_periods`. Each period is compacted in one transaction, under a lock of its own,
        so concurrent compactors never take the same period and a crash leaves it hot.
        Raises TransientStoreError when the store is unreachable."""
        ...

    async def expire_values_before(self, cutoff: datetime | None,
                                   by_project: Mapping[str, datetime | None] | None = None
                                   ) -> list[str]:
        """Downsampling: drop the raw values before the start of `cutoff`'s UTC day (hot and
        compacted; hot periods are compacted first so their summaries exist), or before a
        project's own cutoff for the projects in `by_project` (None: kept), and keep the
        per-period summaries (count, sum, min, max, percentile sketch), which then answer
        for those periods: a summary counts in the bucket of its period's start, exactly
        for count/sum/min/max/avg, within the sketch's error for percentiles. `drop_before`
        removes the summaries too. Returns what was dropped."""
        ...


# -- logs ----------------------------------------------------------------------------------


class LogStore(Protocol):
    """Full-text log storage. Ordering is newest first, ties broken by log id descending."""

    async def write_batches(self, batches: Sequence[LogBatch]) -> int:
        """Idempotent: records keep their deterministic ids, so a redelivered batch
        overwrites itself. Raises TransientStoreError when the store is unreachable."""
        ...

    async def search(self, query: LogQuery) -> LogPage: ...

    async def get(self, project_id: str, log_id: str) -> LogRecord | None: ...

    async def context(
        self, project_id: str, log_id: str, before: int, after: int,
        across_services: bool = False,
    ) -> LogContext:
        """Neighbours in the same project and service stream (or, across_services, in the
        whole project), in (timestamp, id) order; raises NotFound."""
        ...

    async def volume(self, query: VolumeQuery) -> list[CountBucket]:
        """Every bucket of the window, empty ones as zero."""
        ...

    def export(self, log_filter: LogFilter, chunk: int = 1000) -> AsyncIterator[LogRecord]:
        """Every matching record, newest first, without the paging limits."""
        ...

    async def drop_before(self, cutoff: datetime) -> list[str]:
        """Retention, at the store's granularity (whole UTC days): afterwards nothing older
        than the start of `cutoff`'s UTC day is left, and everything at or after `cutoff` is
        kept. Returns what was dropped (partition or index names; the in-memory stores name
        the days). Raises TransientStoreError when the store is unreachable."""
        ...

    async def ping(self) -> None: ...


class LogMetadataStore(Protocol):
    """The plan's `log_metadata` rows: fast counts by level without the search engine."""

    async def write_batches(self, batches: Sequence[LogBatch]) -> int: ...

    async def count(
        self, project_id: str, window: TimeRange, level: LogLevel | None = None
    ) -> int: ...

    async def drop_before(self, cutoff: datetime) -> list[str]:
        """Retention, at the store's granularity (whole UTC days): afterwards nothing older
        than the start of `cutoff`'s UTC day is left, and everything at or after `cutoff` is
        kept. Returns what was dropped (partition or index names; the in-memory stores name
        the days). Raises TransientStoreError when the store is unreachable."""
        ...


# -- tenancy -------------------------------------------------------------------------------


class TenancyStore(Protocol):
    """Projects, users, memberships, API keys, tokens (hashes only) and the audit log.

    `add_*` of a key or token with a hash already stored replaces it (revoking and rotating
    are saves of the changed object). Raises Conflict for a duplicate project name or user
    e-mail, TransientStoreError when the store cannot answer."""

    async def add_project(self, project: Project) -> None: ...

    async def get_project(self, project_id: str) -> Project | None: ...

    async def set_metric_retention(self, project_id: str, retention: MetricRetention) -> bool:
        """Replaces the project's own metric retention; False when there is no project."""
        ...

    async def metric_retentions(self) -> dict[str, MetricRetention]:
        """Every project that has its own metric retention (not the server's default)."""
        ...

    async def add_user(self, user: User) -> None: ...

    async def get_user(self, user_id: str) -> User | None: ...

    async def find_user(self, name: str) -> User | None:
        """The user with this e-mail address (exact match)."""
        ...

    async def add_membership(
        self, user_id: str, project_id: str, role: Role = Role.OWNER
    ) -> None:
        """Adds the user to the project, or changes their role there."""
        ...

    async def remove_membership(self, user_id: str, project_id: str) -> bool: ...

    async def roles_of(self, user_id: str) -> dict[str, Role]:
        """Project id -> the user's role there."""
        ...

    async def members(self, project_id: str) -> list[Membership]:
        """Ordered by user id."""
        ...

    async def add_api_key(self, key: ApiKey) -> None: ...

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash unless revoked (expiry is the caller's to check)."""
        ...

    async def list_api_keys(self, project_id: str) -> list[ApiKey]:
        """Every key of the project, revoked ones too, oldest first."""
        ...

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        """Record a use; never moves `last_used_at` backwards."""
        ...

    async def add_token(self, token: Token) -> None: ...

    async def find_token(self, token_hash: str) -> Token | None:
        """The token with this hash unless revoked (expiry is the caller's to check)."""
        ...

    async def list_tokens(self, user_id: str) -> list[Token]:
        """Every token of the user, revoked ones too, oldest first."""
        ...

    async def revoke_token(self, token_id: str) -> Token | None: ...

    async def add_audit(self, event: AuditEvent) -> None: ...

    async def list_audit(self, project_id: str, limit: int = 100) -> list[AuditEvent]:
        """The project's events, newest first (in the order written when `at` ties)."""
        ...


class SecretBox(Protocol):
    """Encrypts secrets to store them (channel URLs with tokens, webhook signing keys).

    `seal` output is text, self-describing (an adapter can tell it from a legacy plaintext
    value) and authenticated. Both raise ServiceUnavailable when no key is configured."""

    def seal(self, plaintext: str) -> str: ...

    def open(self, stored: str) -> str:
        """The plaintext of a sealed value; a value stored before encryption is returned as
        it is."""
        ...

    def reseal(self, stored: str) -> str:
        """The value sealed under the current key (for key rotation)."""
        ...


# -- alerting ------------------------------------------------------------------------------


class RuleStore(Protocol):
    async def save_rule(self, rule: AlertRule) -> None: ...

    async def get_rule(self, project_id: str, rule_id: str) -> AlertRule | None: ...

    async def list_rules(self, project_id: str) -> list[AlertRule]: ...

    async def delete_rule(self, project_id: str, rule_id: str) -> bool: ...

    async def enabled_rules(self) -> list[AlertRule]:
        """Every enabled rule of every project: the scheduler's work list."""
        ...

    async def get_states(self, rule_ids: Sequence[str]) -> dict[str, RuleState]: ...

    async def save_states(self, states: Sequence[RuleState]) -> None:
        """Upsert every state, in as few round trips as the store allows (the last of two
        for the same rule wins)."""
        ...


class ChannelStore(Protocol):
    async def save_channel(self, channel: Channel) -> None: ...

    async def get_channel(self, project_id: str, channel_id: str) -> Channel | None: ...

    async def list_channels(self, project_id: str) -> list[Channel]: ...

    async def delete_channel(self, project_id: str, channel_id: str) -> bool: ...


class IncidentStore(Protocol):
    async def save_incident(self, incident: Incident) -> None: ...

    async def get_incident(self, project_id: str, incident_id: str) -> Incident | None: ...

    async def list_incidents(
        self,
        project_id: str,
        status: IncidentStatus | None = None,
        rule_id: str | None = None,
        limit: int = 100,
    ) -> list[Incident]:
        """Newest first."""
        ...

    async def record_delivery(self, attempt: DeliveryAttempt) -> None: ...

    async def deliveries(self, incident_id: str) -> list[DeliveryAttempt]: ...


class Notifier(Protocol):
    async def send(self, channel: Channel, notification: Notification) -> None:
        """Deliver once; raises DeliveryFailed (with whether a retry may help)."""
        ...


class ChannelTargets(Protocol):
    """What a channel may be pointed at, checked when it is created with the same rules the
    notifier applies at every send (the SSRF guard, the e-mail recipients policy)."""

    async def refusal(self, channel_type: ChannelType, target: str) -> str | None:
        """Why every delivery to `target` would be refused, or None. The reason names what
        the caller gave, never what a host name resolved to. A name that does not resolve
        now is not refused: delivery retries it, and the send-time guard still applies."""
        ...


# -- ingest queue --------------------------------------------------------------------------


class IngestQueue(Protocol):
    async def publish(self, batch: MetricBatch | LogBatch) -> None:
        """Returns only once the queue holds the batch durably. Raises ServiceUnavailable
        (broker down, confirm timed out) or RateLimited (backlog over its limit)."""
        ...

    async def ping(self) -> None: ...


class Delivery(Protocol):
    """One message taken from a queue, not yet acknowledged."""

    @property
    def batch(self) -> MetricBatch | LogBatch | None:
        """None when the message could not be decoded (see `error`)."""
        ...

    @property
    def error(self) -> str | None: ...

    async def ack(self) -> None: ...

    async def dead_letter(self, reason: str) -> None: ...

    async def set_aside(self, part: MetricBatch | LogBatch, reason: str) -> bool:
        """Copy `part` (records of this message no store will take) to the dead-letter
        queue with the reason, confirmed by the queue; the message itself stays
        unacknowledged, for the caller to ack once the rest is written. False when the copy
        could not be made: the whole message is then handed back to the queue (to be
        redelivered) and must not be acked."""
        ...


class QueueDepth(Protocol):
    """How many messages wait, per stream (telemetry's consumer lag)."""

    async def depth(self, stream: Stream) -> int: ...

    async def dead_letter_depth(self, stream: Stream) -> int: ...


class IngestConsumer(Protocol):
    def deliveries(self, streams: Sequence[Stream]) -> AsyncIterator[Delivery]:
        """Messages as they arrive, at most `prefetch` unacknowledged at a time; the
        iterator ends when `stop()` is called."""
        ...

    async def stop(self) -> None: ...


@attrs.frozen
class DeadLetter:
    id: str
    stream: str
    reason: str
    body: bytes
    at: datetime | None = None


class DeadLetterQueue(Protocol):
    async def list(self, limit: int = 100) -> list[DeadLetter]: ...

    async def replay(self, limit: int | None = None) -> int:
        """Move dead letters back to their stream; returns how many."""
        ...


# -- cache and limits ----------------------------------------------------------------------


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys`, in order, in one round trip (None where absent)."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...

    async def set_many(self, values: Mapping[str, bytes], ttl_seconds: float) -> None:
        """Set every key with the same TTL in one round trip (not atomically)."""
        ...

    async def delete(self, key: str) -> None: ...


@attrs.frozen
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the bucket is full again
    retry_after: float  # seconds until one more request is allowed (0 when allowed)


class RateLimiter(Protocol):
    async def hit(self, key: str, rate_per_second: float, burst: int, cost: int = 1) -> RateDecision:
        """Token bucket: take `cost` tokens if there are enough. Raises ServiceUnavailable
        when the limiter's store is down (callers decide whether to fail open)."""
        ...


# -- scheduling ------------------------------------------------------------------------------


class SchedulerLock(Protocol):
    """Who owns a periodic tick (alert evaluation each minute, retention each hour)."""

    async def acquire_tick(self, tick_key: str) -> bool:
        """True for exactly one caller per tick key, ever: across replicas and restarts.
        Raises ServiceUnavailable when the lock's store cannot answer (the caller skips the
        tick rather than risk running it twice)."""
        ...


# The alert engine's ticks travel as chunks of rule references: whichever evaluator takes a
# chunk evaluates it (competing consumers).


@attrs.frozen
class RuleRef:
    project_id: str
    rule_id: str


@attrs.frozen
class EvaluationTask:
    """One chunk of one tick's rules. `at` is the tick's time: every evaluator of the tick
    evaluates the windows ending there."""

    tick_key: str
    at: datetime
    rules: tuple[RuleRef, ...]
    chunk: int = 0
    chunks: int = 1


class EvaluationDelivery(Protocol):
    """A task taken from the queue and not yet settled."""

    @property
    def task(self) -> EvaluationTask: ...

    @property
    def attempt(self) -> int:
        """1 the first time the task is handed out, 2 after one `retry()`, …"""
        ...

    async def ack(self) -> None: ...

    async def retry(self) -> None:
        """Hand the task back so that it is taken again (here or by another evaluator)."""
        ...


class EvaluationQueue(Protocol):
    async def publish(self, tasks: Sequence[EvaluationTask]) -> None:
        """Returns once the queue holds every task durably; raises ServiceUnavailable."""
        ...

    async def take(self, wait_seconds: float) -> EvaluationDelivery | None:
        """The next task, or None when none arrives within `wait_seconds`."""
        ...


# -- telemetry hooks -----------------------------------------------------------------------
# What the use cases report as they go. Each is a port whose default does nothing, so a use
# case built without telemetry needs no stub; the Prometheus adapters (adapters/prometheus)
# override the hooks they count.


@attrs.frozen
class CompactionReport:
    tick_key: str
    owned: bool
    periods: int = 0
    points: int = 0
    backlog: int = 0
    seconds: float = 0.0


class WorkerObserver:
    """The ingestion worker's hooks."""

    def batch_written(self, stream: str, records: int, seconds: float) -> None: ...

    def retried(self, stream: str, reason: str) -> None: ...

    def dead_lettered(self, stream: str, reason: str) -> None: ...

    def delivered(self, stream: str, age_seconds: float) -> None:
        """A message reached the worker `age_seconds` after the API accepted it. Queues are
        FIFO, so this is the age of the oldest message of the stream when it was taken: the
        lag an autoscaler can act on (ADR 0028)."""


class AlertObserver:
    """The alert engine's hooks (rules, notifications, ticks)."""

    def evaluated(self, rules: int, seconds: float) -> None: ...

    def incident_opened(self, rule: AlertRule) -> None: ...

    def incident_resolved(self, rule: AlertRule) -> None: ...

    def notified(self, channel_type: str, outcome: str) -> None:
        """`outcome`: delivered | failed | timed_out (one call per channel and event)."""

    def ticked(self, owned: bool, rules: int) -> None: ...


class RetentionObserver:
    """The retention job's hooks."""

    def retention_ran(self, store: str, dropped: int, failed: bool) -> None: ...


class CompactionObserver:
    """The compaction job's hooks."""

    def compaction_ran(self, report: CompactionReport) -> None: ...
