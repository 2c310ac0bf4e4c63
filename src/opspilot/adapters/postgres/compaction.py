"""Compaction of closed hours of hot metric rows into per-series blocks (ADR 0017).

A run of consecutive periods (epoch-aligned hours; up to BATCH_POINTS hot points) is
compacted in ONE transaction, each period under a transaction advisory lock of its own
(`pg_try_advisory_xact_lock`; a period another compactor holds is skipped and left for the
next run). A period with a partition of its own (`metrics` is partitioned by hour) is read
in place under a SHARE lock on that partition (a late writer waits; readers do not) and
the partition is TRUNCATEd at the end: no row is deleted one by one (a DELETE writes WAL for
every row and leaves dead tuples and index entries for VACUUM: about what the insert cost).
Other periods' rows (the default partition, daily partitions of older versions) are deleted
(RETURNING them). Then new series enter the dictionary, the existing blocks of the touched
(series, period) pairs are decoded back (late points are merged, never written twice), and
each pair gets a fresh block and summary. A crash before commit leaves the periods hot and
whole; after commit they are compacted whole. Readers see one or the other (one snapshot
per statement; a reader locks the partitions before its snapshot is taken, so TRUNCATE
waits for it). Encoding runs in SQL: no point travels to Python. Batching periods matters
for sparse data: a period's fixed cost (ten statements) would otherwise dominate an hour of
a few series.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncpg.exceptions import LockNotAvailableError, UndefinedTableError

from opspilot.adapters.postgres.metric_sql import BLOCK_ORDER_BASE, EPOCH, PERIOD, decoded, tiers
from opspilot.domain.metrics import COMPACTION_PERIOD

INT4_MAX, INT2_MAX = 2_147_483_647, 32_767
MAX_EXACT = 2.0 ** 53  # |scaled integer| below which int8 → float8 is exact
DAY = timedelta(days=1)
SCALES = range(10)  # decimal digits tried: v == round(v·10^s) / 10^s must hold for all points

# Batches compacted at once, each on a pool connection of its own (different periods, so
# they never touch the same rows; new series are inserted in key order, so they cannot
# deadlock): on a server with cores to spare, compaction keeps ahead of several ingesting
# workers.
WORKERS = 2
BATCH_POINTS = 200_000  # hot points per transaction, at most (one period may exceed it)
BATCH_PERIODS = 48

CLOSED_PERIODS = f"""
SELECT date_bin({PERIOD}, "timestamp", {EPOCH}) AS period, count(*) AS n FROM metrics
WHERE "timestamp" < $1 GROUP BY 1 ORDER BY 1"""

# Per session (pool connection), emptied at each commit: no catalogue churn per period.
# Tags travel as jsonb's canonical text: hashing text for the distinct keys and the join
# back costs a fraction of hashing jsonb (measured: the two steps 2-3x faster).
SCRATCH = """
CREATE TEMP TABLE IF NOT EXISTS _compact_hot (project_id text, metric_name text,
    service_name text, tags text, ts timestamptz, v float8, id bigint) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _compact_keys (project_id text, metric_name text,
    service_name text, tags text, period timestamptz, series_id bigint) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _compact_rows (series_id bigint, period timestamptz,
    ts timestamptz, v float8, id bigint) ON COMMIT DELETE ROWS"""

# The indexes (0-based) of the periods whose lock this transaction got, in one round trip.
TRY_LOCKS = """
SELECT coalesce(array_agg(k.i - 1 ORDER BY k.i), '{}') FROM unnest($1::text[]) WITH ORDINALITY
AS k(key, i) WHERE pg_try_advisory_xact_lock(hashtextextended(k.key, 0))"""

# Sorts and hashes of a batch (up to BATCH_POINTS points) stay in memory.
WORK_MEM = "SET LOCAL work_mem = '64MB'"

# $1/$2 bound the periods taken (consecutive: then no per-row test), $3 lists them when a
# concurrent compactor holds some in between (NULL otherwise).
TAKE_HOT = f"""
WITH moved AS (
    DELETE FROM metrics WHERE "timestamp" >= $1 AND "timestamp" < $2
      AND ($3::timestamptz[] IS NULL
           OR date_bin({PERIOD}, "timestamp", {EPOCH}) = ANY($3::timestamptz[]))
    RETURNING project_id, metric_name, coalesce(service_name, ''),
              coalesce(tags, '{{}}'::jsonb)::text, "timestamp", metric_value, id)
