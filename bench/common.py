"""What several benchmarks share, written once: the HTTP ingest workload's batch size and
level mix and its batching (pipeline_ingest.py, otlp_ingest.py), removing a pipeline run's
schema, indices and queues, and the PostgreSQL benchmarks' common options
(postgres_metrics.py, postgres_compaction.py)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from typing import Any, TypeVar

import aiohttp
import asyncpg

T = TypeVar("T")

BATCH = 1000  # items per request, as a client batching its exports would send
LEVELS = ["INFO"] * 7 + ["DEBUG", "WARN", "ERROR"]


def batched(items: Sequence[T], size: int = BATCH) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def add_postgres_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None)
    parser.add_argument("--output", default=None, help="also write the table here (markdown)")
    parser.add_argument("--keep", action="store_true", help="keep the two schemas")


async def cleanup(stack: Any, raw_prefix: str, dsn: str) -> None:
    """Drops the run's schema, both index prefixes with their templates, and its queues."""
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{stack.schema}" CASCADE')
        await conn.close()
    base = stack.urls["opensearch"].rstrip("/")
    with contextlib.suppress(Exception):
        async with aiohttp.ClientSession() as s:
            for prefix in (stack.index_prefix, raw_prefix):
                async with s.delete(f"{base}/{prefix}logs-*"):
                    pass
                async with s.delete(f"{base}/_index_template/{prefix}logs"):
                    pass
    with contextlib.suppress(Exception):
        from tests.contract.queue_fixtures import delete_queues

        await delete_queues(stack.urls["amqp"], stack.queue_prefix)
