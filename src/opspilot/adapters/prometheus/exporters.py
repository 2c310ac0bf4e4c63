"""Exporters of the stores and the queue: Prometheus collectors the processes register.

- `PoolCollector`: the asyncpg pool's connections by state, read at scrape time (no I/O).
- `PostgresExporter`: table and index sizes, rows inserted, slow and open connections, read
  from the catalogue and `pg_stat_*` views by `refresh()` (a background task calls it every
  15 s or so); a scrape only serves the last snapshot, so it never waits on the database.
- `OpenSearchExporter`: documents, store size and search counters of the log indices, from
  `_stats`; the same snapshot discipline.
- `QueueDepthSampler`: sets `opspilot_queue_depth{queue}` for each stream and its DLQ, from
  the `QueueDepth` port.

Every label set is bounded: tables are the schema's own (at most `MAX_TABLES`, partitions
summed into their root), index patterns are the configured one, queues are the streams.
A failed refresh drops the snapshot (the series go stale rather than lie) and is counted in
`opspilot_exporter_errors_total{exporter}`; `opspilot_exporter_up{exporter}` says whether
the last refresh worked.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from opspilot.domain.ingest import Stream
from opspilot.domain.ports import QueueDepth

log = logging.getLogger(__name__)

MAX_TABLES = 50
SLOW_QUERY_SECONDS = 1.0
DEPTH_STREAMS = (Stream.METRICS, Stream.LOGS)

PoolSource = Callable[[], Any]


def _source(pool_or_getter: Any) -> PoolSource:
    """A pool, or a zero-argument callable returning the current pool (or None)."""
    if callable(pool_or_getter) and not hasattr(pool_or_getter, "acquire"):
        return pool_or_getter  # type: ignore[no-any-return]
    return lambda: pool_or_getter


class ExporterHealth:
    """`opspilot_exporter_up{exporter}` and `opspilot_exporter_errors_total{exporter}`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge("opspilot_exporter_up", "1 when the exporter's last refresh worked",
                        ["exporter"], registry=registry)
        self.errors = Counter("opspilot_exporter_errors_total", "Failed exporter refreshes",
                              ["exporter"], registry=registry)
        self.duration = Gauge("opspilot_exporter_refresh_seconds",
                              "Duration of the exporter's last refresh", ["exporter"],
                              registry=registry)

    def worked(self, exporter: str, seconds: float) -> None:
        self.up.labels(exporter).set(1)
        self.duration.labels(exporter).set(seconds)

    def failed(self, exporter: str, exc: BaseException) -> None:
        log.warning("%s exporter refresh failed: %s: %s", exporter, type(exc).__name__, exc)
        self.up.labels(exporter).set(0)
        self.errors.labels(exporter).inc()


# -- the asyncpg pool ------------------------------------------------------------------------


class PoolCollector:
    """`opspilot_db_pool_connections{state}`: open, idle, in_use, max; read at scrape time."""

    NAME = "opspilot_db_pool_connections"

    def __init__(self, pool: Any) -> None:
        self._pool = _source(pool)

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        pool = self._pool()
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
            family.add_metric(["open"], size)
            family.add_metric(["idle"], idle)
            family.add_metric(["in_use"], max(0, size - idle))
            family.add_metric(["max"], pool.get_max_size())
        yield family

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.NAME, "PostgreSQL pool connections of this process",
                                 labels=["state"])


# -- PostgreSQL --------------------------------------------------------------------------------

# Partitions are summed into their root table; only the connection's own schema is counted.
_TABLES_SQL = f"""
WITH rel AS (
    SELECT coalesce(pg_partition_root(c.oid), c.oid) AS root, c.oid
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
)
SELECT r.relname AS table_name,
       sum(pg_table_size(rel.oid))::float8 AS table_bytes,
       sum(pg_indexes_size(rel.oid))::float8 AS index_bytes,
       coalesce(sum(s.n_tup_ins), 0)::float8 AS rows_inserted,
       coalesce(sum(s.n_live_tup), 0)::float8 AS live_rows
FROM rel
JOIN pg_class r ON r.oid = rel.root
LEFT JOIN pg_stat_user_tables s ON s.relid = rel.oid
GROUP BY r.relname
ORDER BY table_bytes DESC
LIMIT {MAX_TABLES}
"""

