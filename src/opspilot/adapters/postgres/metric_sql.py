"""The metric reads' SQL over both tiers (ADR 0017): hot rows in `metrics`, and the compacted
hours in `metric_blocks` (values) and `metric_summaries` (count, sum, min, max, sketch).

For each selector `q` (a row of parameters, see metrics.py) one LATERAL subquery unions:
- the hot rows in the window;
- the points of the blocks that overlap the window but that a summary cannot answer for
  (a block partly outside the window, or spanning two buckets), decoded in SQL;
- the summaries of the blocks that lie wholly inside the window and inside one bucket
  (count/sum/min/max/avg never decode them), and of the periods whose values have expired
  (a summary then counts in the bucket of its period's start).
Percentiles read every value and stay exact: hot rows, the decoded points of partly covered
blocks, and the values alone of whole blocks (`block_values`: offsets and float8 arrays are
a plain projection, no window); only a bucket holding an expired period answers from the
merged sketch (every value of the bucket added to it).
Nothing here is user text: aggregations come from the enum, everything else is bound.
"""

from __future__ import annotations

from opspilot.domain.metrics import COMPACTION_PERIOD, Aggregation

EPOCH = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"
PERIOD = f"INTERVAL '{int(COMPACTION_PERIOD.total_seconds())} seconds'"
US = "INTERVAL '1 microsecond'"
HOT_TS = 'm."timestamp"'

HOT_WHERE = """
    WHERE m.project_id = q.project_id AND m.metric_name = q.name
      AND m."timestamp" >= q.start_ts AND m."timestamp" < q.end_ts
      AND (q.service IS NULL OR m.service_name = q.service)
      AND (q.tags IS NULL OR m.tags @> q.tags)"""
# The dictionary keeps '' for "no service" and '{}' for "no tags" (a key without NULLs).
SERIES_WHERE = """s.project_id = q.project_id AND s.metric_name = q.name
      AND (q.service IS NULL OR (s.service_name = q.service AND q.service <> ''))
      AND (q.tags IS NULL OR s.tags @> q.tags)"""


def decoded(k: str) -> str:
    """The (ts, v) rows of block `k`: timestamps are int4 µs deltas (or int8 offsets) from
    `first_ts`; values int2/int4 offsets (or deltas) of integers scaled by `v_div` from
    `v_first`, or float8 as they were. Integer running sums stay int8, so decoding is
    exact."""
    return f"""(SELECT {k}.first_ts + coalesce(u.o8, sum(u.d4) OVER w) * {US} AS ts,
       coalesce(u.f8, ({k}.v_first + coalesce(u.vo, sum(u.dv) OVER w))::float8 / {k}.v_div)
         AS v, u.i
  FROM unnest({k}.ts_d4, {k}.ts_o8, coalesce({k}.v_d2::int4[], {k}.v_d4),
              coalesce({k}.v_o2::int4[], {k}.v_o4), {k}.v_f8)
       WITH ORDINALITY AS u(d4, o8, dv, vo, f8, i)
  WINDOW w AS (ORDER BY u.i ROWS UNBOUNDED PRECEDING))"""


def block_values(k: str) -> str:
    """The values `v` of block `k`, in no particular order and without their timestamps:
    a plain projection (no window, no materialised function scan) for offsets and float8;
    only delta-coded blocks (written before migration 0004, or fast counters) run the
    full decoding. The same arithmetic as `decoded`, so the same doubles."""
    return f"""(SELECT unnest({k}.v_f8) AS v WHERE {k}.v_f8 IS NOT NULL
  UNION ALL
  SELECT ({k}.v_first + unnest(coalesce({k}.v_o2::int4[], {k}.v_o4)))::float8 / {k}.v_div
  WHERE {k}.v_o2 IS NOT NULL OR {k}.v_o4 IS NOT NULL
  UNION ALL
  SELECT d.v FROM {decoded(k)} d WHERE {k}.v_d2 IS NOT NULL OR {k}.v_d4 IS NOT NULL)"""


def tiers(project: str) -> str:
    """`t.values_before`: the project's raw values are gone before it (its own retention's
    mark when it has one, migration 0004; else the default's)."""
    return ("CROSS JOIN LATERAL (SELECT coalesce((SELECT p.values_before"
            f" FROM metric_project_tiers p WHERE p.project_id = {project}), g.values_before)"
            " AS values_before FROM metric_tiers g) t")


# Joined once per selector beside `q` (metrics.block_sql): every branch reads `t`.
SELECTOR_TIERS = tiers("q.project_id")


def _bucket(function: str | None, moment: str) -> str:
    return f"{function}(q.width, {moment}, {EPOCH})" if function else "NULL::timestamptz"


def _whole(function: str | None, start: str) -> str:
    """The period starting at `start` lies inside the window and inside one bucket."""
    inside = f"{start} >= q.start_ts AND {start} + {PERIOD} <= q.end_ts"
    if function is None:
        return inside
    last = f"{start} + {PERIOD} - {US}"
    return f"{inside} AND {_bucket(function, start)} = {_bucket(function, last)}"


