"""PostgresMetricStore: COPY in, bucketed aggregates out, the same answers as the in-memory
reference (epoch-aligned `date_bin` buckets, `percentile_cont`, half-open windows, empty
buckets absent, histogram bins of equal width with the maximum in the last bin)."""

from __future__ import annotations

import asyncio
import itertools
import operator
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from opspilot.adapters.postgres import compaction
from opspilot.adapters.postgres.metric_sql import (
    EPOCH,
    SELECTOR_TIERS,
    histogram_values,
    inner_sql,
    series_in_window,
    tiered_rows,
)
from opspilot.adapters.postgres.series_sql import (
    fetch_labels,
    fetch_samples,
    fetch_step_values,
)
from opspilot.domain.bucket_counts import BOUND_PATTERN, INFINITY_PATTERN
from opspilot.domain.ingest import MetricBatch, Stream
from opspilot.domain.labels import Labels, SampleSeries, SeriesSelection
from opspilot.domain.metrics import (
    COMPACTION_PERIOD,
    COUNTER_LOOKBACK,
    DELTA,
    TEMPORALITY_TAG,
    Aggregation,
    Histogram,
    HistogramBin,
    HistogramQuery,
    MetricMetadata,
    MetricQuery,
    MetricType,
    Series,
    SeriesSelector,
    equal_width_edges,
)
from opspilot.domain.ports import CompactionResult, WindowRequest, WindowValue
from opspilot.domain.step_windows import StepValues, StepWindows
from opspilot.domain.timewindow import Bucketing, TimeRange, utc_day_start

if TYPE_CHECKING:
    from opspilot.adapters.postgres.session import Database

_first = operator.itemgetter(0)
COLUMNS = ("project_id", "timestamp", "metric_name", "metric_value", "service_name", "tags")
WINDOW_CHUNK = 5_000  # windows per round trip in aggregate_windows


# A selector's parameters, in this order: ord, project_id, name, service, tags, start, end,
# width (the bucket; unused by aggregate_windows).
_TYPES = ("int", "text", "text", "text", "jsonb", "timestamptz", "timestamptz", "interval")
_NAMES = ("ord", "project_id", "name", "service", "tags", "start_ts", "end_ts", "width")


def _selectors(first: int, many: bool) -> str:
    """`q`: one row of parameters, or (many) the rows of unnest over parameter arrays."""
    params = [f"${first + i}::{t}{'[]' if many else ''}" for i, t in enumerate(_TYPES)]
    if many:
        return f"unnest({', '.join(params)}) AS q({', '.join(_NAMES)})"
    columns = ", ".join(f"{p} AS {n}" for p, n in zip(params, _NAMES, strict=True))
    return f"(SELECT {columns}) AS q"


# A counter's growth at each sample (domain.counter_increases): the difference from the
# previous sample of the same series (service and tags), or the value itself after a drop
# (a reset); the previous sample may lie up to the lookback before the window. A delta
# series (tagged `__temporality__: delta`) holds growths already: each sample is its own,
# the first one included. Samples come from both tiers (metric_sql.tiered_rows): growths
# need raw values, so periods whose values expired (summaries only) have none.
_LOOKBACK = f"interval '{int(COUNTER_LOOKBACK.total_seconds())} seconds'"
_DELTA = orjson.dumps({TEMPORALITY_TAG: DELTA}).decode()
GROWTHS_SQL = f"""
    SELECT m."timestamp" AS ts, m.tags, m.metric_value AS v,
           lag(m.metric_value) OVER w AS prev,
           coalesce(m.tags @> '{_DELTA}'::jsonb, false) AS delta
    FROM {tiered_rows("q.project_id", f"q.start_ts - {_LOOKBACK}", "q.end_ts")} m
    WHERE m.project_id = q.project_id AND m.metric_name = q.name
      AND m."timestamp" >= q.start_ts - {_LOOKBACK} AND m."timestamp" < q.end_ts
      AND (q.service IS NULL OR m.service_name = q.service)
      AND (q.tags IS NULL OR m.tags @> q.tags)
    WINDOW w AS (PARTITION BY m.service_name, m.tags ORDER BY m."timestamp", m.metric_value)"""
_GROWTH = "CASE WHEN g.delta OR g.v < g.prev THEN g.v ELSE g.v - g.prev END"
_GROWN = "(g.prev IS NOT NULL OR g.delta) AND g.ts >= q.start_ts"