INSERT INTO _compact_hot SELECT * FROM moved"""

# The same, leaving the rows of hours whose values have expired for their project (a late
# point of a project keeping less than the server): they stay raw values beside the hour's
# summary until values expire again, then join it (merge_expired_hot). Used only when a
# run starts before some project's mark: otherwise no row can be one of them.
_LIVE = """ AND "timestamp" >= coalesce((SELECT p.values_before FROM metric_project_tiers p
        WHERE p.project_id = metrics.project_id), (SELECT g.values_before FROM metric_tiers g))"""
TAKE_LIVE_HOT = TAKE_HOT.replace('"timestamp" < $2', '"timestamp" < $2' + _LIVE, 1)
assert TAKE_LIVE_HOT != TAKE_HOT

# The latest "values expired before" mark of any project (the default's included).
LATEST_MARK = """SELECT greatest((SELECT values_before FROM metric_tiers),
                         (SELECT max(values_before) FROM metric_project_tiers))"""

# The run's hot rows (`_compact_source` in the statements below): the hourly partitions
# of its periods, read in place under a SHARE lock (no writer can change them until the
# transaction ends; they are TRUNCATEd at its end), and whatever TAKE_HOT deleted from
# elsewhere (the default partition, an older daily one) into _compact_hot.
SOURCE = "_compact_source"
IN_PLACE = (
    "SELECT project_id, metric_name, coalesce(service_name, '') AS service_name,"
    " coalesce(tags, '{{}}'::jsonb)::text AS tags, \"timestamp\" AS ts, metric_value AS v, id,"
    " '{period}'::timestamptz AS period FROM \"{name}\"")
TAKEN = f"SELECT *, date_bin({PERIOD}, ts, {EPOCH}) AS period FROM _compact_hot"

# One row per series key and period: the (series, period) pairs the run touches, which
# REOPEN_BLOCKS and DROP_SUMMARIES read instead of grouping every row again.
DISTINCT_KEYS = f"""
INSERT INTO _compact_keys (project_id, metric_name, service_name, tags, period)
SELECT DISTINCT project_id, metric_name, service_name, tags, period FROM {SOURCE} h"""

# In key order: two compactors inserting the same new series wait for each other in the
# same order, never in a cycle (no deadlock between concurrent batches or replicas).
NEW_SERIES = """
INSERT INTO metric_series (project_id, metric_name, service_name, tags)
SELECT project_id, metric_name, service_name, tags::jsonb
FROM (SELECT DISTINCT project_id, metric_name, service_name, tags FROM _compact_keys) k
ORDER BY project_id, metric_name, service_name, md5(tags)
ON CONFLICT (project_id, metric_name, service_name, md5(tags::text)) DO NOTHING"""

# A statement of its own after NEW_SERIES: its snapshot sees the series that a concurrent
# compactor committed meanwhile (ON CONFLICT DO NOTHING skipped them), so no row is dropped.
SERIES_IDS = """
UPDATE _compact_keys k SET series_id = s.series_id FROM metric_series s
WHERE s.project_id = k.project_id AND s.metric_name = k.metric_name
  AND s.service_name = k.service_name AND md5(s.tags::text) = md5(k.tags)"""

# The keys' statistics: without them the planner guesses hundreds of keys and joins the hot
# rows by a merge join, sorting them on four text columns (collation-aware): 2x the
# statement's time, measured.
ANALYZE_KEYS = "ANALYZE _compact_keys"

KEYED = f"""
INSERT INTO _compact_rows
SELECT k.series_id, h.period, h.ts, h.v, h.id
FROM {SOURCE} h JOIN _compact_keys k ON k.period = h.period AND k.project_id = h.project_id
 AND k.metric_name = h.metric_name AND k.service_name = h.service_name AND k.tags = h.tags"""

REOPEN_BLOCKS = f"""
WITH touched AS (SELECT DISTINCT series_id, period FROM _compact_keys),
old AS (DELETE FROM metric_blocks b USING touched
        WHERE b.period_start = touched.period AND b.series_id = touched.series_id
        RETURNING b.*)