def _overlapping(alias: str) -> str:
    return (f"{alias}.period_start > q.start_ts - {PERIOD}"
            f" AND {alias}.period_start < q.end_ts")


def _blocks(function: str | None, select: str, only_partial: bool, source: str = "") -> str:
    partial = f" AND NOT ({_whole(function, 'k.period_start')})" if only_partial else ""
    return (f"SELECT {select} FROM {source}metric_series s"
            f" JOIN metric_blocks k ON k.series_id = s.series_id"
            f" CROSS JOIN LATERAL {decoded('k')} p"
            f" WHERE {SERIES_WHERE} AND {_overlapping('k')}{partial}"
            f" AND p.ts >= q.start_ts AND p.ts < q.end_ts")


def _whole_block_values(function: str | None, select: str, source: str = "") -> str:
    """`select` over the values `p.v` of the blocks wholly inside the window and one bucket
    (the bucket is the period's): no timestamp is decoded, none is needed."""
    return (f"SELECT {select} FROM {source}metric_series s"
            f" JOIN metric_blocks k ON k.series_id = s.series_id"
            f" CROSS JOIN LATERAL {block_values('k')} p"
            f" WHERE {SERIES_WHERE} AND {_overlapping('k')}"
            f" AND {_whole(function, 'k.period_start')}")


# Per aggregation, the partial states it needs: (sum, min, max); count is always kept.
_PARTIALS = {
    Aggregation.AVG: ("sum", None, None), Aggregation.SUM: ("sum", None, None),
    Aggregation.MIN: (None, "min", None), Aggregation.MAX: (None, None, "max"),
    Aggregation.COUNT: (None, None, None),
}
_FINAL = {
    Aggregation.AVG: "x.s / x.n::float8", Aggregation.SUM: "x.s", Aggregation.MIN: "x.lo",
    Aggregation.MAX: "x.hi", Aggregation.COUNT: "x.n::float8",
}


def _partials(aggregation: Aggregation, value: str | None) -> str:
    """`count, sum, min, max` of `value`, or (None) merged from the summaries `u`; only
    the states `aggregation` needs, NULL for the others."""
    parts = ["count(*)" if value else "sum(u.n)"]
    for name, column in zip(_PARTIALS[aggregation], ("sum", "min", "max"), strict=True):
        parts.append(f"{name}({value or 'u.' + column})" if name else "NULL::float8")
    return ", ".join(parts)


def summary_inner(aggregation: Aggregation, function: str | None, blocks: bool = True) -> str:
    """Count, sum, min, max or avg of one selector, per bucket (or one row: the window).
    `blocks`: the compact tier holds the values (plain PostgreSQL), so a summary answers
    for its whole block; without (TimescaleDB: the values stay hot rows) a summary answers
    only once its values have expired."""
    group = " GROUP BY 1"
    hot = (f"SELECT {_bucket(function, HOT_TS)} AS bucket,"
           f" {_partials(aggregation, 'm.metric_value')} FROM metrics m {HOT_WHERE}{group}")
    decoded_part = _blocks(
        function, f"{_bucket(function, 'p.ts')}, {_partials(aggregation, 'p.v')}",
        only_partial=True) + group
    expired = "u.period_start < t.values_before"
    unexpired = _whole(function, "u.period_start") if blocks else "false"
    summaries = (
        f"SELECT {_bucket(function, 'u.period_start')},"
        f" {_partials(aggregation, None)}"
        f" FROM metric_series s JOIN metric_summaries u ON u.series_id = s.series_id"
        f" WHERE {SERIES_WHERE} AND {_overlapping('u')}"
        f" AND (CASE WHEN {expired} THEN u.period_start >= q.start_ts"
        f" ELSE {unexpired} END){group}")
    parts = f"{hot} UNION ALL {decoded_part} UNION ALL {summaries}"
    merged = ("SELECT y.bucket, sum(y.n)::int8 AS n, sum(y.s) AS s, min(y.lo) AS lo,"
              f" max(y.hi) AS hi FROM ({parts}) y(bucket, n, s, lo, hi)")
    if function is not None:
        merged += " GROUP BY 1"
    else:
        merged = merged.replace("SELECT y.bucket,", "SELECT NULL::timestamptz AS bucket,", 1)
    return (f"SELECT x.bucket, {_FINAL[aggregation]} AS value, coalesce(x.n, 0) AS n"
            f" FROM ({merged}) x")