def counter_value_sql(aggregation: Aggregation, bucket: str | None) -> str:
    """`increase`: the growths summed; `rate`: divided by the bucket's (window's) seconds."""
    if aggregation is Aggregation.INCREASE:
        return f"sum({_GROWTH})"
    seconds = "q.width" if bucket else "q.end_ts - q.start_ts"
    return f"sum({_GROWTH}) / extract(epoch FROM {seconds})"


# An `le` text as a bound (domain.bucket_counts.bucket_bound, same patterns); numeric, so
# that every text the pattern admits is read without overflow.
_LE = "(m.tags->>'le') COLLATE \"C\""
_BOUND = (f"CASE WHEN {_LE} ~* '{INFINITY_PATTERN}' THEN 'Infinity'::numeric"
          f" WHEN {_LE} ~ '{BOUND_PATTERN}' THEN ({_LE})::numeric END")

# The histogram's bucket samples of one selector, from the lookback before the window on:
# each with what its bound adds beyond the previous bound of its export (the series' samples
# at one time), the export's total, whether the series had an export before it, and the
# next export's time and total (domain.bucket_counts).
_EXPORT_ROWS = f"""
    SELECT m.service_name AS service, (m.tags - 'le')::text COLLATE "C" AS rest, {_LE} AS le,
           {_BOUND} AS bound,
           m."timestamp" AS ts, m.metric_value AS v,
           coalesce(m.tags @> '{_DELTA}'::jsonb, false) AS delta
    FROM {tiered_rows("q.project_id", f"q.start_ts - {_LOOKBACK}", "q.end_ts")} m
    WHERE m.project_id = q.project_id AND m.metric_name = q.name
      AND m."timestamp" >= q.start_ts - {_LOOKBACK} AND m."timestamp" < q.end_ts
      AND (q.service IS NULL OR m.service_name = q.service)
      AND (q.tags IS NULL OR m.tags @> q.tags) AND m.tags ? 'le' OFFSET 0"""
# (OFFSET 0 keeps `bound IS NOT NULL` from being pushed into the scan, where the two
# pattern matches would run a second time per row.)
_ADDED = f"""
    SELECT r.*, r.v - coalesce(lag(r.v) OVER export, 0) AS added,
           max(r.v) OVER (PARTITION BY r.service, r.rest, r.ts) AS total,
           dense_rank() OVER (PARTITION BY r.service, r.rest ORDER BY r.ts) > 1 AS grown
    FROM ({_EXPORT_ROWS}) r WHERE r.bound IS NOT NULL
    WINDOW export AS (PARTITION BY r.service, r.rest, r.ts ORDER BY r.bound, r.le)"""
_NEXT = f"""
    SELECT a.*, first_value(a.ts) OVER later AS next_ts,
           first_value(a.total) OVER later AS next_total
    FROM ({_ADDED}) a
    WINDOW later AS (PARTITION BY a.service, a.rest ORDER BY a.ts
                     RANGE BETWEEN '1 microsecond' FOLLOWING AND UNBOUNDED FOLLOWING)"""


def bucket_increases_sql(bucket: str) -> str:
    """Per (`le`, bucket of time), for one selector: the running sum over the bounds of
    the exports' additions — each export's own (delta, or the new side of a cumulative
    growth), and the previous export's subtracted at the next export's time unless the
    total fell (a reset) — for the bounds some export counts there (domain.bucket_counts)."""
    additions = ("SELECT le, bound, ts AS at, added, 1 AS counted FROM x"
                 " WHERE ts >= q.start_ts AND (delta OR grown)"
                 " UNION ALL SELECT le, bound, next_ts, -added, 0 FROM x"
                 " WHERE NOT delta AND next_ts >= q.start_ts AND next_total >= total")
    per_bound = (f"SELECT le, bound, {bucket}(q.width, at, {EPOCH}) AS at, sum(added) AS added,"
                 f" sum(counted) AS n FROM ({additions}) c GROUP BY 1, 2, 3")
    running = (f"WITH x AS ({_NEXT}) SELECT le, at, sum(added) OVER (PARTITION BY at"
               f" ORDER BY bound, le) AS value, n FROM ({per_bound}) b")
    return (f"SELECT s.le, s.at, s.value, s.n::int FROM {_selectors(1, False)}"
            f" CROSS JOIN LATERAL ({running}) s WHERE s.n > 0 ORDER BY 1, 2")