INSERT INTO _compact_rows
SELECT old.series_id, old.period_start, p.ts, p.v, {BLOCK_ORDER_BASE}::int8 + p.i FROM old
CROSS JOIN LATERAL {decoded('old')} p"""

DROP_SUMMARIES = """
DELETE FROM metric_summaries u USING (SELECT DISTINCT series_id, period FROM _compact_keys) t
WHERE u.period_start = t.period AND u.series_id = t.series_id"""

_SCALE_CASE = " ".join(
    f"WHEN round(v * 1e{s}::float8) / 1e{s}::float8 = v THEN {s}" for s in SCALES)
_DIVISORS = "ARRAY[" + ", ".join(f"1e{s}" for s in SCALES) + "]::float8[]"

# µs between two timestamps: date_part's float8 seconds are exact to well under a µs for any
# interval below 285 years, so rounding recovers the integer (extract() would be numeric).
def _micros(interval: str) -> str:
    return f"round(date_part('epoch', {interval}) * 1e6)::int8"


def _width(magnitude: str) -> str:
    """Bytes of the narrowest integer array holding values up to `magnitude` (8: none)."""
    return (f"CASE WHEN min(div) IS NULL THEN 8 WHEN coalesce({magnitude}, 0) <= {INT2_MAX}"
            f" THEN 2 WHEN {magnitude} <= {INT4_MAX} THEN 4 ELSE 8 END")


# One sort and one window pass per batch, three cheap window functions. A first grouping
# pass over the rows fixes each block's scale and value range, so the offsets are known
# before the window: from the middle of the range (`base`: a span of 65,535 fits int2,
# 2^32 - 1 int4), computed per row without a running value. Only the timestamps' deltas
# and the values' deltas (for a block whose offsets need int4 or more: a fast counter)
# need `lag`. The arrays are aggregated in the window's output order, which is (series,
# period, ts, id): an `ORDER BY i` in each array_agg would sort every group again per
# array (PostgreSQL 15 does not reuse presorted input there). `seq` proves the order held:
# were it ever broken, the statement fails (nothing is written, the period stays hot)
# rather than store a scrambled block. Arrays a block cannot use are not built (FILTER).
WRITE_BLOCKS = f"""
WITH stats AS (
    SELECT series_id, period, max(CASE {_SCALE_CASE} ELSE 99 END) AS scale,
           min(v) AS lo, max(v) AS hi
    FROM _compact_rows GROUP BY 1, 2),
scaled AS (
    SELECT series_id, period, lo, hi,
           CASE WHEN scale < 99 AND greatest(-lo, hi) * ({_DIVISORS})[scale + 1] < {MAX_EXACT!r}
                THEN ({_DIVISORS})[scale + 1] END AS div
    FROM stats),
frames AS MATERIALIZED (
    SELECT series_id, period, div, width_o,
           round(lo * div)::int8 + CASE width_o WHEN 2 THEN {INT2_MAX + 1}
                                                WHEN 4 THEN {INT4_MAX + 1} ELSE 0 END AS base
    FROM (SELECT *, CASE WHEN div IS NULL THEN 8
                         WHEN round(hi * div) - round(lo * div) <= {2 * INT2_MAX + 1} THEN 2
                         WHEN round(hi * div) - round(lo * div) <= {2 * INT4_MAX + 1} THEN 4
                         ELSE 8 END AS width_o
          FROM scaled) s),
steps AS (
    SELECT x.series_id, x.period, x.ts, x.v, x.div, x.width_o, x.base, x.ov,
           row_number() OVER w AS i,
           {_micros("x.ts - lag(x.ts) OVER w")} AS dt,
           x.ov - lag(x.ov) OVER w AS dv
    FROM (SELECT r.*, f.div, f.width_o, f.base, round(r.v * f.div)::int8 - f.base AS ov
          FROM _compact_rows r JOIN frames f USING (series_id, period) OFFSET 0) x
    WINDOW w AS (PARTITION BY x.series_id, x.period ORDER BY x.ts, x.id)),
grouped AS (
    SELECT series_id, period, min(ts) AS first_ts, min(div) AS div, min(base) AS base,
           min(width_o) AS width_o, coalesce(max(dt), 0) AS max_dt,
           {_width("max(abs(dv))")} AS width_d,
           array_agg(coalesce(dt, 0)) AS dts,
           array_agg(ov) FILTER (WHERE div IS NOT NULL) AS ovs,
           array_agg(coalesce(dv, 0)) FILTER (WHERE width_o > 2 AND div IS NOT NULL) AS dvs,
           array_agg(v) FILTER (WHERE width_o = 8) AS vs,
           array_agg(i) AS seq, count(*) AS n
    FROM steps GROUP BY series_id, period),
