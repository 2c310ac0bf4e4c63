"""The LogStore contract: every adapter answers these the same way for the same data.

Run on the in-memory store always, and on OpenSearch when OPSPILOT_OPENSEARCH_URL is set
(required in CI). The expectations are written out, not taken from either adapter.
"""

from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from opspilot.adapters.memory.logs import InMemoryLogStore
from opspilot.adapters.opensearch import mapping
from opspilot.adapters.opensearch.store import OpenSearchLogStore, connect_opensearch
from opspilot.domain import textsearch
from opspilot.domain.errors import NotFound, RecordsRejected, TransientStoreError
from opspilot.domain.ingest import LogBatch
from opspilot.domain.logs import (
    CountBucket,
    Cursor,
    LogFilter,
    LogLevel,
    LogQuery,
    LogRecord,
    VolumeQuery,
)
from opspilot.domain.timewindow import Bucketing, TimeRange

from .log_fixtures import *  # noqa: F403

A, B = "project-a", "project-b"
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
DAY = TimeRange(T0 - timedelta(days=1), T0 + timedelta(days=1))
US = timedelta(microseconds=1)
_batches = itertools.count()


def rec(
    log_id: str,
    at: datetime = T0,
    message: str = "request served",
    level: LogLevel = LogLevel.INFO,
    service: str | None = "api",
    project: str = A,
    **extra: Any,
) -> LogRecord:
    return LogRecord(log_id, project, at, level, message, service, **extra)


def batch(records: Sequence[LogRecord], message_id: str | None = None) -> LogBatch:
    return LogBatch(message_id or f"m{next(_batches)}", records[0].project_id, T0, list(records))


async def write(store: Any, records: Sequence[LogRecord], size: int = 1000) -> None:
    chunks = [records[i : i + size] for i in range(0, len(records), size)]
    await store.write_batches([batch(chunk) for chunk in chunks])


async def ids(store: Any, project: str = A, window: TimeRange = DAY, **filters: Any) -> list[str]:
    page = await store.search(LogQuery(LogFilter(project, window, **filters), limit=1000))
    assert page.total == len(page.records)
    return [r.id for r in page.records]


# -- writing and reading back ------------------------------------------------------------