def block_sql(aggregation: Aggregation, many: bool, first: int, bucket: str | None,
              blocks: bool = True) -> str:
    """One aggregation's share of a read over both tiers (metric_sql.py): bucketed
    (`bucket` is the bucket function) or one value per selector (aggregate_windows: exactly
    one row each, even with no points). Counters' increase/rate read the growths of both
    tiers' raw points. `blocks`: see metric_sql.summary_inner (False on TimescaleDB)."""
    if aggregation.on_counters:
        value = counter_value_sql(aggregation, bucket)
        source = f"FROM ({GROWTHS_SQL}) g WHERE {_GROWN}"
        if bucket is None:
            inner = f"SELECT NULL::timestamptz AS bucket, {value} AS value, count(*) AS n {source}"
        else:
            inner = (f"SELECT {bucket}(q.width, g.ts, {EPOCH}) AS bucket, {value} AS value,"
                     f" count(*) AS n {source} GROUP BY 1")
    else:
        inner = inner_sql(aggregation, bucket, blocks)
    return (f"SELECT q.ord, b.bucket, b.value, b.n"
            f" FROM {_selectors(first, many)} {SELECTOR_TIERS} CROSS JOIN LATERAL ({inner}) b")


Selector = tuple[str, SeriesSelector, TimeRange, Aggregation, Any]  # … , bucket width


def read_statement(items: Sequence[Selector], bucket: str | None, blocks: bool = True
                   ) -> tuple[str, list[Any]]:
    """ONE statement for every selector: a block per aggregation (so each computes only its
    own aggregate), joined with UNION ALL; rows come back ordered by (selector, bucket)."""
    groups: dict[Aggregation, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item[3], []).append(index)
    parts: list[str] = []
    args: list[Any] = []
    for aggregation in sorted(groups, key=lambda a: a.value):
        indices = groups[aggregation]
        many = len(indices) > 1
        parts.append(block_sql(aggregation, many, len(args) + 1, bucket, blocks))
        rows = [_selector_row(i, items[i]) for i in indices]
        if many:
            args.extend(list(column) for column in zip(*rows, strict=True))
        else:
            args.extend(rows[0])
    order = "ORDER BY 1, 2" if bucket else "ORDER BY 1"
    return " UNION ALL ".join(parts) + f" {order}", args


def _selector_row(index: int, item: Selector) -> tuple[Any, ...]:
    project_id, series, window, _, width = item
    return (index, project_id, series.name, series.service, _tags_json(series.tags),
            window.start, window.end, width)


HISTOGRAM_SQL = f"""
WITH q AS (SELECT $1::text AS project_id, $2::text AS name, $3::text AS service,
                  $4::jsonb AS tags, $5::timestamptz AS start_ts, $6::timestamptz AS end_ts),
sel AS ({histogram_values()}),
lim AS (SELECT min(v) AS lo, max(v) AS hi, count(*) AS n FROM sel)
SELECT lim.lo, lim.hi, lim.n, b.bin, b.c
FROM lim LEFT JOIN LATERAL (
    SELECT least(width_bucket(sel.v, lim.lo,
                              CASE WHEN lim.hi > lim.lo THEN lim.hi ELSE lim.lo + 1 END,
                              $7::int), $7::int) - 1 AS bin,
           count(*) AS c
    FROM sel GROUP BY 1
) b ON lim.n > 0
ORDER BY b.bin"""


