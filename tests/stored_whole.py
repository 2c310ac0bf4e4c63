"""Issue #15 item 2: whatever payload the API accepts is stored whole.

A property test (hypothesis) shared by the unit run (in-memory adapters) and the
integration run (PostgreSQL, OpenSearch and RabbitMQ): payloads whose text draws on all of
Unicode, NUL and lone surrogates included, go through the real API app and a running
worker; every answer is 202 or a 4xx naming the field, and after a 202 each point and log
line reads back from the stores exactly as sent, with nothing dead-lettered.

The pipeline (container, API on a free loopback port, worker) runs on its own event loop in
a thread, because hypothesis drives a synchronous test function.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import aiohttp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from opspilot.adapters.clock_and_ids import FixedClock
from opspilot.container import Container, build_container, start_container, stop_container
from opspilot.domain.errors import TransientStoreError
from opspilot.domain.ingest import Stream
from opspilot.domain.logs import log_id_for
from opspilot.domain.metrics import Aggregation, SeriesSelector
from opspilot.domain.ports import WindowRequest
from opspilot.domain.timewindow import TimeRange
from opspilot.entrypoints.api.app import create_app, start_api_site
from opspilot.entrypoints.assembly import api_services
from opspilot.settings import Settings

T = TypeVar("T")
MICRO = timedelta(microseconds=1)
PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# All of Unicode but surrogates, plus what the stores cannot hold, often enough to matter.
_char = st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff", "\n", "é"]))
text = st.text(_char, max_size=12)
short_text = st.text(_char, min_size=1, max_size=12)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53), text,
                        st.floats(allow_nan=False, allow_infinity=False, width=32))
context = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=6)
metric = st.fixed_dictionaries({"value": st.floats(-1e6, 1e6, allow_nan=False)}, optional={
    "service": short_text, "tags": st.dictionaries(short_text, text, max_size=3)})
log_line = st.fixed_dictionaries(
    {"level": st.sampled_from(["INFO", "error", "Warning"]), "message": short_text},
    optional={"service": short_text, "trace_id": short_text, "correlation_id": short_text,
              "context": st.dictionaries(text, context, max_size=3)})
metrics_payload = st.lists(metric, min_size=1, max_size=4)
logs_payload = st.lists(log_line, min_size=1, max_size=4)


class Pipeline:
    """Container + API + worker on a loop in a thread; `run()` calls into it."""

    def __init__(self, settings_: Settings, dead_letters: Callable[[Container], Any],
                 now: datetime,
                 cleanup: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        self.settings = settings_
        self._dead_letters = dead_letters
        self.now = now
        self._cleanup = cleanup
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._names = itertools.count()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    async def _start(self) -> None:
        self.container = build_container(self.settings)
        self.container.clock.override(FixedClock(self.now))
        await start_container(self.container)
        made = await self.container.provisioner().create_project("whole")
        self.project_id, self.key = made.project_id, made.api_key
        self.runner = await start_api_site(create_app(api_services(self.container)),
                                           "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.session = aiohttp.ClientSession()
        self.worker = self.container.ingest_worker()
        self.worker_task = asyncio.create_task(self.worker.run())

    async def _stop(self) -> None:
        self.worker.request_stop()
        await asyncio.wait_for(self.worker_task, 30)
        await self.session.close()
        await self.runner.cleanup()
        await stop_container(self.container)
        if self._cleanup is not None:
            await self._cleanup()

    # -- one example -----------------------------------------------------------------------

    def check_metrics(self, items: list[dict[str, Any]]) -> None:
        event("accepted" if self.run(self._check_metrics(items)) else "refused with 400")

    def check_logs(self, items: list[dict[str, Any]]) -> None:
        event("accepted" if self.run(self._check_logs(items)) else "refused with 400")

    async def _post(self, kind: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(f"{self.base}/api/ingest/{kind}", json=body,
                                     headers={"X-API-Key": self.key}) as response:
            return response.status, await response.json()

    def _stamps(self, n: int) -> list[datetime]:
        start = self.now - timedelta(minutes=30) + next(self._names) * timedelta(seconds=1)
        return [start + i * MICRO for i in range(n)]

    async def _check_metrics(self, items: list[dict[str, Any]]) -> bool:
        name = f"whole_{next(self._names)}"
        stamps = self._stamps(len(items))
        body = {"metrics": [{"name": name, "timestamp": s.isoformat(), **m}
                            for m, s in zip(items, stamps, strict=True)]}
        status, doc = await self._post("metrics", body)
        if _refused(status, doc):
            return False
        store = self.container.metric_store()
        for item, stamp in zip(items, stamps, strict=True):
            selector = SeriesSelector(name, item.get("service"), item.get("tags", {}))
            request = WindowRequest(self.project_id, selector, Aggregation.SUM,
                                    TimeRange(stamp, stamp + MICRO))
            got = await _eventually(lambda r=request: store.aggregate_windows([r]),
                                    lambda found: bool(found) and found[0].count == 1)
            assert got[0].value == item["value"], (item, got)
        await self._nothing_dead()
        return True

    async def _check_logs(self, items: list[dict[str, Any]]) -> bool:
        stamps = self._stamps(len(items))
        body = {"logs": [{"timestamp": s.isoformat(), **x}
                         for x, s in zip(items, stamps, strict=True)]}
        status, doc = await self._post("logs", body)
        if _refused(status, doc):
            return False
        store = self.container.log_store()
        for position, (item, stamp) in enumerate(zip(items, stamps, strict=True)):
            log_id = log_id_for(doc["batch_id"], position)
            record = await _eventually(lambda i=log_id: store.get(self.project_id, i),
                                       lambda found: found is not None)
            assert record.timestamp == stamp
            assert record.message == item["message"]
            for field in ("service", "trace_id", "correlation_id"):
                assert getattr(record, field) == item.get(field), field
            assert dict(record.context) == item.get("context", {})
        window = TimeRange(stamps[0], stamps[-1] + MICRO)
        count = await _eventually(
            lambda: self.container.log_metadata().count(self.project_id, window),
            lambda found: found == len(items))
        assert count == len(items)
        await self._nothing_dead()
        return True

    async def _nothing_dead(self) -> None:
        dead = self._dead_letters(self.container)
        for stream in (Stream.METRICS, Stream.LOGS):
            assert await dead.dead_letter_depth(stream) == 0, stream


def _refused(status: int, doc: Any) -> bool:
    """True for a 4xx naming the field at fault; anything else but 202 fails the test."""
    if status == 202:
        return False
    assert status == 400, (status, doc)
    assert doc["error"]["details"].get("field"), doc
    return True


async def _eventually(read: Callable[[], Any], done: Callable[[Any], bool],
                      within: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            found = await read()
        except TransientStoreError:  # a daily index just created: its shard is not up yet
            found = None
        if done(found) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


# -- the tests: imported by a module that defines the `pipeline` fixture ---------------------


@PROPERTY_SETTINGS
@given(items=metrics_payload)
def test_accepted_metrics_are_stored_whole(pipeline: Pipeline, items: Any) -> None:
    pipeline.check_metrics(items)


@PROPERTY_SETTINGS
@given(items=logs_payload)
def test_accepted_logs_are_stored_whole(pipeline: Pipeline, items: Any) -> None:
    pipeline.check_logs(items)