chosen AS (
    SELECT *, width_o <= width_d AS by_offset, least(width_o, width_d) AS width FROM grouped)
INSERT INTO metric_blocks (series_id, period_start, first_ts, ts_d4, ts_o8, v_first, v_div,
                           v_d2, v_d4, v_o2, v_o4, v_f8)
SELECT series_id, period,
       CASE WHEN seq = ARRAY(SELECT generate_series(1::int8, n)) THEN first_ts
            ELSE ('compaction: points of series ' || series_id || ' out of order')::timestamptz
       END,
       CASE WHEN max_dt <= {INT4_MAX} THEN dts::int4[] END,
       CASE WHEN max_dt > {INT4_MAX} THEN ARRAY(
           SELECT (sum(d) OVER (ORDER BY k))::int8 FROM unnest(dts) WITH ORDINALITY u(d, k)
           ORDER BY k) END,
       CASE WHEN width < 8 AND by_offset THEN base WHEN width < 8 THEN base + ovs[1] END,
       CASE WHEN width < 8 THEN div END,
       CASE WHEN NOT by_offset AND width = 2 THEN dvs::int2[] END,
       CASE WHEN NOT by_offset AND width = 4 THEN dvs::int4[] END,
       CASE WHEN by_offset AND width = 2 THEN ovs::int2[] END,
       CASE WHEN by_offset AND width = 4 THEN ovs::int4[] END,
       CASE WHEN width = 8 THEN vs END
FROM chosen"""

WRITE_SUMMARIES = """
INSERT INTO metric_summaries (series_id, period_start, n, sum, min, max, sketch_keys,
                              sketch_counts)
SELECT series_id, period, sum(c), sum(s), min(lo), max(hi), array_agg(key ORDER BY key),
       array_agg(c ORDER BY key)
FROM (SELECT series_id, period, metric_sketch_key(v) AS key, count(*)::int AS c,
             sum(v) AS s, min(v) AS lo, max(v) AS hi
      FROM _compact_rows GROUP BY 1, 2, 3) g
