"""Benchmark the OpenSearch log store: bulk rate through the adapter vs raw async_bulk, and
query latency (full text + level + 1 h range; volume histogram).

    eval "$(scripts/services env)"
    .venv/bin/python bench/opensearch_logs.py --records 1000000

Messages are the LogHub samples' Content column (/work/shared/data/loghub/*/*_2k.log_
structured.csv), repeated over 24 h of timestamps, 5 projects, the datasets as services and
a realistic level mix. The same records are indexed twice, into two fresh index prefixes:
once through `OpenSearchLogStore.write_batches` (1000 per call, as the worker flushes) and
once through `opensearchpy.helpers.async_bulk` (chunk_size 1000) with the same `_index`,
`_id` and `_source`. Both paths alternate segment by segment so that the node's warm-up,
merges and noise fall on both alike. Both prefixes are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import resource
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opensearchpy import AsyncOpenSearch
from opensearchpy.helpers import async_bulk

from opspilot.adapters.opensearch import mapping
from opspilot.adapters.opensearch.store import OpenSearchLogStore, connect_opensearch
from opspilot.domain import textsearch
from opspilot.domain.ingest import LogBatch
from opspilot.domain.logs import LogFilter, LogLevel, LogQuery, LogRecord, VolumeQuery
from opspilot.domain.timewindow import Bucketing, TimeRange

LOGHUB = Path("/work/shared/data/loghub")
START = datetime(2024, 3, 1, tzinfo=UTC)
SPAN = timedelta(hours=24)
PROJECTS = [f"bench-project-{i}" for i in range(5)]
LEVELS = {"INFO": LogLevel.INFO, "WARN": LogLevel.WARN, "WARNING": LogLevel.WARN,
          "ERROR": LogLevel.ERROR, "FATAL": LogLevel.FATAL, "DEBUG": LogLevel.DEBUG,
          "SEVERE": LogLevel.ERROR, "E": LogLevel.ERROR, "W": LogLevel.WARN, "I": LogLevel.INFO}
MIX = [LogLevel.INFO] * 80 + [LogLevel.DEBUG] * 8 + [LogLevel.WARN] * 7 + \
    [LogLevel.ERROR] * 4 + [LogLevel.FATAL]


@dataclass
class Sample:
    service: str
    message: str
    level: LogLevel | None


@dataclass
class Timing:
    records: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


@dataclass
class Results:
    adapter: Timing = field(default_factory=Timing)
    raw: Timing = field(default_factory=Timing)
    search_ms: list[float] = field(default_factory=list)
    search_hits: list[int] = field(default_factory=list)
    volume_ms: list[float] = field(default_factory=list)


def load_samples() -> list[Sample]:
    samples = []
    for path in sorted(LOGHUB.glob("*/*_2k.log_structured.csv")):
        service = path.parent.name.lower()
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            for row in csv.DictReader(handle):
                if row.get("Content"):
                    level = LEVELS.get((row.get("Level") or "").strip().upper())
                    samples.append(Sample(service, row["Content"], level))
    if not samples:
        sys.exit(f"no LogHub samples under {LOGHUB}")
    return samples


def records(samples: list[Sample], first: int, count: int, total: int,
            run: str) -> Iterator[LogRecord]:
    """Record i is the same whichever path indexes it: deterministic from i."""
    step = SPAN / total
    for i in range(first, first + count):
        rng = random.Random(i)
        sample = samples[i % len(samples)]
        yield LogRecord(
            id=f"{run}-{i // 1000:07d}-{i % 1000:05d}",
            project_id=PROJECTS[i % len(PROJECTS)],
            timestamp=START + step * i + timedelta(microseconds=rng.randrange(1000)),
            level=sample.level or rng.choice(MIX),
            message=sample.message,
            service=sample.service,
            trace_id=f"trace-{rng.randrange(10**9):09d}" if i % 4 == 0 else None,
            context={"host": f"node-{i % 37}", "attempt": i % 3} if i % 2 == 0 else {},
        )


async def index_adapter(store: OpenSearchLogStore, batch: list[LogRecord]) -> None:
    chunks = [batch[i : i + 1000] for i in range(0, len(batch), 1000)]
    for n, chunk in enumerate(chunks):
        await store.write_batches([LogBatch(f"m{n}", chunk[0].project_id, START, chunk)])


async def index_raw(client: AsyncOpenSearch, prefix: str, batch: list[LogRecord]) -> None:
    actions = ({
        "_op_type": "index",
        "_index": mapping.index_for(prefix, r.timestamp),
        "_id": mapping.document_id(r),
        "_source": mapping.to_document(r),
    } for r in batch)
    await async_bulk(client, actions, chunk_size=1000, max_retries=3, raise_on_error=True)


async def index_both(
    client: AsyncOpenSearch, store: OpenSearchLogStore, raw_prefix: str,
    samples: list[Sample], total: int, segment: int, results: Results, run: str,
) -> None:
    done = 0
    while done < total:
        count = min(segment, total - done)
        batch = list(records(samples, done, count, total, run))
        order = ["adapter", "raw"] if (done // segment) % 2 == 0 else ["raw", "adapter"]
        for path in order:
            started = time.perf_counter()
            if path == "adapter":
                await index_adapter(store, batch)
            else:
                await index_raw(client, raw_prefix, batch)
            timing = results.adapter if path == "adapter" else results.raw
            timing.seconds += time.perf_counter() - started
            timing.records += count
        done += count
        print(f"  {done:>9,} / {total:,}  adapter {results.adapter.rate:,.0f}/s  "
              f"raw {results.raw.rate:,.0f}/s", flush=True)


def query_words(samples: list[Sample], count: int = 20) -> list[str]:
    """The words most lines contain (alphabetic, 4+ letters): realistic, non-empty hits."""
    frequency = Counter(
        token for sample in samples for token in set(textsearch.tokenize(sample.message))
        if len(token) >= 4 and token.isalpha()
    )
    return [word for word, _ in frequency.most_common(count)]


async def measure_queries(
    store: OpenSearchLogStore, words: list[str], rounds: int, results: Results
) -> None:
    rng = random.Random(7)
    for n in range(rounds + 1):  # the first round warms caches and is not counted
        hour = START + timedelta(hours=rng.randrange(23))
        query = LogQuery(LogFilter(
            PROJECTS[n % len(PROJECTS)], TimeRange(hour, hour + timedelta(hours=1)),
            levels=(LogLevel.ERROR, LogLevel.WARN, LogLevel.FATAL), search=rng.choice(words),
        ), limit=100)
        started = time.perf_counter()
        page = await store.search(query)
        search_ms = (time.perf_counter() - started) * 1000
        # A window shifted per round, so OpenSearch's request cache cannot answer it.
        shift = timedelta(minutes=5 * rng.randrange(12))
        volume = VolumeQuery(PROJECTS[n % len(PROJECTS)],
                             TimeRange(START + shift, START + shift + timedelta(hours=23)),
                             Bucketing.parse("5m"), levels=(LogLevel.ERROR, LogLevel.FATAL))
        started = time.perf_counter()
        buckets = await store.volume(volume)
        volume_ms = (time.perf_counter() - started) * 1000
        assert len(buckets) == 276
        if n:
            results.search_ms.append(search_ms)
            results.search_hits.append(page.total)
            results.volume_ms.append(volume_ms)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 \
        else values[0]


async def count_docs(client: AsyncOpenSearch, prefix: str) -> tuple[int, int]:
    """Documents and primary store bytes under the prefix, once refreshed."""
    await client.indices.refresh(index=mapping.index_pattern(prefix))
    answer = await client.count(index=mapping.index_pattern(prefix))
    stats = await client.indices.stats(index=mapping.index_pattern(prefix), metric="store")
    return int(answer["count"]), int(stats["_all"]["primaries"]["store"]["size_in_bytes"])


async def drop(client: AsyncOpenSearch, prefix: str) -> None:
    names = await client.indices.get(index=f"{prefix}*", allow_no_indices=True)
    if names:
        await client.indices.delete(index=",".join(names))
    await client.indices.delete_index_template(name=mapping.alias_name(prefix), ignore=404)


def report(args: argparse.Namespace, node: dict[str, Any], results: Results,
           counts: tuple[tuple[int, int], tuple[int, int]], rss_mb: float) -> str:
    ratio = results.adapter.rate / results.raw.rate if results.raw.rate else 0.0
    rows = [
        ("records indexed per path", f"{args.records:,}"),
        ("documents in the indices (adapter / raw)", f"{counts[0][0]:,} / {counts[1][0]:,}"),
        ("index size on disk, adapter's indices (before merges settle)",
         f"{counts[0][1] / 2**20:,.0f} MB"),
        ("bulk rate, adapter `write_batches` (docs/s)", f"{results.adapter.rate:,.0f}"),
        ("bulk rate, raw `helpers.async_bulk` (docs/s)", f"{results.raw.rate:,.0f}"),
        ("adapter / raw", f"{ratio:.2f}× (target ≥ 0.90×)"),
        (f"full text + level + 1 h range, median / p95 ({len(results.search_ms)} queries)",
         f"{statistics.median(results.search_ms):.1f} / {p95(results.search_ms):.1f} ms"),
        ("  matches per query, median", f"{statistics.median(results.search_hits):,.0f}"),
        (f"volume 23 h × 5 m, ERROR+FATAL, median / p95 ({len(results.volume_ms)} queries)",
         f"{statistics.median(results.volume_ms):.1f} / {p95(results.volume_ms):.1f} ms"),
        ("peak RSS of the benchmark process", f"{rss_mb:,.0f} MB"),
    ]
    lines = [
        f"OpenSearch {node.get('version', {}).get('number')} "
        f"({node.get('version', {}).get('distribution', '?')}), "
        f"segment {args.segment:,} records, 1000 docs per bulk request, one request at a time",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    url = args.url or os.environ.get("OPSPILOT_OPENSEARCH_URL")
    if not url:
        sys.exit("set OPSPILOT_OPENSEARCH_URL or pass --url")
    samples = load_samples()
    run = uuid.uuid4().hex[:8]
    adapter_prefix, raw_prefix = f"bench-{run}-a-", f"bench-{run}-r-"
    client = await connect_opensearch(url, request_timeout=120)
    try:
        node = await client.info()
        store = OpenSearchLogStore(client, prefix=adapter_prefix)
        raw_store = OpenSearchLogStore(client, prefix=raw_prefix)
        await store.ensure_template()
        await raw_store.ensure_template()  # the same template under the raw prefix
        results = Results()
        print(f"{len(samples):,} LogHub messages; indexing {args.records:,} records per path")
        await index_both(client, store, raw_prefix, samples, args.records, args.segment,
                         results, run)
        counts = (await count_docs(client, adapter_prefix), await count_docs(client, raw_prefix))
        await measure_queries(store, query_words(samples), args.queries, results)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print()
        print(report(args, node, results, counts, rss_mb))
    finally:
        if not args.keep:
            for prefix in (adapter_prefix, raw_prefix):
                await drop(client, prefix)
        await client.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--segment", type=int, default=50_000,
                        help="records per alternation between the two paths")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--url", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the indices afterwards")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