# Discovery: $1 project, $2/$3 the window, $4 the limit, $5 the metric name (optional for
# services). COLLATE "C" keeps the order byte-wise, as Python's sorted() does. Each reads
# the hot rows and the dictionary's series with a point in the window (metric_sql.py).
_IN_WINDOW = """m.project_id = $1 AND m."timestamp" >= $2 AND m."timestamp" < $3"""
_SERIES = f"""s.project_id = $1 AND {series_in_window('$2', '$3')}"""
NAMES_SQL = f"""SELECT DISTINCT x.name COLLATE "C" FROM (
  SELECT m.metric_name FROM metrics m WHERE {_IN_WINDOW}
  UNION ALL SELECT s.metric_name FROM metric_series s WHERE {_SERIES}) x(name)
ORDER BY 1 LIMIT $4"""
SERVICES_SQL = f"""SELECT DISTINCT x.name COLLATE "C" FROM (
  SELECT m.service_name FROM metrics m WHERE {_IN_WINDOW}
    AND m.service_name IS NOT NULL AND ($5::text IS NULL OR m.metric_name = $5)
  UNION ALL SELECT s.service_name FROM metric_series s WHERE {_SERIES}
    AND s.service_name <> '' AND ($5::text IS NULL OR s.metric_name = $5)) x(name)
ORDER BY 1 LIMIT $4"""
TAGS_SQL = f"""WITH pairs AS (
  SELECT DISTINCT t.key COLLATE "C" AS key, t.value COLLATE "C" AS value FROM (
    SELECT m.tags FROM metrics m
    WHERE {_IN_WINDOW} AND m.metric_name = $5 AND m.tags IS NOT NULL
    UNION ALL SELECT s.tags FROM metric_series s WHERE {_SERIES} AND s.metric_name = $5
  ) x CROSS JOIN LATERAL jsonb_each_text(x.tags) t),
keys AS (SELECT DISTINCT key FROM pairs ORDER BY key LIMIT $4),
ranked AS (SELECT p.key, p.value, row_number() OVER (PARTITION BY p.key ORDER BY p.value) AS n
           FROM pairs p JOIN keys USING (key))
SELECT key, value FROM ranked WHERE n <= $4 ORDER BY key, value"""


UPSERT_METADATA = """
INSERT INTO metric_metadata (project_id, metric_name, metric_type, help, unit)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
ON CONFLICT (project_id, metric_name) DO UPDATE
SET metric_type = EXCLUDED.metric_type, help = EXCLUDED.help, unit = EXCLUDED.unit,
    updated_at = now()"""


def metadata_columns(latest: dict[tuple[str, str], MetricMetadata]) -> list[list[str]]:
    keys = sorted(latest)
    return [[k[0] for k in keys], [k[1] for k in keys],
            *([str(getattr(latest[k], f)) for k in keys] for f in ("type", "help", "unit"))]


def _runs_by_selector(rows: list[Any]) -> Iterator[tuple[int, list[Any]]]:
    """The (ord, rows) runs of rows ordered by ord; one selector's rows as they are."""
    if rows and rows[0][0] == rows[-1][0]:
        yield rows[0][0], rows
        return
    for ord_, group in itertools.groupby(rows, key=_first):
        yield ord_, list(group)


def _deleted(table: str, status: str, boundary: datetime) -> list[str]:
    """`table<day` when a DELETE's status (`DELETE n`) says rows went."""
    return [f"{table}<{boundary.date().isoformat()}"] if status != "DELETE 0" else []


@attrs.frozen
class _Bounds:
    """Retention boundaries (start of the cutoff's UTC day; None: kept): `default` for the
    projects not in `own`."""

    default: datetime | None
    own: Mapping[str, datetime | None]

    @classmethod
    def of(cls, cutoff: datetime | None, by_project: Mapping[str, datetime | None] | None
           ) -> _Bounds:
        def day(moment: datetime | None) -> datetime | None:
            return None if moment is None else utc_day_start(moment)

        return cls(day(cutoff), {p: day(c) for p, c in (by_project or {}).items()})

    @property
    def earliest(self) -> datetime | None:
        """Before it, every project's data goes: whole partitions can be dropped."""
        every = [self.default, *self.own.values()]
        return None if any(b is None for b in every) else min(b for b in every if b)

    @property
    def latest(self) -> datetime | None:
        return max((b for b in (self.default, *self.own.values()) if b), default=None)

    def groups(self) -> Iterator[tuple[str, datetime, str, Any]]:
        """(label, boundary, SQL condition on `{project}`, its argument) per group."""
        if self.default is not None:
            yield "", self.default, "{project} <> ALL($2::text[])", list(self.own)
        for project_id, boundary in sorted(self.own.items()):
            if boundary is not None:
                yield f" {project_id}", boundary, "{project} = $2", project_id


async def _delete_by_project(conn: Any, tables: Sequence[str], bounds: _Bounds) -> list[str]:
    dropped = []
    for label, boundary, condition, arg in bounds.groups():
        who = condition.format(project="s.project_id")
        for table in tables:
            status = await conn.execute(
                f"DELETE FROM {table} x USING metric_series s WHERE x.series_id = s.series_id"
                f" AND x.period_start < $1 AND {who}", boundary, arg)
            dropped += [f"{name}{label}" for name in _deleted(table, status, boundary)]
    return dropped