_ACTIVITY_SQL = """
SELECT coalesce(state, 'unknown') AS state, count(*)::float8 AS connections,
       count(*) FILTER (
           WHERE state = 'active' AND now() - query_start > make_interval(secs => $1)
       )::float8 AS slow
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
GROUP BY 1
"""

_PG_STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)",
              "fastpath function call", "disabled", "unknown")


class PostgresExporter:
    """Collector of the last snapshot; `await refresh()` takes a new one (one connection,
    two catalogue queries, a few milliseconds). pg_stat_statements is not needed."""

    name = "postgres"

    def __init__(self, pool: Any, slow_seconds: float = SLOW_QUERY_SECONDS) -> None:
        self._pool = _source(pool)
        self._slow = slow_seconds
        self._tables: list[Any] = []
        self._activity: list[Any] = []

    async def refresh(self) -> None:
        pool = self._pool()
        if pool is None:
            self.forget()
            raise RuntimeError("the PostgreSQL pool is not open")
        try:
            async with pool.acquire() as conn:
                tables = await conn.fetch(_TABLES_SQL)
                activity = await conn.fetch(_ACTIVITY_SQL, self._slow)
        except BaseException:
            self.forget()
            raise
        self._tables, self._activity = list(tables), list(activity)

    def forget(self) -> None:
        self._tables, self._activity = [], []

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[Metric]:
        table_bytes = GaugeMetricFamily(
            "opspilot_pg_table_bytes", "Table size on disk, partitions included (no indexes)",
            labels=["table"])
        index_bytes = GaugeMetricFamily(
            "opspilot_pg_index_bytes", "Size of the table's indexes, partitions included",
            labels=["table"])
        rows = CounterMetricFamily(
            "opspilot_pg_rows_inserted", "Rows inserted (pg_stat_user_tables.n_tup_ins; "
            "drops when partitions are dropped, read as a counter reset)", labels=["table"])
        live = GaugeMetricFamily(
            "opspilot_pg_live_rows", "Estimated live rows (pg_stat_user_tables.n_live_tup)",
            labels=["table"])
        for row in self._tables:
            table = row["table_name"]
            table_bytes.add_metric([table], row["table_bytes"])
            index_bytes.add_metric([table], row["index_bytes"])
            rows.add_metric([table], row["rows_inserted"])
            live.add_metric([table], row["live_rows"])
        connections = GaugeMetricFamily(
            "opspilot_pg_connections", "Client connections to this database by state "
            "(all clients, from pg_stat_activity)", labels=["state"])
        slow = GaugeMetricFamily(
            "opspilot_pg_slow_queries",
            f"Statements running longer than {self._slow:g} s right now")
        if self._activity:
            slow_total = 0.0
            for row in self._activity:
                state = row["state"] if row["state"] in _PG_STATES else "unknown"
                connections.add_metric([state], row["connections"])
                slow_total += row["slow"]
            slow.add_metric([], slow_total)
        return [table_bytes, index_bytes, rows, live, connections, slow]


# -- OpenSearch --------------------------------------------------------------------------------