async def test_a_record_reads_back_equal_to_what_was_written(log_store: Any) -> None:
    original = rec(
        "r1", datetime(2024, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        "Payment of 42.50 EUR declined", LogLevel.ERROR, "billing",
        trace_id="trace-1", correlation_id="corr-1",
        context={"user": {"id": 7, "roles": ["admin", None]}, "ok": False, "ratio": 0.25,
                 "empty": {}, "list": [], "dotted.key": "x", "stack_trace": "y" * 40_000},
    )
    await write(log_store, [original, rec("r2", project=B)])

    assert await log_store.get(A, "r1") == original
    assert (await log_store.get(A, "r1")).timestamp.utcoffset() == timedelta(hours=2)
    assert await log_store.get(A, "missing") is None


async def test_redelivered_batch_keeps_one_copy(log_store: Any) -> None:
    records = [rec(f"m1-{i:05d}", T0 + i * US) for i in range(5)]
    again = batch(records, "m1")

    assert await log_store.write_batches([again]) == 5
    await log_store.write_batches([again, batch([rec("other")])])
    await log_store.write_batches([again])

    page = await log_store.search(LogQuery(LogFilter(A, DAY)))
    assert page.total == 6
    assert sorted(r.id for r in page.records) == sorted([r.id for r in records] + ["other"])


async def test_empty_store_answers_empty(log_store: Any) -> None:
    page = await log_store.search(LogQuery(LogFilter(A, DAY, search="anything")))
    assert (page.records, page.total, page.next_cursor) == ([], 0, None)
    assert [r async for r in log_store.export(LogFilter(A, DAY))] == []
    await log_store.ping()


# -- ordering and paging -----------------------------------------------------------------


async def test_newest_first_with_log_id_breaking_ties(log_store: Any) -> None:
    await write(log_store, [
        rec("b", T0), rec("a", T0), rec("c", T0),
        rec("z", T0 - US), rec("y", T0 + US),  # one microsecond either side
        rec("x", T0 + timedelta(milliseconds=1)),
        rec("late", (T0 + timedelta(seconds=5)).astimezone(timezone(timedelta(hours=-7)))),
    ])

    assert await ids(log_store) == ["late", "x", "y", "c", "b", "a", "z"]


async def test_window_is_half_open_to_the_microsecond(log_store: Any) -> None:
    start, end = T0, T0 + timedelta(minutes=1)
    await write(log_store, [
        rec("before", start - US), rec("first", start), rec("last", end - US), rec("end", end),
    ])

    assert await ids(log_store, window=TimeRange(start, end)) == ["last", "first"]


async def test_offset_paging(log_store: Any) -> None:
    records = [rec(f"r{i:02d}", T0 + (i // 4) * timedelta(seconds=1)) for i in range(25)]
    await write(log_store, records)
    expected = [r.id for r in sorted(records, key=lambda r: r.sort_key, reverse=True)]

    pages = [
        await log_store.search(LogQuery(LogFilter(A, DAY), limit=10, offset=offset))
        for offset in (0, 10, 20, 30)
    ]

    assert [r.id for p in pages for r in p.records] == expected
    assert [p.total for p in pages] == [25] * 4
    assert [len(p.records) for p in pages] == [10, 10, 5, 0]


async def test_cursor_pages_through_thousands_without_gap_or_repeat(log_store: Any) -> None:
    # 2,600 records on 13 instants: 200 share each timestamp, so the id decides the order.
    records = [
        rec(f"r{(i * 7919) % 2600:05d}", T0 + (i % 13) * timedelta(milliseconds=250),
            level=LogLevel.ERROR if i % 3 == 0 else LogLevel.INFO)
        for i in range(2600)
    ]
    await write(log_store, records)
    expected = [r.id for r in sorted(records, key=lambda r: r.sort_key, reverse=True)]

    seen: list[str] = []
    cursor: Cursor | None = None
    for _ in range(100):
        page = await log_store.search(LogQuery(LogFilter(A, DAY), limit=137, cursor=cursor))
        assert page.total == 2600
        seen += [r.id for r in page.records]
        cursor = page.next_cursor
        if cursor is None:
            break
        cursor = Cursor.decode(cursor.encode())  # as a client would send it back

    assert seen == expected
    errors = await ids(log_store, levels=(LogLevel.ERROR,))
    assert errors == [r for r in expected if int(r[1:]) in _error_ids()]


def _error_ids() -> set[int]:
    return {(i * 7919) % 2600 for i in range(2600) if i % 3 == 0}


async def test_cursor_from_an_instant_between_records(log_store: Any) -> None:
    await write(log_store, [rec("a", T0), rec("b", T0 + 2 * US), rec("c", T0 + 4 * US)])

    page = await log_store.search(
        LogQuery(LogFilter(A, DAY), limit=10, cursor=Cursor(T0 + 3 * US, "zzz"))
    )
    assert [r.id for r in page.records] == ["b", "a"]
    assert page.next_cursor is None


# -- filters and text search -------------------------------------------------------------

MESSAGES = {
    "m1": "Database connection failed after 3 retries",
    "m2": "database connection established",
    "m3": "Connection reset by peer",
    "m4": "User login failed: invalid password",
    "m5": "Failed to connect to cache at 10.0.0.7",
    "m6": "GET /api/orders returned 500 in 1532 ms",
    "m7": "Retrying connection to DATABASE replica",
    "m8": "Disk almost full on worker-3",
}


@pytest.mark.parametrize(("search", "expected"), [
    ("database", {"m1", "m2", "m7"}),
    ("DATABASE Connection", {"m1", "m2", "m7"}),
    ("connection failed", {"m1"}),
    ('"connection failed"', {"m1"}),
    ('"failed connection"', set()),
    ('"database connection"', {"m1", "m2"}),
    ("conn*", {"m1", "m2", "m3", "m5", "m7"}),
    ("connect*", {"m1", "m2", "m3", "m5", "m7"}),
    ("connect", {"m5"}),
    ("database -failed", {"m2", "m7"}),
    ('connection -"database connection"', {"m3", "m7"}),
    ("-connection", {"m4", "m5", "m6", "m8"}),
    ("failed +login", {"m4"}),
    ("500", {"m6"}),
    ("worker-3", {"m8"}),
    ("orders 500", {"m6"}),
    ("failed | reset", set()),  # `|` is not an operator here: both words must match
    ("timeout", set()),
])
async def test_text_search(log_store: Any, search: str, expected: set[str]) -> None:
    await write(log_store, [
        rec(key, T0 + i * US, message) for i, (key, message) in enumerate(MESSAGES.items())
    ])

    assert set(await ids(log_store, search=search)) == expected


@pytest.mark.parametrize("search", [
    "message:database", "a AND (b OR", '"unclosed', "\\", "~2", "((", "*", "-", "??",
    "database~1", "data*base", "/.*/", "{}[]", "NOT database", "&& ||",
])
async def test_user_text_is_never_query_syntax(log_store: Any, search: str) -> None:
    await write(log_store, [rec("m1", message="database message: a b")])

    page = await log_store.search(LogQuery(LogFilter(A, DAY, search=search)))
    assert page.total == len(page.records)  # answered, whatever it matched: no error


async def test_text_with_no_word_filters_nothing(log_store: Any) -> None:
    await write(log_store, [rec("m1"), rec("m2", T0 + US)])

    assert await ids(log_store, search="!!! ...") == ["m2", "m1"]


async def test_level_service_and_trace_filters(log_store: Any) -> None:
    await write(log_store, [
        rec("e-api", T0, "boom", LogLevel.ERROR, "api", trace_id="t1"),
        rec("w-api", T0 + US, "slow", LogLevel.WARN, "api", trace_id="t1"),
        rec("e-db", T0 + 2 * US, "boom", LogLevel.ERROR, "db", trace_id="t2"),
        rec("i-none", T0 + 3 * US, "boom", LogLevel.INFO, None),
        rec("f-api", T0 + 4 * US, "dead", LogLevel.FATAL, "api"),
    ])

    assert await ids(log_store, levels=(LogLevel.ERROR,)) == ["e-db", "e-api"]
    assert await ids(log_store, levels=(LogLevel.ERROR, LogLevel.FATAL)) == [
        "f-api", "e-db", "e-api"]
    assert await ids(log_store, service="api") == ["f-api", "w-api", "e-api"]
    assert await ids(log_store, service="API") == []
    assert await ids(log_store, trace_id="t1") == ["w-api", "e-api"]
    assert await ids(log_store, trace_id="t") == []
    assert await ids(log_store, levels=(LogLevel.ERROR,), service="api", search="boom") == [
        "e-api"]


# -- context -----------------------------------------------------------------------------


async def test_context_is_the_same_service_stream_in_key_order(log_store: Any) -> None:
    stream = [rec(f"s{i}", T0 + (i // 3) * US) for i in range(9)]  # three share each instant
    noise = [
        rec("other-service", T0 + US, service="db"),
        rec("no-service", T0 + US, service=None),
        rec("s4x", T0 + US, project=B),
    ]
    await write(log_store, stream + noise)

    around = await log_store.context(A, "s4", before=2, after=3)
    assert around.anchor == stream[4]
    assert [r.id for r in around.before] == ["s2", "s3"]
    assert [r.id for r in around.after] == ["s5", "s6", "s7"]

    edge = await log_store.context(A, "s0", before=5, after=0)
    assert (list(edge.before), list(edge.after)) == ([], [])
    tail = await log_store.context(A, "s7", before=1, after=10)
    assert ([r.id for r in tail.before], [r.id for r in tail.after]) == (["s6"], ["s8"])

    # across services: every stream of the project (never another project's), same key order
    wide = await log_store.context(A, "s4", before=3, after=2, across_services=True)
    assert [r.id for r in wide.before] == ["no-service", "other-service", "s3"]
    assert [r.id for r in wide.after] == ["s5", "s6"]
    wide = await log_store.context(A, "other-service", before=2, after=2, across_services=True)
    assert [r.id for r in wide.before] == ["s2", "no-service"]
    assert [r.id for r in wide.after] == ["s3", "s4"]


async def test_context_of_a_log_without_service(log_store: Any) -> None:
    await write(log_store, [
        rec("n1", T0, service=None), rec("n2", T0 + US, service=None),
        rec("api", T0 + US, service="api"), rec("n3", T0 + 2 * US, service=None),
    ])

    around = await log_store.context(A, "n2", before=10, after=10)
    assert ([r.id for r in around.before], [r.id for r in around.after]) == (["n1"], ["n3"])


async def test_context_of_an_unknown_log_is_not_found(log_store: Any) -> None:
    await write(log_store, [rec("r1")])

    with pytest.raises(NotFound):
        await log_store.context(A, "nope", before=1, after=1)


# -- volume ------------------------------------------------------------------------------


async def test_volume_has_every_bucket_of_the_window(log_store: Any) -> None:
    start = datetime(2024, 3, 1, 10, 2, 30, tzinfo=UTC)  # not on a bucket boundary
    window = TimeRange(start, datetime(2024, 3, 1, 10, 30, tzinfo=UTC))
    five = Bucketing.parse("5m")
    at = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    await write(log_store, [
        rec("early", start - US),  # same bucket as the window's start, but outside it
        rec("e1", start, level=LogLevel.ERROR),
        rec("i1", at + timedelta(minutes=4, seconds=59, microseconds=999_999)),
        rec("i2", at + timedelta(minutes=5)),  # exactly on a boundary: the next bucket
        rec("e2", at + timedelta(minutes=17), level=LogLevel.ERROR, service="db"),
        rec("e3", at + timedelta(minutes=29, seconds=59), level=LogLevel.ERROR, trace_id="t-3"),
        rec("out", at + timedelta(minutes=30)),
        rec("b1", at + timedelta(minutes=6), project=B),
    ])

    def volume(**kw: Any) -> Any:
        return log_store.volume(VolumeQuery(A, window, five, **kw))

    starts = [at + timedelta(minutes=m) for m in range(0, 30, 5)]
    counts = [2, 1, 0, 1, 0, 1]
    assert await volume() == [CountBucket(s, c) for s, c in zip(starts, counts, strict=True)]
    assert [b.count for b in await volume(levels=(LogLevel.ERROR,))] == [1, 0, 0, 1, 0, 1]
    assert [b.count for b in await volume(service="api")] == [2, 1, 0, 0, 0, 1]
    assert [b.count for b in await volume(service="none")] == [0] * 6
    # the volume of what a search shows: the same text matching and trace filter
    assert [b.count for b in await volume(search="served -nothing")] == counts
    assert [b.count for b in await volume(search="nothing")] == [0] * 6
    assert [b.count for b in await volume(trace_id="t-9")] == [0] * 6
    assert [b.count for b in await volume(trace_id="t-3")] == [0, 0, 0, 0, 0, 1]


async def test_volume_buckets_align_to_the_unix_epoch_whatever_the_offset(
    log_store: Any,
) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    window = TimeRange(datetime(2024, 3, 1, 10, 0, tzinfo=india),
                       datetime(2024, 3, 1, 13, 0, tzinfo=india))  # 04:30–07:30 UTC
    await write(log_store, [rec("r1", datetime(2024, 3, 1, 4, 45, tzinfo=UTC)),
                            rec("r2", datetime(2024, 3, 1, 5, 15, tzinfo=UTC))])

    buckets = await log_store.volume(VolumeQuery(A, window, Bucketing.parse("1h")))
    utc_hours = [datetime(2024, 3, 1, h, tzinfo=UTC) for h in (4, 5, 6, 7)]
    assert buckets == [CountBucket(s, c) for s, c in zip(utc_hours, [1, 1, 0, 0], strict=True)]


async def test_volume_of_an_empty_window_is_all_zero(log_store: Any) -> None:
    window = TimeRange(T0, T0 + timedelta(hours=2))
    buckets = await log_store.volume(VolumeQuery(A, window, Bucketing.parse("30m")))
    assert buckets == [CountBucket(T0 + timedelta(minutes=30 * i), 0) for i in range(4)]


# -- export ------------------------------------------------------------------------------


async def test_export_yields_every_match_newest_first(log_store: Any) -> None:
    records = [
        rec(f"r{i:05d}", T0 + (i % 50) * timedelta(seconds=1),
            level=LogLevel.WARN if i % 5 == 0 else LogLevel.INFO)
        for i in range(2345)
    ]
    await write(log_store, records)
    newest_first = sorted(records, key=lambda r: r.sort_key, reverse=True)

    everything = [r async for r in log_store.export(LogFilter(A, DAY), chunk=500)]
    assert everything == newest_first
    warnings = [r.id async for r in log_store.export(
        LogFilter(A, DAY, levels=(LogLevel.WARN,)), chunk=100)]
    assert warnings == [r.id for r in newest_first if r.level is LogLevel.WARN]


async def test_export_stopped_early_can_be_closed(log_store: Any) -> None:
    await write(log_store, [rec(f"r{i}", T0 + i * US) for i in range(30)])

    stream = log_store.export(LogFilter(A, DAY), chunk=10)
    first = [await anext(stream) for _ in range(12)]
    await stream.aclose()
    assert [r.id for r in first] == [f"r{i}" for i in range(29, 17, -1)]


# -- tenancy -----------------------------------------------------------------------------


async def test_a_project_never_sees_another_projects_logs(log_store: Any) -> None:
    await write(log_store, [
        rec("a1", T0, "secret payload", LogLevel.ERROR, trace_id="t"),
        rec("a2", T0 + US, "secret payload", LogLevel.ERROR, trace_id="t"),
    ])
    await write(log_store, [rec("b1", T0 + 2 * US, "public", project=B)])
    everything = LogFilter(B, DAY)

    assert await ids(log_store, B) == ["b1"]
    assert await ids(log_store, B, search="secret", trace_id="t") == []
    assert await log_store.get(B, "a1") is None
    with pytest.raises(NotFound):
        await log_store.context(B, "a1", before=5, after=5)
    around = await log_store.context(B, "b1", before=5, after=5)
    assert (list(around.before), list(around.after)) == ([], [])
    volume = await log_store.volume(VolumeQuery(B, DAY, Bucketing.parse("1d"),
                                                (LogLevel.ERROR,)))
    assert [b.count for b in volume] == [0, 0, 0]  # Feb 29, Mar 1, Mar 2
    assert [r.id async for r in log_store.export(everything)] == ["b1"]


async def test_the_same_log_id_in_two_projects_is_two_records(log_store: Any) -> None:
    await write(log_store, [rec("same", T0, "from a")])
    await write(log_store, [rec("same", T0 + US, "from b", project=B)])

    assert (await log_store.get(A, "same")).message == "from a"
    assert (await log_store.get(B, "same")).message == "from b"
    assert await ids(log_store, A) == ["same"]


# -- OpenSearch against the reference, on real log lines ------------------------------------

LOGHUB = Path("/work/shared/data/loghub")
QUERY_NOISE = ['-', '"', "*", "+", " ", "|", "(", ")", "~", "\\", ":", "-\"", "*\"", "--"]


def _loghub_messages(per_file: int = 120) -> list[str]:
    messages: list[str] = []
    for path in sorted(LOGHUB.glob("*/*_2k.log_structured.csv")):
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            rows = [row["Content"] for row in csv.DictReader(handle) if row.get("Content")]
        messages += rows[:: max(1, len(rows) // per_file)][:per_file]
    return messages


def _queries(messages: list[str], rng: random.Random) -> list[str]:
    queries = []
    for _ in range(60):
        words = rng.choice(messages).split()
        if not words:
            continue
        word = rng.choice(words)
        at = rng.randrange(len(words))
        pair = " ".join(words[at : at + 2])
        queries += [
            word,
            f"{word[: max(1, len(word) // 2)]}*",
            f'"{pair}"',
            f"{rng.choice(rng.choice(messages).split() or ['x'])} -{word}",
            f"{pair} {rng.choice(words)}",
            "".join(rng.choice([rng.choice(words), *QUERY_NOISE])
                    for _ in range(rng.randrange(1, 7))),
        ]
    return queries


@pytest.fixture(scope="module")
def loghub_messages() -> list[str]:
    if not LOGHUB.is_dir():
        pytest.skip("LogHub samples not present")
    return _loghub_messages()


async def test_opensearch_text_search_agrees_with_the_reference_on_loghub(
    loghub_messages: list[str],
) -> None:
    url = await opensearch_url_or_skip()  # noqa: F405
    messages = loghub_messages
    records = [rec(f"r{i:05d}", T0 + i * US, message) for i, message in enumerate(messages)]
    reference = InMemoryLogStore()
    await write(reference, records)
    disagreements = []
    async with opensearch_log_store(url) as store:  # noqa: F405
        await write(store, records)
        for search in _queries(messages, random.Random(20240301)):
            query = LogQuery(LogFilter(A, DAY, search=search), limit=1000)
            expected = [r.id for r in (await reference.search(query)).records]
            found = [r.id for r in (await store.search(query)).records]
            if found != expected:
                disagreements.append((search, len(expected), len(found)))

    assert disagreements == [], f"{len(disagreements)} queries disagree, e.g. {disagreements[:5]}"


TOKENIZER_CASES = [
    "blk_-1608999687919862906 src: /10.250.19.102:54106", "db.example.com user_id don't",
    "3.14 a.1 1.a v1.2 foo:bar 12:30 1,000 x;y 1;2 ___ _foo foo_", "worker-3 e-mail C++ C#",
    "java.lang.NullPointerException at org.foo.Bar(Bar.java:42)", "Ünïcödé café ΣΑΣ",
    "日本語テキスト ひらがな 한국어 emoji😀x 👍🏽 🇫🇷 ½ ² ⅷ हिन्दी", "x" * 300,
]


async def test_the_tokenizer_agrees_with_the_standard_analyzer(
    loghub_messages: list[str],
) -> None:
    url = await opensearch_url_or_skip()  # noqa: F405
    client = await connect_opensearch(url)
    differences = []
    try:
        for text in [*loghub_messages[::3], *TOKENIZER_CASES]:
            answer = await client.indices.analyze(body={"analyzer": "standard", "text": text})
            expected = [t["token"] for t in answer["tokens"]]
            if textsearch.tokenize(text) != expected:
                differences.append((text, expected))
    finally:
        await client.close()

    assert differences == []


# -- what only the OpenSearch store has --------------------------------------------------


async def test_refused_documents_are_listed_and_the_rest_written(
    opensearch_store: OpenSearchLogStore,
) -> None:
    day = datetime(2024, 2, 1, tzinfo=UTC)
    index = mapping.index_for(opensearch_store._prefix, day)
    await opensearch_store._client.indices.create(  # a day whose mapping refuses text levels
        index=index, body={"mappings": {"properties": {"level": {"type": "long"}}}}
    )
    good = rec("good", T0)
    bad = [rec("bad-1", day), rec("bad-2", day + timedelta(hours=1))]

    with pytest.raises(RecordsRejected) as refused:
        await opensearch_store.write_batches([batch([good, *bad])])

    failures = refused.value.details["failures"]
    assert sorted(f["id"] for f in failures) == ["project-a:bad-1", "project-a:bad-2"]
    assert all(f["status"] == 400 and f["error"]["type"] for f in failures)
    assert not isinstance(refused.value, TransientStoreError)  # the worker isolates them
    assert await opensearch_store.get(A, "good") == good


async def test_an_unreachable_node_is_a_transient_error() -> None:
    client = await connect_opensearch("http://127.0.0.1:9", request_timeout=2)
    store = OpenSearchLogStore(client, prefix="unreachable-")
    try:
        with pytest.raises(TransientStoreError):
            await store.write_batches([batch([rec("r1")])])
        with pytest.raises(TransientStoreError):
            await store.search(LogQuery(LogFilter(A, DAY, search="x")))
        with pytest.raises(TransientStoreError):
            await store.ping()
    finally:
        await client.close()


async def test_retention_drops_whole_days_and_nothing_else(
    opensearch_store: OpenSearchLogStore,
) -> None:
    days = [datetime(2024, 3, d, 12, tzinfo=UTC) for d in (1, 2, 3, 4)]
    assert await opensearch_store.drop_before(days[-1] - timedelta(days=2)) == []
    await write(opensearch_store, [rec(f"d{at.day}", at) for at in days])
    foreign = f"{opensearch_store._prefix}logs-archive"
    await opensearch_store._client.indices.create(index=foreign)

    # Kept for 2 days at 4 March 06:00: 1 March ended more than 2 days ago, 2 March did not.
    dropped = await opensearch_store.drop_before(
        datetime(2024, 3, 4, 6, tzinfo=UTC) - timedelta(days=2)
    )

    assert dropped == [mapping.index_for(opensearch_store._prefix, days[0])]
    assert await ids(opensearch_store, window=TimeRange(days[0], days[-1] + US)) == [
        "d4", "d3", "d2"]
    assert await opensearch_store._client.indices.exists(index=foreign)


async def test_drop_before_removes_whole_days_before_the_cutoff_day(log_store: Any) -> None:
    """The same rule on both stores: days wholly before the cutoff's day go; the cutoff's
    own day stays, before and after the cutoff."""
    days = [datetime(2024, 2, 27, 23, tzinfo=UTC), datetime(2024, 2, 28, 1, tzinfo=UTC),
            datetime(2024, 2, 29, 0, 0, tzinfo=UTC), T0]
    await write(log_store, [rec(f"a{i}", at) for i, at in enumerate(days)])
    await write(log_store, [rec(f"b{i}", at, project=B) for i, at in enumerate(days)])

    dropped = await log_store.drop_before(datetime(2024, 2, 29, 6, tzinfo=UTC))

    assert len(dropped) == 2
    window = TimeRange(datetime(2024, 2, 20, tzinfo=UTC), T0 + US)
    assert await ids(log_store, window=window) == ["a3", "a2"]
    assert await ids(log_store, project=B, window=window) == ["b3", "b2"]
    assert await log_store.drop_before(datetime(2024, 2, 29, 6, tzinfo=UTC)) == []


@pytest.mark.parametrize("block", ["index.blocks.write", "index.blocks.read_only_allow_delete"])
async def test_a_blocked_index_is_a_transient_failure_and_writes_resume_after(
    opensearch_store: OpenSearchLogStore, block: str
) -> None:
    """An operator's write block (403) or the flood-stage disk block (429): the documents
    are good, so the worker must retry them, never dead-letter them."""
    await write(opensearch_store, [rec("before")])
    index = mapping.index_for(opensearch_store._prefix, T0)
    client = opensearch_store._client
    await client.indices.put_settings(index=index, body={block: True})
    try:
        with pytest.raises(TransientStoreError, match="cluster_block_exception"):
            await opensearch_store.write_batches([batch([rec("during")])])
    finally:
        await client.indices.put_settings(index=index, body={block: None})
    await opensearch_store.write_batches([batch([rec("during")])])
    assert await ids(opensearch_store) == ["during", "before"]


async def test_the_template_is_idempotent_and_shapes_each_daily_index(
    opensearch_store: OpenSearchLogStore,
) -> None:
    await opensearch_store.ensure_template()
    await opensearch_store.ensure_template()
    await write(opensearch_store, [rec("r1", context={"any": {"shape": [1, "x"]}})])

    index = mapping.index_for(opensearch_store._prefix, T0)
    found = await opensearch_store._client.indices.get(index=index)
    settings = found[index]["settings"]["index"]
    properties = found[index]["mappings"]["properties"]
    assert (settings["number_of_shards"], settings["number_of_replicas"]) == ("1", "0")
    assert properties["log_id"] == {"type": "keyword"}
    assert properties["context"] == {"type": "object", "enabled": False}
    assert mapping.alias_name(opensearch_store._prefix) in found[index]["aliases"]


async def test_export_clears_its_scroll_when_closed_early(
    opensearch_store: OpenSearchLogStore,
) -> None:
    await write(opensearch_store, [rec(f"r{i}", T0 + i * US) for i in range(50)])

    async def open_scrolls() -> int:
        stats = await opensearch_store._client.nodes.stats(metric="indices", index_metric="search")
        return sum(n["indices"]["search"]["scroll_current"] for n in stats["nodes"].values())

    before = await open_scrolls()
    stream: Any = opensearch_store.export(LogFilter(A, DAY), chunk=10)
    await anext(stream)
    assert await open_scrolls() == before + 1
    await stream.aclose()
    assert await open_scrolls() == before