async def _delete_hot_by_project(conn: Any, bounds: _Bounds) -> list[str]:
    """Hot rows between the earliest boundary (whole partitions go before it) and each
    group's own; after compaction there are few or none on plain PostgreSQL."""
    floor = bounds.earliest or datetime.min.replace(tzinfo=UTC)
    dropped = []
    for label, boundary, condition, arg in bounds.groups():
        if boundary <= floor:
            continue
        status = await conn.execute(
            f'DELETE FROM metrics WHERE "timestamp" >= $3 AND "timestamp" < $1'
            f" AND {condition.format(project='project_id')}", boundary, arg, floor)
        dropped += [f"{name}{label}" for name in _deleted("metrics", status, boundary)]
    return dropped


# Per project (migration 0004): a project with its own retention gets its own mark, first
# from the default's (its values before that are gone already), then moved by its own
# cutoff only; the default's mark moves every other project's.
_OWN_MARKS = """
INSERT INTO metric_project_tiers (project_id, values_before)
SELECT o.p, greatest(t.values_before, coalesce(o.b, '-infinity'))
FROM unnest($1::text[], $2::timestamptz[]) AS o(p, b) CROSS JOIN metric_tiers t
ON CONFLICT (project_id) DO NOTHING;
UPDATE metric_project_tiers m SET values_before = greatest(m.values_before, o.b)
FROM unnest($1::text[], $2::timestamptz[]) AS o(p, b) WHERE m.project_id = o.p"""


async def _advance_watermarks(conn: Any, bounds: _Bounds) -> None:
    if bounds.own:
        names = list(bounds.own)
        for statement in _OWN_MARKS.split(";\n"):
            await conn.execute(statement, names, [bounds.own[p] for p in names])
    if bounds.default is not None:
        await conn.execute("UPDATE metric_tiers SET values_before = greatest(values_before, $1)",
                           bounds.default)
        await conn.execute(
            "UPDATE metric_project_tiers SET values_before = greatest(values_before, $1)"
            " WHERE project_id <> ALL($2::text[])", bounds.default, list(bounds.own))


def _tags_json(tags: Any) -> str | None:
    return orjson.dumps(dict(tags)).decode() if tags else None