GROUP BY series_id, period"""


# After TAKE_HOT, in this order (each its own statement: see SERIES_IDS).
PIPELINE = (DISTINCT_KEYS, NEW_SERIES, SERIES_IDS, ANALYZE_KEYS, KEYED, REOPEN_BLOCKS,
            DROP_SUMMARIES, WRITE_BLOCKS, WRITE_SUMMARIES)
_KEYED = PIPELINE.index(KEYED)

# A late writer into a closed hour waits at most this long for the hour's SHARE lock (and
# the compactor as long for it: longer than deadlock_timeout, so a plain autovacuum of the
# partition gives way); a busy partition is then compacted by DELETE instead.
SHARE_WAIT = "2s"
# TRUNCATE needs the partition to itself: readers wait meanwhile, so not for long; after
# this the rows (unchanged: the SHARE lock is held) are deleted instead.
TRUNCATE_WAIT = "200ms"


async def closed_periods(conn: Any, before: datetime) -> list[tuple[datetime, int]]:
    """The periods ending at or before `before` that still hold hot rows, oldest first,
    with their hot points."""
    rows = await conn.fetch(CLOSED_PERIODS, before)
    return [(r["period"], r["n"]) for r in rows]


def batches(periods: list[tuple[datetime, int]], workers: int = 1) -> list[list[datetime]]:
    """Consecutive runs of periods of at most BATCH_POINTS points (one transaction each),
    and of at most a `workers`th of all, so that every worker gets a run when there are
    periods enough."""
    runs: list[list[datetime]] = []
    points = 0
    most = min(BATCH_POINTS, -(-sum(n for _, n in periods) // max(workers, 1)))
    for period, count in periods:
        if (runs and points + count <= most and len(runs[-1]) < BATCH_PERIODS
                and runs[-1][-1] + COMPACTION_PERIOD == period):
            runs[-1].append(period)
            points += count
        else:
            runs.append([period])
            points = count
    return runs


async def compact_periods(conn: Any, periods: list[datetime],
                          lock_key: Callable[[datetime], str],
                          latest_mark: datetime | None = None,
                          own: Mapping[datetime, str] | None = None) -> tuple[int, int, int]:
    """Compact a run of periods in one transaction: (periods taken, periods compacted, hot
    points moved). Periods another compactor holds are left out (not taken). Before
    `latest_mark` (LATEST_MARK) some project's values may have expired: their rows stay.
    `own` names the periods' own (hourly) partitions: those are read in place and
    TRUNCATEd (only periods from `latest_mark` on: no row of theirs may stay); the rows of
    the others are DELETEd (RETURNING them)."""
    async with conn.transaction():
        got = await conn.fetchval(TRY_LOCKS, [lock_key(p) for p in periods])
        taken = [periods[i] for i in got]
        if not taken:
            return 0, 0, 0
        await conn.execute(SCRATCH)
        await conn.execute(WORK_MEM)
        mine = {p: name for p, name in (own or {}).items()
                if latest_mark is None or p >= latest_mark}
        in_place = await _share_locked(conn, sorted({mine[p] for p in taken if p in mine}))
        elsewhere = [p for p in taken if mine.get(p) not in in_place]
        periods_of = {name: period for period, name in mine.items()}
        sources = [IN_PLACE.format(name=name, period=periods_of[name].isoformat())
                   for name in in_place]
        if elsewhere:
            consecutive = elsewhere[-1] - elsewhere[0] == COMPACTION_PERIOD * (len(elsewhere) - 1)
            take = (TAKE_LIVE_HOT if latest_mark is not None and elsewhere[0] < latest_mark
                    else TAKE_HOT)
            await conn.execute(take, elsewhere[0], elsewhere[-1] + COMPACTION_PERIOD,
                               None if consecutive else elsewhere)
            sources.append(TAKEN)
        source = "(" + " UNION ALL ".join(sources) + ")"
        statuses = [await conn.execute(statement.replace(SOURCE, source))
                    for statement in PIPELINE]
        moved = int(statuses[_KEYED].rsplit(" ", 1)[1]) if len(statuses) > _KEYED else 0
        if in_place:
            await _truncate(conn, in_place)
        periods_done = await conn.fetchval("SELECT count(DISTINCT period) FROM _compact_keys")
        return len(taken), int(periods_done), moved


async def _share_locked(conn: Any, names: list[str]) -> list[str]:
    """`names`, once SHARE-locked (all or none: a busy or vanished partition leaves the
    run to DELETE)."""
    if not names:
        return []
    await conn.execute(f"SET LOCAL lock_timeout = '{SHARE_WAIT}'")
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE " + ", ".join(f'"{n}"' for n in names)
                               + " IN SHARE MODE")
    except (LockNotAvailableError, UndefinedTableError):
        return []
    return names


async def _truncate(conn: Any, names: list[str]) -> None:
    """Empty the compacted partitions: TRUNCATE (no dead tuples, nothing for VACUUM), or
    when readers hold one too long, DELETE (same rows: no writer got past the SHARE lock)."""
    await conn.execute(f"SET LOCAL lock_timeout = '{TRUNCATE_WAIT}'")
    try:
        async with conn.transaction():
            await conn.execute("TRUNCATE " + ", ".join(f'"{n}"' for n in names))
    except LockNotAvailableError:
        for name in names:
            await conn.execute(f'DELETE FROM "{name}"')


def own_partitions(existing: Mapping[str, tuple[datetime, datetime]]) -> dict[datetime, str]:
    """The periods that have a partition of their own (hourly), by start."""
    return {start: name for name, (start, end) in existing.items()
            if end - start == COMPACTION_PERIOD}


async def reclaim_closed_days(conn: Any, partitions: Any, limit: datetime,
                              done: set[str]) -> list[str]:
    """TRUNCATE the daily partitions of `metrics` (made before hourly ones) whose hours are all closed and that
    compaction has emptied: deleted rows would otherwise keep their pages (and their index
    pages) until values retention drops the partition. Each partition is locked before it
    is checked (a late point waits, then lands in the emptied partition); a short lock
    timeout leaves a busy one to the next run. One transaction for all of them (a savepoint
    each): one commit, not one per day, when a backlog of days is reclaimed at once."""
    due = [name for name, (start, end) in sorted((await partitions.existing(conn)).items())
           if name not in done and end - start == DAY and end <= limit]
    if not due:
        return []
    emptied: list[str] = []
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '500ms'")
        for name in due:
            try:
                async with conn.transaction():
                    await conn.execute(f'LOCK TABLE "{name}" IN ACCESS EXCLUSIVE MODE')
            except LockNotAvailableError:
                continue
            if not await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{name}")'):
                emptied.append(name)
        if emptied:
            await conn.execute("TRUNCATE " + ", ".join(f'"{name}"' for name in emptied))
    done.update(emptied)
    return emptied



# -- TimescaleDB: summaries only (ADR 0017) ----------------------------------------------
# The raw points stay in the hypertable (TimescaleDB compresses its chunks itself); the
# job writes the hourly summaries of the (project, hour) pairs ingest marked in
# `metric_pending_summaries` (migration 0008), rewritten whole from the hot rows each time
# (late points included), so that they can outlive the values. Reads use a summary only
# where the values have expired (metric_sql: `blocks=False`).

# Ingest, in the batch's own transaction: the pairs its points fall in.
MARK_PENDING = """
INSERT INTO metric_pending_summaries (project_id, period_start)
SELECT * FROM unnest($1::text[], $2::timestamptz[]) ORDER BY 2, 1
ON CONFLICT DO NOTHING"""

PENDING_PERIODS = """
SELECT period_start, count(*) AS n FROM metric_pending_summaries
WHERE period_start <= $1 GROUP BY 1 ORDER BY 1"""

SUMMARY_SCRATCH = SCRATCH + """;
CREATE TEMP TABLE IF NOT EXISTS _summarise (project_id text, period timestamptz)
    ON COMMIT DELETE ROWS"""

# Taken before the hot rows are read: a point committed after this statement's snapshot
# marks its pair again (its insert waits for this delete, then finds no row), so the next
# run summarises it; one committed before is seen by COPY_PENDING_HOT (a later snapshot).
# A pair whose values expired (a late point of a project keeping less than the server) is
# left out: its rows stay raw values beside the summary until merge_expired_hot.
TAKE_PENDING = f"""
WITH taken AS (DELETE FROM metric_pending_summaries WHERE period_start = ANY($1::timestamptz[])
               RETURNING project_id, period_start)
