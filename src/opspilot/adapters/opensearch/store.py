"""The OpenSearch log store: the LogStore port over daily indices (ADR 0006).

It answers exactly as `InMemoryLogStore` does for the same data; the shared contract suite
(tests/contract/test_log_store.py) holds both to that. Driver errors are translated here:
connection failures, 429, 5xx and index blocks become `TransientStoreError` (the worker retries); any other
refusal of documents becomes `RecordsRejected` (the worker isolates and dead-letters
them), of anything else `StoreRejected`; both list what was refused.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import TransportError

from opspilot.adapters.opensearch import mapping
from opspilot.domain import textsearch
from opspilot.domain.errors import NotFound, OpsPilotError, RecordsRejected, TransientStoreError
from opspilot.domain.ingest import LogBatch
from opspilot.domain.logs import (
    CountBucket,
    LogContext,
    LogFilter,
    LogPage,
    LogQuery,
    LogRecord,
    VolumeQuery,
    next_cursor,
)

log = logging.getLogger(__name__)

BULK_MAX_DOCS = 1000
BULK_MAX_BYTES = 16 * 1024 * 1024
# The documented subset of simple_query_string syntax (see domain/textsearch.py); OR,
# precedence, fuzzy, near, slop and escapes stay plain text.
SEARCH_FLAGS = "AND|NOT|PHRASE|PREFIX|WHITESPACE"
NEWEST_FIRST = [{"timestamp_us": {"order": "desc"}}, {"log_id": {"order": "desc"}}]
OLDEST_FIRST = [{"timestamp_us": {"order": "asc"}}, {"log_id": {"order": "asc"}}]
_BULK_RESPONSE = "errors,items.*._id,items.*.status,items.*.error"


class StoreRejected(OpsPilotError):
    """OpenSearch refused a request or some documents for a reason retrying will not fix
    (a mapping error, a malformed query). `details["failures"]` lists what and why."""

    code = "store_rejected"


async def connect_opensearch(url: str, request_timeout: float = 30.0) -> AsyncOpenSearch:
    """One client (one aiohttp session, pooled connections) for the app's lifetime; the
    caller closes it with `await client.close()`. `url` may list a cluster's nodes,
    comma-separated (ADR 0028): requests go round-robin, a node that refuses connections is
    set aside for a while and the request retried on the next one."""
    hosts = [part.strip() for part in url.split(",") if part.strip()]
    return AsyncOpenSearch(
        hosts=hosts, timeout=request_timeout, max_retries=len(hosts) + 1, retry_on_timeout=False,
        http_compress=False, maxsize=16,
    )


class OpenSearchLogStore:
    def __init__(
        self,
        client: AsyncOpenSearch,
        prefix: str = "opspilot-",
        refresh: bool | str = False,
        refresh_interval: str = "1s",
        scroll_keepalive: str = "2m",
        shards: int = 1,
        replicas: int = 0,
    ) -> None:
        """`refresh`: the bulk API's `refresh` (False, True or "wait_for"); tests use True
        so a write is searchable when it returns."""
        self._client = client
        self._prefix = prefix
        self._refresh = refresh
        self._refresh_interval = refresh_interval
        self._scroll_keepalive = scroll_keepalive
        self._shards = shards
        self._replicas = replicas
        self._pattern = mapping.index_pattern(prefix)

    @property
    def client(self) -> AsyncOpenSearch:
        """The client this store writes with (the OpenSearch exporter reads `_stats` on it)."""
        return self._client

    # -- lifecycle ---------------------------------------------------------------------------

    async def ensure_template(self) -> None:
        """Create or update the index template; idempotent, called at start-up. Indices
        created earlier keep their mapping; the next daily index takes the new one."""
        with _translated("put index template"):
            await self._client.indices.put_index_template(
                name=mapping.alias_name(self._prefix),
                body=mapping.index_template(self._prefix, self._refresh_interval,
                                            shards=self._shards, replicas=self._replicas),
            )

    async def ping(self) -> None:
        with _translated("ping"):
            await self._client.cluster.health()

    async def refresh(self) -> None:
        """Make every write so far searchable (tests, benchmarks)."""
        with _translated("refresh"):
            await self._client.indices.refresh(index=self._pattern, allow_no_indices=True)

    async def drop_before(self, cutoff: datetime) -> list[str]:
        """The daily indices whose whole day ended at or before `cutoff`, deleted."""
        cutoff = cutoff.astimezone(UTC)
        with _translated("list indices"):
            found = await self._client.cat.indices(
                index=self._pattern, format="json", h="index", expand_wildcards="open,closed"
            )
        doomed = sorted(
            row["index"] for row in found
            if (day := mapping.day_of_index(self._prefix, row["index"])) is not None
            and day + timedelta(days=1) <= cutoff
        )
        for start in range(0, len(doomed), 50):  # keeps the URL short
            with _translated("delete indices"):
                await self._client.indices.delete(index=",".join(doomed[start : start + 50]))
        return doomed

    # -- writes ------------------------------------------------------------------------------

    async def write_batches(self, batches: Sequence[LogBatch]) -> int:
        """`index` operations with the deterministic `_id`, so a redelivered batch
        overwrites itself. Every refused document is reported, none is dropped."""
        records = [record for batch in batches for record in batch.records]
        for body, count in _bulk_bodies(self._prefix, records):
            await self._bulk(body, count)
        return len(records)

    async def _bulk(self, body: bytes, count: int) -> None:
        with _translated("bulk write"):
            response = await self._client.bulk(
                body=body, refresh=_refresh_param(self._refresh), filter_path=_BULK_RESPONSE
            )
        if not response.get("errors"):
            return
        failures = [
            {"id": outcome.get("_id"), "status": outcome.get("status"),
             "error": outcome.get("error")}
            for item in response.get("items", [])
            for outcome in item.values()
            if outcome.get("error")
        ] or [{"id": None, "status": None, "error": "errors flagged, no item reported"}]
        if any(_is_transient(f["status"], f["error"]) for f in failures):
            raise TransientStoreError(
                f"opensearch refused {len(failures)} of {count} documents for now "
                f"(first: {_reason(failures[0])})",
                failures=failures[:20],
            )
        raise RecordsRejected(
            f"opensearch refused {len(failures)} of {count} documents "
            f"(first: {_reason(failures[0])})",
            {"failures": failures},
        )

    # -- reads -------------------------------------------------------------------------------

    async def search(self, query: LogQuery) -> LogPage:
        """Offset paging for the first MAX_OFFSET matches, `search_after` on the unique
        (timestamp_us, log_id) key beyond. The key is a total order, so each page starts
        strictly after the cursor: no gap, no repeat, without server-side state; a point in
        time would only freeze the view, which the stateless cursor does not promise."""
        body: dict[str, Any] = {
            "query": _query(query.filter),
            "sort": NEWEST_FIRST,
            "size": query.limit,
            "track_total_hits": True,
        }
        if query.cursor is not None:
            body["search_after"] = [mapping.micros(query.cursor.timestamp), query.cursor.log_id]
        else:
            body["from"] = query.offset
        response = await self._search(body, "search")
        records = _records(response)
        return LogPage(records, response["hits"]["total"]["value"],
                       next_cursor(records, query.limit))

    async def get(self, project_id: str, log_id: str) -> LogRecord | None:
        body = {
            "query": {"bool": {"filter": [_term("project_id", project_id),
                                          _term("log_id", log_id)]}},
            "size": 1,
        }
        records = _records(await self._search(body, "get"))
        return records[0] if records else None

    async def context(
        self, project_id: str, log_id: str, before: int, after: int,
        across_services: bool = False,
    ) -> LogContext:
        """Two `search_after` queries from the anchor's (timestamp, id) key, one each way,
        in one `_msearch` round trip."""
        anchor = await self.get(project_id, log_id)
        if anchor is None:
            raise NotFound("no such log in this project", {"field": "log_id", "log_id": log_id})
        stream = [_term("project_id", project_id)]
        if not across_services:
            stream.append(_service_stream(anchor.service))
        key = [mapping.micros(anchor.timestamp), anchor.id]
        sides = {"before": (before, NEWEST_FIRST), "after": (after, OLDEST_FIRST)}
        wanted = {side: (size, sort) for side, (size, sort) in sides.items() if size > 0}
        lines: list[dict[str, Any]] = []
        for size, sort in wanted.values():
            lines += [{"index": self._pattern}, {
                "query": {"bool": {"filter": stream}}, "sort": sort, "size": size,
                "search_after": key, "track_total_hits": False,
            }]
        found: dict[str, list[LogRecord]] = {"before": [], "after": []}
        if lines:
            with _translated("context"):
                response = await self._client.msearch(body=lines)
            for side, answer in zip(wanted, response["responses"], strict=True):
                if "error" in answer:
                    raise _refusal(answer.get("status"), answer["error"], "context")
                found[side] = _records(answer)
        return LogContext(anchor, found["before"][::-1], found["after"])

    async def volume(self, query: VolumeQuery) -> list[CountBucket]:
        """`date_histogram` with a fixed interval, which OpenSearch aligns to the epoch
        (offset 0, UTC) exactly as `Bucketing.floor`; the answer is then laid over
        `Bucketing.starts_over`, so every bucket of the window is present."""
        starts = query.bucketing.starts_over(query.window)
        seconds = int(query.bucketing.width.total_seconds())
        log_filter = query.filter
        body = {
            "size": 0,
            "track_total_hits": False,
            "query": _query(log_filter),
            "aggs": {"volume": {"date_histogram": {
                "field": "timestamp",
                "fixed_interval": f"{seconds}s",
                "min_doc_count": 0,
                "extended_bounds": {"min": mapping.millis(starts[0]),
                                    "max": mapping.millis(starts[-1])},
            }}},
        }
        response = await self._search(body, "volume")
        buckets = response.get("aggregations", {}).get("volume", {}).get("buckets", [])
        counts = {int(b["key"]): b["doc_count"] for b in buckets}
        return [CountBucket(s, counts.get(mapping.millis(s), 0)) for s in starts]

    async def export(self, log_filter: LogFilter, chunk: int = 1000) -> AsyncIterator[LogRecord]:
        """Every match, newest first, through the scroll API (a consistent snapshot of the
        indices as of the first page); the scroll is cleared when the generator finishes
        or is closed early."""
        body = {"query": _query(log_filter), "sort": NEWEST_FIRST, "size": chunk}
        with _translated("export"):
            response = await self._client.search(
                index=self._pattern, body=body, scroll=self._scroll_keepalive
            )
        scroll_id = response.get("_scroll_id")
        try:
            while hits := response["hits"]["hits"]:
                for hit in hits:
                    yield mapping.from_source(hit["_source"])
                if scroll_id is None:
                    break
                with _translated("export"):
                    response = await self._client.scroll(
                        body={"scroll_id": scroll_id, "scroll": self._scroll_keepalive}
                    )
                scroll_id = response.get("_scroll_id", scroll_id)
        finally:
            if scroll_id is not None:
                await self._clear_scroll(scroll_id)

    async def _clear_scroll(self, scroll_id: str) -> None:
        try:
            await self._client.clear_scroll(body={"scroll_id": [scroll_id]})
        except TransportError as exc:  # the keep-alive frees it anyway
            log.warning("could not clear a scroll: %s", exc)

    async def _search(self, body: dict[str, Any], action: str) -> dict[str, Any]:
        with _translated(action):
            response: dict[str, Any] = await self._client.search(
                index=self._pattern, body=body, allow_no_indices=True
            )
        return response


# -- query building ----------------------------------------------------------------------------


def _term(field: str, value: str) -> dict[str, Any]:
    return {"term": {field: value}}


def _service_stream(service: str | None) -> dict[str, Any]:
    if service is None:
        return {"bool": {"must_not": [{"exists": {"field": "service_name"}}]}}
    return _term("service_name", service)


def _query(f: LogFilter) -> dict[str, Any]:
    """Project id always first; user text only ever inside `simple_query_string`."""
    filters: list[dict[str, Any]] = [
        _term("project_id", f.project_id),
        {"range": {"timestamp_us": {"gte": mapping.micros(f.window.start),
                                    "lt": mapping.micros(f.window.end)}}},
    ]
    if f.levels:
        filters.append({"terms": {"level": [level.value for level in f.levels]}})
    if f.service is not None:
        filters.append(_term("service_name", f.service))
    if f.trace_id is not None:
        filters.append(_term("trace_id", f.trace_id))
    query: dict[str, Any] = {"filter": filters}
    # Text with no searchable word (punctuation only) filters nothing, as in memory.
    if f.search and textsearch.parse(f.search):
        query["must"] = [{"simple_query_string": {
            "query": f.search,
            "fields": ["message"],
            "default_operator": "and",
            "flags": SEARCH_FLAGS,
            "analyze_wildcard": True,
        }}]
    return {"bool": query}


def _records(response: dict[str, Any]) -> list[LogRecord]:
    return [mapping.from_source(hit["_source"]) for hit in response["hits"]["hits"]]


# -- bulk --------------------------------------------------------------------------------------


def _bulk_bodies(prefix: str, records: Sequence[LogRecord]) -> Iterator[tuple[bytes, int]]:
    """NDJSON bodies of at most BULK_MAX_DOCS documents and about BULK_MAX_BYTES each."""
    lines: list[bytes] = []
    size = count = 0
    for record in records:
        action = orjson.dumps({"index": {
            "_index": mapping.index_for(prefix, record.timestamp),
            "_id": mapping.document_id(record),
        }})
        source = orjson.dumps(mapping.to_document(record))
        if count and (count == BULK_MAX_DOCS or size + len(action) + len(source) > BULK_MAX_BYTES):
            yield b"\n".join(lines) + b"\n", count
            lines, size, count = [], 0, 0
        lines += (action, source)
        size += len(action) + len(source) + 2
        count += 1
    if count:
        yield b"\n".join(lines) + b"\n", count


def _refresh_param(refresh: bool | str) -> str:
    if isinstance(refresh, bool):
        return "true" if refresh else "false"
    return refresh


# -- errors ------------------------------------------------------------------------------------


def _is_transient(status: Any, error: Any = None) -> bool:
    """429, 5xx, and index/cluster blocks: a write block (403, set by an operator) or the
    flood-stage disk block (429) lifts once someone acts, and the documents are fine, so
    the worker keeps them and retries rather than dead-lettering good data."""
    if isinstance(error, dict) and error.get("type") == "cluster_block_exception":
        return True
    return status == 429 or (isinstance(status, int) and status >= 500)


def _reason(failure: dict[str, Any]) -> str:
    error = failure.get("error") or {}
    if isinstance(error, dict):
        return f"{failure.get('id')}: {error.get('type')}: {error.get('reason')}"
    return f"{failure.get('id')}: {error}"


def _refusal(status: Any, error: Any, action: str) -> OpsPilotError:
    if _is_transient(status, _error_of(error)):
        return TransientStoreError(f"opensearch {action} failed for now: {error}")
    return StoreRejected(f"opensearch refused {action}: {error}", {"status": status})


def _error_of(info: Any) -> Any:
    """The `error` object of a whole-request failure body, if there is one."""
    return info.get("error") if isinstance(info, dict) else None


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except TransportConnectionError as exc:
        raise TransientStoreError(f"opensearch unreachable during {action}: {exc}") from None
    except TransportError as exc:
        raise _refusal(exc.status_code, exc.info or exc.error, action) from None