class PostgresMetricStore:
    """Implements MetricStore. Raises TransientStoreError when PostgreSQL cannot answer."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._reclaimed: set[str] = set()  # hot partitions already truncated after compaction

    async def write_batches(self, batches: Sequence[MetricBatch]) -> int:
        """The points of every batch not seen before (`Database.copy_once`: COPY and
        inbox row in one transaction). Returns the points written."""
        records: dict[str, list[tuple[Any, ...]]] = {}
        described: dict[str, MetricBatch] = {}
        for batch in batches:
            records.setdefault(batch.message_id, [
                (p.project_id, p.timestamp, p.name, p.value, p.service,
                 orjson.dumps(p.tags).decode() if p.tags else None)
                for p in batch.points
            ])
            if batch.metadata:
                described.setdefault(batch.message_id, batch)

        timescale = self._db.timescale

        async def write_also(conn: Any, fresh: list[str]) -> None:
            latest = {(b.project_id, m.name): m for mid in fresh
                      if (b := described.get(mid)) is not None for m in b.metadata}
            if latest:
                await conn.execute(UPSERT_METADATA, *metadata_columns(latest))
            if timescale:  # the hours whose summaries these points change (migration 0008)
                projects, periods = compaction.pending_pairs(
                    row for mid in fresh for row in records[mid])
                if projects:
                    await conn.execute(compaction.MARK_PENDING, projects, periods)

        return await self._db.copy_once("metrics", COLUMNS, Stream.METRICS, records, 1,
                                        write_also if described or timescale else None)

    async def metric_metadata(self, project_id: str) -> dict[str, MetricMetadata]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT metric_name, metric_type, help, unit FROM metric_metadata"
                " WHERE project_id = $1", project_id)
        return {r[0]: MetricMetadata(r[0], MetricType(r[1]), r[2], r[3]) for r in rows}

    async def query(self, queries: Sequence[MetricQuery]) -> list[Series]:
        if not queries:
            return []
        sql, args = read_statement(
            [(q.project_id, q.series, q.window, q.aggregation, q.bucketing.width)
             for q in queries],
            "time_bucket" if self._db.timescale else "date_bin",
            blocks=not self._db.timescale,
        )
        async with self._db.connection() as conn:
            rows = await conn.fetch(sql, *args)
        columns: list[tuple[list[Any], list[Any], list[Any]]] = [([], [], [])] * len(queries)
        for ord_, group in _runs_by_selector(rows):
            # Columns by list comprehension over the Records: ~0.1 µs a value, where one
            # object per bucket cost ~0.7 µs (a 24 h / 1 m answer is 1,440 buckets).
            columns[ord_] = ([r[1] for r in group], [r[2] for r in group], [r[3] for r in group])
        return [
            Series(q.series.name, q.series.service, q.aggregation, q.bucketing.label, *c)
            for q, c in zip(queries, columns, strict=True)
        ]

    async def histogram(self, query: HistogramQuery) -> Histogram:
        s = query.series
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                HISTOGRAM_SQL, query.project_id, s.name, s.service, _tags_json(s.tags),
                query.window.start, query.window.end, query.bins,
            )
        total = rows[0]["n"] if rows else 0
        if not total:
            return Histogram(s.name, [], 0, None, None)
        low, high = rows[0]["lo"], rows[0]["hi"]
        counts = [0] * query.bins
        for row in rows:
            counts[row["bin"]] = row["c"]
        edges = equal_width_edges(low, high, query.bins)
        bins = [HistogramBin(edges[i], edges[i + 1], counts[i]) for i in range(query.bins)]
        return Histogram(s.name, bins, total, low, high)

    async def metric_names(self, project_id: str, window: TimeRange, limit: int) -> list[str]:
        return await self._column(NAMES_SQL, project_id, window.start, window.end, limit)

    async def service_names(
        self, project_id: str, window: TimeRange, metric_name: str | None, limit: int
    ) -> list[str]:
        return await self._column(SERVICES_SQL, project_id, window.start, window.end, limit,
                                  metric_name)

    async def tag_values(
        self, project_id: str, metric_name: str, window: TimeRange, limit: int
    ) -> dict[str, list[str]]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(TAGS_SQL, project_id, window.start, window.end, limit,
                                    metric_name)
        found: dict[str, list[str]] = {}
        for key, value in rows:
            found.setdefault(key, []).append(value)
        return found

    async def _column(self, sql: str, *args: Any) -> list[str]:
        async with self._db.connection() as conn:
            return [row[0] for row in await conn.fetch(sql, *args)]

    async def bucket_increases(self, query: MetricQuery) -> dict[str, Series]:
        sql = bucket_increases_sql("time_bucket" if self._db.timescale else "date_bin")
        args = _selector_row(0, (query.project_id, query.series, query.window, query.aggregation,
                                 query.bucketing.width))
        async with self._db.connection() as conn, conn.transaction():
            # The exports are sorted by series and time for the window functions: in memory
            # (a day of a 10-series histogram spilled 13 MB to disk under the default 4 MB).
            await conn.execute("SET LOCAL work_mem = '64MB'")
            rows = await conn.fetch(sql, *args)
        found: dict[str, Series] = {}
        for group, runs in itertools.groupby(rows, key=_first):
            run = list(runs)
            found[group] = Series(query.series.name, query.series.service, Aggregation.INCREASE,
                                  query.bucketing.label, [r[1] for r in run], [r[2] for r in run],
                                  [r[3] for r in run])
        return found

    async def aggregate_windows(self, requests: Sequence[WindowRequest]) -> list[WindowValue]:
        results: list[WindowValue] = []
        async with self._db.connection() as conn:
            for start in range(0, len(requests), WINDOW_CHUNK):
                sql, args = read_statement(
                    [(r.project_id, r.series, r.window, r.aggregation, None)
                     for r in requests[start : start + WINDOW_CHUNK]],
                    None,
                    blocks=not self._db.timescale,
                )
                rows = await conn.fetch(sql, *args)
                results.extend(WindowValue(value if n else None, n) for _, _, value, n in rows)
        return results

    async def select_samples(self, selection: SeriesSelection) -> list[SampleSeries]:
        async with self._db.connection() as conn:
            return await fetch_samples(conn, selection)

    async def select_step_values(self, selection: SeriesSelection, windows: StepWindows
                                 ) -> StepValues:
        async with self._db.connection() as conn:
            return await fetch_step_values(conn, selection, windows)

    async def select_labels(self, selection: SeriesSelection) -> list[Labels]:
        async with self._db.connection() as conn:
            return await fetch_labels(conn, selection)

    async def drop_before(self, cutoff: datetime | None,
                          by_project: Mapping[str, datetime | None] | None = None) -> list[str]:
        """Both tiers: hot partitions, and the blocks and summaries of earlier days; projects
        with their own cutoff lose their rows by project (whole partitions go only before
        the earliest boundary of all)."""
        bounds = _Bounds.of(cutoff, by_project)
        async with self._db.connection() as conn, conn.transaction():
            dropped = await _delete_by_project(conn, ("metric_blocks", "metric_summaries"),
                                               bounds)
            dropped += await _delete_hot_by_project(conn, bounds)
        if bounds.earliest is not None:
            dropped = await self._db.drop_before("metrics", bounds.earliest) + dropped
        return dropped

    # -- the compacted tier (MetricCompaction) ---------------------------------------------

    async def compact(self, before: datetime, max_periods: int = 1_000) -> CompactionResult:
        limit = Bucketing(COMPACTION_PERIOD).floor(before)
        if self._db.timescale:  # TimescaleDB compresses its chunks itself: summaries only
            return await self._summarise(limit, max_periods)
        partitions = self._db.metric_partitions
        async with self._db.connection() as conn:
            await partitions.ensure_ahead(conn)  # the hours ahead, off the ingest path
            pending = await compaction.closed_periods(conn, limit)
            latest_mark = await conn.fetchval(compaction.LATEST_MARK)
            own = compaction.own_partitions(await partitions.existing(conn))
        if latest_mark is not None and latest_mark.tzinfo is None:
            latest_mark = None  # '-infinity' (asyncpg's naive datetime.min): nothing expired
        runs = iter(compaction.batches(pending[:max_periods], compaction.WORKERS))
        totals = [0, 0, 0]  # periods taken, compacted, points moved

        async def worker() -> None:
            async with self._db.connection() as conn:
                for run in runs:  # shared: each run goes to the first worker free
                    for i, n in enumerate(await compaction.compact_periods(
                            conn, run, self._lock_key, latest_mark, own)):
                        totals[i] += n

        # Every worker ends (commits or rolls back) before a failure is raised.
        failed = [r for r in await asyncio.gather(
            *(worker() for _ in range(compaction.WORKERS)), return_exceptions=True)
            if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        async with self._db.connection() as conn:
            await compaction.reclaim_closed_days(conn, partitions, limit, self._reclaimed)
            await partitions.drop_emptied(conn, limit)
        # Counted, not re-read: a second scan would walk the dead tuples just left.
        return CompactionResult(totals[1], totals[2], len(pending) - totals[0])

    async def _summarise(self, limit: datetime, max_periods: int) -> CompactionResult:
        """TimescaleDB: the summaries of the closed periods ingest marked, one run of
        consecutive periods per transaction; the hot rows stay."""
        totals = [0, 0, 0]  # periods taken, summarised, points read
        async with self._db.connection() as conn:
            pending = await compaction.pending_periods(conn, limit)
            for run in compaction.summary_runs(pending[:max_periods]):
                for i, n in enumerate(await compaction.summarise_periods(
                        conn, run, self._lock_key)):
                    totals[i] += n
        return CompactionResult(totals[1], totals[2], len(pending) - totals[0])

    def _lock_key(self, period: datetime) -> str:
        return f"opspilot:compact:{self._db.schema or ''}:{period.isoformat()}"

    async def expire_values_before(self, cutoff: datetime | None,
                                   by_project: Mapping[str, datetime | None] | None = None
                                   ) -> list[str]:
        bounds = _Bounds.of(cutoff, by_project)
        if bounds.latest is None:
            return []
        await self.compact(bounds.latest, max_periods=1_000_000)  # their summaries must exist
        async with self._db.connection() as conn, conn.transaction():
            # points that came after their hour's values expired join its summary now
            await compaction.merge_expired_hot(
                conn, [(boundary, condition, arg) for _, boundary, condition, arg
                       in bounds.groups()])
            await _advance_watermarks(conn, bounds)
            dropped = await _delete_by_project(conn, ("metric_blocks",), bounds)
            dropped += await _delete_hot_by_project(conn, bounds)
        if bounds.earliest is not None:
            dropped = await self._db.drop_before("metrics", bounds.earliest) + dropped
        return dropped

    async def ping(self) -> None:
        await self._db.ping()