INSERT INTO _summarise SELECT k.project_id, k.period_start FROM taken k {tiers('k.project_id')}
WHERE k.period_start >= t.values_before"""

COPY_PENDING_HOT = f"""
INSERT INTO _compact_hot
SELECT m.project_id, m.metric_name, coalesce(m.service_name, ''),
       coalesce(m.tags, '{{}}'::jsonb)::text, m."timestamp", m.metric_value, m.id
FROM _summarise p JOIN metrics m ON m.project_id = p.project_id
 AND m."timestamp" >= p.period AND m."timestamp" < p.period + {PERIOD}
WHERE m."timestamp" >= $1 AND m."timestamp" < $2"""

# A (series, hour) with hot rows gets its summary rewritten whole from them (DROP_SUMMARIES
# then WRITE_SUMMARIES); one without (its values expired) keeps the summary it has.
SUMMARY_PIPELINE = (DISTINCT_KEYS, NEW_SERIES, SERIES_IDS, KEYED, DROP_SUMMARIES,
                    WRITE_SUMMARIES)


SUMMARY_RUN = 6  # consecutive periods summarised in one transaction, at most


def summary_runs(periods: list[tuple[datetime, int]]) -> list[list[datetime]]:
    """Runs of consecutive periods (a pair count says nothing of their points: the runs
    stay short)."""
    runs: list[list[datetime]] = []
    for period, _ in periods:
        if (runs and len(runs[-1]) < SUMMARY_RUN
                and runs[-1][-1] + COMPACTION_PERIOD == period):
            runs[-1].append(period)
        else:
            runs.append([period])
    return runs


def pending_pairs(points: Any) -> tuple[list[str], list[datetime]]:
    """The distinct (project, period) pairs of (project_id, timestamp, ...) rows, as the
    two columns MARK_PENDING takes."""
    seconds = int(COMPACTION_PERIOD.total_seconds())
    pairs = sorted({(row[0], int(row[1].timestamp() // seconds) * seconds) for row in points})
    return ([p for p, _ in pairs],
            [datetime.fromtimestamp(start, UTC) for _, start in pairs])


async def pending_periods(conn: Any, before: datetime) -> list[tuple[datetime, int]]:
    """The closed periods (ending at or before `before`) with pairs to summarise, oldest
    first, with their pairs."""
    return [(r["period_start"], r["n"])
            for r in await conn.fetch(PENDING_PERIODS, before - COMPACTION_PERIOD)]


async def summarise_periods(conn: Any, periods: list[datetime],
                            lock_key: Callable[[datetime], str]) -> tuple[int, int, int]:
    """Rewrite the summaries of the pending pairs of `periods` in one transaction:
    (periods taken, periods summarised, hot points read). Periods another compactor holds
    are left out."""
    async with conn.transaction():
        got = await conn.fetchval(TRY_LOCKS, [lock_key(p) for p in periods])
        taken = [periods[i] for i in got]
        if not taken:
            return 0, 0, 0
        await conn.execute(SUMMARY_SCRATCH)
        await conn.execute(WORK_MEM)
        await conn.execute(TAKE_PENDING, taken)
        # Constant bounds as well as the join's: the hypertable's chunks outside are
        # excluded when the statement is planned.
        status = await conn.execute(COPY_PENDING_HOT, min(taken),
                                    max(taken) + COMPACTION_PERIOD)
        read = int(status.rsplit(" ", 1)[1])
        if read == 0:
            return len(taken), 0, 0
        for statement in SUMMARY_PIPELINE:
            await conn.execute(statement.replace(SOURCE, f"({TAKEN})"))
        periods_done = await conn.fetchval("SELECT count(DISTINCT period) FROM _compact_rows")
        return len(taken), int(periods_done), read


# -- late points of expired hours, at expiry ---------------------------------------------
# The hot rows of a group (metrics.Bounds.groups: `$2` is its argument) before both its new
# boundary ($1) and their project's current mark: points that arrived after their hour's
# values expired. They are merged into the hour's summary now, as they go.
COPY_EXPIRED_HOT = f"""
INSERT INTO _compact_hot
SELECT m.project_id, m.metric_name, coalesce(m.service_name, ''),
       coalesce(m.tags, '{{{{}}}}'::jsonb)::text, m."timestamp", m.metric_value, m.id