def percentile_inner(aggregation: Aggregation, function: str | None) -> str:
    """A percentile of one selector per bucket: exact (`percentile_cont`) over every value,
    unless the bucket holds an expired period: then the merged sketch's estimate."""
    quantile = aggregation.quantile
    key = "CASE WHEN t.values_before > q.start_ts THEN metric_sketch_key({v}) END"
    hot = (f"SELECT {_bucket(function, HOT_TS)}, m.metric_value,"
           f" {key.format(v='m.metric_value')}, 1::int8, false"
           f" FROM metrics m {HOT_WHERE}")
    partial = _blocks(function, f"{_bucket(function, 'p.ts')}, p.v, {key.format(v='p.v')},"
                                " 1::int8, false", only_partial=True)
    whole = _whole_block_values(function, f"{_bucket(function, 'k.period_start')}, p.v,"
                                          f" {key.format(v='p.v')}, 1::int8, false")
    expired = (f"SELECT {_bucket(function, 'u.period_start')}, NULL::float8, e.key, e.c::int8,"
               f" true FROM metric_series s JOIN metric_summaries u ON u.series_id = s.series_id"
               f" CROSS JOIN LATERAL unnest(u.sketch_keys, u.sketch_counts) AS e(key, c)"
               f" WHERE {SERIES_WHERE} AND u.period_start < t.values_before"
               f" AND u.period_start >= q.start_ts AND u.period_start < q.end_ts")
    sketched = "x.key IS NOT NULL"
    value = (f"CASE WHEN bool_or(x.sketchy) THEN metric_sketch_quantile("
             f"array_agg(x.key) FILTER (WHERE {sketched}),"
             f" array_agg(x.c) FILTER (WHERE {sketched}), {quantile!r}::float8)"
             f" ELSE percentile_cont({quantile!r}::float8) WITHIN GROUP (ORDER BY x.v) END")
    bucket = "x.bucket" if function else "NULL::timestamptz"
    return (f"SELECT {bucket} AS bucket, {value} AS value, coalesce(sum(x.c), 0)::int8 AS n"
            f" FROM ({hot} UNION ALL {partial} UNION ALL {whole} UNION ALL {expired})"
            " x(bucket, v, key, c, sketchy)"
            + (" GROUP BY 1" if function else ""))


def inner_sql(aggregation: Aggregation, function: str | None, blocks: bool = True) -> str:
    """One selector's rows (bucket, value, n): per bucket with `function` (date_bin or
    time_bucket), else exactly one row for the whole window (value NULL, n 0 when empty).
    `blocks`: see summary_inner (percentiles read summaries only where values expired)."""
    if aggregation.quantile is not None:
        return percentile_inner(aggregation, function)
    return summary_inner(aggregation, function, blocks)


def histogram_values() -> str:
    """Every value of the selector in the window, from both tiers (a histogram needs them
    all; expired periods, which have only summaries, are not in it)."""
    return (f"SELECT m.metric_value AS v FROM q, metrics m {HOT_WHERE}"
            f" UNION ALL {_blocks(None, 'p.v', only_partial=True, source='q, ')}"
            f" UNION ALL {_whole_block_values(None, 'p.v', source='q, ')}")


def series_in_window(start: str, end: str) -> str:
    """The dictionary's series `s` has a compacted point in [start, end): a period wholly
    inside, an expired period starting inside (as the reads count it), or a point of a
    partly overlapping block (decoded)."""
    return f"""EXISTS (
    SELECT 1 FROM metric_summaries u {tiers('s.project_id')}
    WHERE u.series_id = s.series_id AND u.period_start > {start} - {PERIOD}
      AND u.period_start < {end}
      AND CASE WHEN u.period_start < t.values_before THEN u.period_start >= {start}
               WHEN u.period_start >= {start} AND u.period_start + {PERIOD} <= {end} THEN true
               ELSE EXISTS (SELECT 1 FROM metric_blocks k CROSS JOIN LATERAL {decoded('k')} p
                            WHERE k.series_id = u.series_id AND k.period_start = u.period_start
                              AND p.ts >= {start} AND p.ts < {end}) END)"""


# Compacted points sort before every hot row of the same timestamp (they were written
# first); within a block they keep their write order (see compaction.WRITE_BLOCKS).
BLOCK_ORDER_BASE = -(2 ** 62)


def tiered_rows(project: str, start: str, end: str) -> str:
    """Both tiers as rows shaped like `metrics` (project_id, metric_name, service_name,
    tags, id, metric_value, "timestamp"), for reads written against that table (the
    Prometheus selectors): the hot rows, and the decoded points of the project's blocks
    overlapping [start, end). Filters on the columns are pushed into both branches."""
    return f"""(SELECT project_id, metric_name, service_name, tags, id, metric_value, "timestamp"
  FROM metrics
  UNION ALL
  SELECT s.project_id, s.metric_name, nullif(s.service_name, ''),
         nullif(s.tags, '{{}}'::jsonb), {BLOCK_ORDER_BASE}::int8 + p.i, p.v, p.ts
  FROM metric_series s JOIN metric_blocks k ON k.series_id = s.series_id
  CROSS JOIN LATERAL {decoded('k')} p
  WHERE s.project_id = ({project})::text
    AND k.period_start > ({start})::timestamptz - {PERIOD}
    AND k.period_start < ({end})::timestamptz)"""