class OpenSearchExporter:
    """Collector of the last `_stats` snapshot of the log indices (`index_pattern`)."""

    name = "opensearch"

    def __init__(self, client: Any, index_pattern: str) -> None:
        self._client = client
        self._pattern = index_pattern
        self._snapshot: dict[str, float] | None = None

    async def refresh(self) -> None:
        try:
            # a wildcard that matches nothing answers empty stats, not an error
            stats = await self._client.indices.stats(
                index=self._pattern, metric="docs,store,search", expand_wildcards="open"
            )
        except BaseException:
            self._snapshot = None
            raise
        self._snapshot = self.parse(stats)

    @staticmethod
    def parse(stats: dict[str, Any]) -> dict[str, float]:
        whole = stats.get("_all") or {}
        primaries, total = whole.get("primaries") or {}, whole.get("total") or {}
        search = total.get("search") or {}
        return {
            "indices": float(len(stats.get("indices") or {})),
            "docs": float((primaries.get("docs") or {}).get("count", 0)),
            "store_bytes": float((total.get("store") or {}).get("size_in_bytes", 0)),
            "queries": float(search.get("query_total", 0)),
            "query_seconds": float(search.get("query_time_in_millis", 0)) / 1000.0,
            "fetches": float(search.get("fetch_total", 0)),
            "fetch_seconds": float(search.get("fetch_time_in_millis", 0)) / 1000.0,
        }

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[Metric]:
        label = ["index_pattern"]
        indices = GaugeMetricFamily("opspilot_opensearch_indices", "Open log indices",
                                    labels=label)
        docs = GaugeMetricFamily("opspilot_opensearch_docs",
                                 "Documents in the log indices (primaries)", labels=label)
        store = GaugeMetricFamily("opspilot_opensearch_store_bytes",
                                  "Store size of the log indices (all copies)", labels=label)
        queries = CounterMetricFamily("opspilot_opensearch_search_queries",
                                      "Search query phases run (_stats query_total)",
                                      labels=label)
        query_seconds = CounterMetricFamily(
            "opspilot_opensearch_search_query_seconds",
            "Time spent in search query phases (_stats query_time_in_millis / 1000)",
            labels=label)
        fetches = CounterMetricFamily("opspilot_opensearch_search_fetches",
                                      "Search fetch phases run (_stats fetch_total)",
                                      labels=label)
        fetch_seconds = CounterMetricFamily(
            "opspilot_opensearch_search_fetch_seconds",
            "Time spent in search fetch phases (_stats fetch_time_in_millis / 1000)",
            labels=label)
        snap = self._snapshot
        if snap is not None:
            value = [self._pattern]
            indices.add_metric(value, snap["indices"])
            docs.add_metric(value, snap["docs"])
            store.add_metric(value, snap["store_bytes"])
            queries.add_metric(value, snap["queries"])
            query_seconds.add_metric(value, snap["query_seconds"])
            fetches.add_metric(value, snap["fetches"])
            fetch_seconds.add_metric(value, snap["fetch_seconds"])
        return [indices, docs, store, queries, query_seconds, fetches, fetch_seconds]


# -- the queue ---------------------------------------------------------------------------------


class QueueDepthSampler:
    """Sets `gauge{queue}` to each stream's depth and its DLQ's (`<stream>.dlq`). A failed
    look-up removes that series until the next success (so a dashboard shows a gap, not a
    stale number)."""

    name = "queue"

    def __init__(self, queue: QueueDepth, gauge: Gauge,
                 streams: Sequence[Stream] = DEPTH_STREAMS,
                 on_depth: Callable[[str, int], None] | None = None) -> None:
        self._queue = queue
        self._gauge = gauge
        self._streams = tuple(streams)
        self._on_depth = on_depth

    async def refresh(self) -> None:
        failure: BaseException | None = None
        for stream in self._streams:
            lookups: list[tuple[str, Callable[[Stream], Awaitable[int]]]] = [
                (stream.value, self._queue.depth),
                (f"{stream.value}.dlq", self._queue.dead_letter_depth),
            ]
            for label, lookup in lookups:
                try:
                    depth = await lookup(stream)
                    self._gauge.labels(label).set(depth)
                    if self._on_depth is not None:
                        self._on_depth(label, depth)
                except Exception as exc:  # one queue's failure must not hide the others
                    failure = exc
                    self._remove(label)
        if failure is not None:
            raise failure

    def _remove(self, label: str) -> None:
        with contextlib.suppress(KeyError):
            self._gauge.remove(label)