FROM metrics m {tiers('m.project_id')}
WHERE m."timestamp" < $1 AND m."timestamp" < t.values_before AND {{condition}}"""

_MERGED_SKETCH = """(SELECT array_agg(k ORDER BY k), array_agg(c ORDER BY k) FROM (
    SELECT k, sum(c)::int FROM unnest(metric_summaries.sketch_keys || EXCLUDED.sketch_keys,
                                      metric_summaries.sketch_counts || EXCLUDED.sketch_counts)
    AS z(k, c) GROUP BY k) x(k, c))"""
MERGE_SUMMARIES = WRITE_SUMMARIES + f"""
ON CONFLICT (series_id, period_start) DO UPDATE SET
    n = metric_summaries.n + EXCLUDED.n, sum = metric_summaries.sum + EXCLUDED.sum,
    min = least(metric_summaries.min, EXCLUDED.min),
    max = greatest(metric_summaries.max, EXCLUDED.max),
    (sketch_keys, sketch_counts) = {_MERGED_SKETCH}"""

MERGE_PIPELINE = (DISTINCT_KEYS, NEW_SERIES, SERIES_IDS, KEYED, MERGE_SUMMARIES)


async def merge_expired_hot(conn: Any, groups: list[tuple[datetime, str, Any]]) -> int:
    """In the expiry's transaction, before its deletes: the late points of expired hours
    of each (boundary, condition on `{project}`, argument) group join their summaries.
    Returns the points merged. Only rows before the latest mark of all can be such points:
    that bound keeps the scan off the day being expired now (on TimescaleDB its rows are
    all still there)."""
    latest_mark = await conn.fetchval(LATEST_MARK)
    if latest_mark is None or latest_mark.tzinfo is None:  # '-infinity': nothing expired
        return 0
    await conn.execute(SCRATCH)
    merged = 0
    for boundary, condition, arg in groups:
        status = await conn.execute(
            COPY_EXPIRED_HOT.format(condition=condition.format(project="m.project_id")),
            min(boundary, latest_mark), arg)
        merged += int(status.rsplit(" ", 1)[1])
    if merged:
        for statement in MERGE_PIPELINE:
            await conn.execute(statement.replace(SOURCE, f"({TAKEN})"))
    return merged
