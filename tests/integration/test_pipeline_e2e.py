"""The whole ingest pipeline with real processes on the real services:

    HTTP client → `opspilot api` → RabbitMQ → `opspilot worker` → PostgreSQL / OpenSearch

Each test starts its own API and worker subprocesses (`.venv/bin/opspilot`), on a schema,
index prefix and cache prefix unique to this module run, and a queue prefix and project
unique to the test. The failure tests kill -9 a worker, run two workers at once, restart
RabbitMQ (`rabbitmqctl stop_app` / `start_app` on the node `scripts/services` runs) and
stop PostgreSQL for ~30 s (`pg_ctl stop` / `start` on the cluster `scripts/services` runs);
the services are always brought back in a `finally`.

Invariants checked against PostgreSQL directly (not through the API):
- nothing that got a 202 is lost: every point of every accepted request is stored;
- no double writes: every point carries a value unique to it in the test, so a duplicate is
  a value stored twice. (A request that the client re-sent after a 503 may be stored twice:
  a publish can be confirmed by the broker after the API gave up on it; such requests are
  excluded from the duplicate check only, never from the loss check.)
- nothing valid is dead-lettered: both DLQs are empty at the end.

Skips without the services (OPSPILOT_DATABASE_URL, OPSPILOT_AMQP_URL, OPSPILOT_OPENSEARCH_URL:
`eval "$(scripts/services env)"`); fails instead under CI or OPSPILOT_REQUIRE_SERVICES=1.
The RabbitMQ and PostgreSQL outage tests disturb the shared services for everybody using them
(~10 s and ~30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import attrs
import orjson
import pytest

from tests import services
from tests.services import services_required

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin" / "opspilot"
if not BIN.exists():
    BIN = Path(sys.executable).parent / "opspilot"
SERVICES_DIR = ROOT / ".services"
METRIC = "e2e_load"
SERVICE = "e2e-svc"


def unavailable(reason: str) -> NoReturn:
    services.unavailable("the pipeline's real services", reason)


def free_port() -> int:
    """A free port: from OPSPILOT_TEST_PORT_RANGE (`23200-23299`) when set, so that sessions
    sharing a machine keep to their own ports; else one the kernel picks."""
    first, _, last = os.environ.get("OPSPILOT_TEST_PORT_RANGE", "").partition("-")
    candidates = range(int(first), int(last) + 1) if first and last else [0]
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError(f"no free port in OPSPILOT_TEST_PORT_RANGE={first}-{last}")


# -- the services ------------------------------------------------------------------------


async def probe_services() -> dict[str, str]:
    """The services' URLs once each answers; skips (fails in CI) otherwise."""
    import asyncpg

    from opspilot.adapters.postgres.database import asyncpg_dsn

    urls = {name: os.environ.get(f"OPSPILOT_{name.upper()}_URL", "")
            for name in ("database", "amqp", "opensearch")}
    missing = [f"OPSPILOT_{n.upper()}_URL" for n, u in urls.items() if not u]
    if missing:
        unavailable(", ".join(missing) + " not set (eval \"$(scripts/services env)\")")
    patience = 30.0 if services_required() else 3.0
    try:
        conn = await asyncpg.connect(asyncpg_dsn(urls["database"]), timeout=patience)
        await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL: {exc!r}")
    from tests.contract.queue_fixtures import amqp_url_or_skip

    await amqp_url_or_skip()
    try:
        async with aiohttp.ClientSession() as s, s.get(
            urls["opensearch"].rstrip("/") + "/_cluster/health",
            timeout=aiohttp.ClientTimeout(total=patience),
        ) as r:
            if r.status != 200:
                unavailable(f"OpenSearch: HTTP {r.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        unavailable(f"OpenSearch: {exc!r}")
    if os.environ.get("OPSPILOT_REDIS_URL"):
        urls["redis"] = os.environ["OPSPILOT_REDIS_URL"]
    return urls


def rabbitmqctl(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """rabbitmqctl against the node `scripts/services` runs (its env, cookie and ports)."""
    d = SERVICES_DIR / "rabbitmq"
    env = {
        **os.environ,
        "HOME": str(d / "home"),
        "RABBITMQ_NODENAME": "opspilot@localhost", "RABBITMQ_USE_LONGNAME": "false",
        "ERL_EPMD_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": "21369",
        "RABBITMQ_CTL_DIST_PORT_MIN": "21680", "RABBITMQ_CTL_DIST_PORT_MAX": "21690",
        "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(d / "log"),
    }
    return subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-q", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pg_ctl(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """pg_ctl on the cluster `scripts/services` runs, as the postgres user when we are root."""
    home = (SERVICES_DIR / "pg").resolve()
    command = [str(PG_BIN / "pg_ctl"), "-D", str(home / "data"), *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def pg_log() -> str:
    return str((SERVICES_DIR / "pg").resolve() / "log" / "postgres.log")


async def wait_for(check: Any, within: float, what: str, interval: float = 0.5) -> Any:
    """Await `check()` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except Exception as exc:  # not there yet
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


# -- processes ---------------------------------------------------------------------------


@attrs.define
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    ready_url: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def peak_rss_kib(self) -> int | None:
        """VmHWM of a live process, in KiB."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    async def wait_ready(self, within: float = 90.0) -> None:
        async def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}):\n{self.output()}")
            return await asyncio.to_thread(_http_ok, self.ready_url)

        try:
            await wait_for(ready, within, f"{self.name} to be ready", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} output ---\n{self.output()}") from None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@attrs.define
class Stack:
    """One isolated deployment on the shared services: its env, its processes."""

    urls: dict[str, str]
    schema: str
    index_prefix: str
    queue_prefix: str
    cache_prefix: str
    workdir: Path
    extra_env: dict[str, str] = attrs.field(factory=dict)
    procs: list[Proc] = attrs.field(factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
        env.update(
            OPSPILOT_DATABASE_URL=self.urls["database"], OPSPILOT_AMQP_URL=self.urls["amqp"],
            OPSPILOT_OPENSEARCH_URL=self.urls["opensearch"],
            OPSPILOT_DATABASE_SCHEMA=self.schema, OPSPILOT_INDEX_PREFIX=self.index_prefix,
            OPSPILOT_QUEUE_PREFIX=self.queue_prefix, OPSPILOT_CACHE_PREFIX=self.cache_prefix,
            PYTHONUNBUFFERED="1",
        )
        if "redis" in self.urls:
            env["OPSPILOT_REDIS_URL"] = self.urls["redis"]
        env.update(self.extra_env)
        return env

    def run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([str(BIN), *args], env=self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
        assert done.returncode == 0, f"opspilot {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def create_project(self, name: str) -> Project:
        doc = orjson.loads(self.run("create-project", name, "--json").strip().splitlines()[-1])
        return Project(doc["project_id"], doc["api_key"], doc["token"])

    def _spawn(self, name: str, args: list[str], ready_url: str) -> Proc:
        log_path = self.workdir / f"{name}-{len(self.procs)}.log"
        handle = log_path.open("wb")
        popen = subprocess.Popen([str(BIN), *args], env=self.env(), stdout=handle,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        handle.close()
        proc = Proc(name, popen, log_path, ready_url)
        self.procs.append(proc)
        return proc

    async def start_api(self) -> tuple[Proc, str]:
        port = free_port()
        proc = self._spawn("api", ["api", "--port", str(port)],
                           f"http://127.0.0.1:{port}/healthz")
        await proc.wait_ready()
        return proc, f"http://127.0.0.1:{port}"

    async def start_worker(self) -> Proc:
        port = free_port()
        proc = self._spawn("worker", ["worker", "--metrics-port", str(port)],
                           f"http://127.0.0.1:{port}/healthz")
        await proc.wait_ready()
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()


@attrs.frozen
class Project:
    project_id: str
    api_key: str
    token: str

    def query_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Project-ID": self.project_id}


# -- the client --------------------------------------------------------------------------


@attrs.define
class IngestLog:
    """What the client saw, per request number: points accepted (202) and whether any
    attempt was answered 503/429 or failed in transit before the 202."""

    accepted: dict[int, int] = attrs.field(factory=dict)
    retried: set[int] = attrs.field(factory=set)
    failed: dict[int, str] = attrs.field(factory=dict)
    status_counts: dict[int, int] = attrs.field(factory=dict)

    @property
    def accepted_points(self) -> int:
        return sum(self.accepted.values())


def metric_body(request_no: int, size: int, base: datetime) -> bytes:
    """`size` points whose values are unique to (request_no, i): value = request_no*size+i."""
    first = request_no * size
    return orjson.dumps({"metrics": [
        {"name": METRIC, "service": SERVICE, "value": float(first + i),
         "timestamp": (base + timedelta(milliseconds=first + i)).isoformat()}
        for i in range(size)
    ]})


async def post_with_retries(
    session: aiohttp.ClientSession, url: str, body: bytes, api_key: str, number: int,
    seen: IngestLog, give_up_after: float = 120.0,
) -> None:
    """POST until a 202 (retrying 503/429 after Retry-After, and transport errors)."""
    deadline = time.monotonic() + give_up_after
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    while True:
        try:
            async with session.post(url, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=60)) as response:
                seen.status_counts[response.status] = seen.status_counts.get(response.status, 0) + 1
                text = await response.text()
                try:
                    doc = orjson.loads(text)
                except orjson.JSONDecodeError:
                    doc = {"unparsable body": text[:500]}
                if response.status == 202 and "accepted" not in doc:
                    seen.failed[number] = f"HTTP 202 without `accepted`: {doc}"
                    return
                if response.status == 202:
                    seen.accepted[number] = int(doc["accepted"])
                    return
                if response.status not in (429, 503):
                    seen.failed[number] = f"HTTP {response.status}: {doc}"
                    return
                delay = float(response.headers.get("Retry-After", "1"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            seen.status_counts[0] = seen.status_counts.get(0, 0) + 1
            delay = 1.0
            if time.monotonic() > deadline:
                seen.failed[number] = repr(exc)
                return
        seen.retried.add(number)
        if time.monotonic() > deadline:
            seen.failed[number] = "gave up retrying"
            return
        await asyncio.sleep(delay)


async def ingest_metrics(
    base_url: str, api_key: str, requests: range, size: int, base: datetime,
    seen: IngestLog, concurrency: int = 4, stop: asyncio.Event | None = None,
) -> None:
    """POST the requests' bodies with `concurrency` clients; stops early when `stop` is set."""
    numbers = iter(requests)
    url = base_url + "/api/ingest/metrics"

    async def client(session: aiohttp.ClientSession) -> None:
        for number in numbers:
            if stop is not None and stop.is_set():
                return
            await post_with_retries(session, url, metric_body(number, size, base), api_key,
                                    number, seen)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))


# -- what got stored ---------------------------------------------------------------------


@attrs.define
class Db:
    url: str
    schema: str

    async def _conn(self) -> Any:
        import asyncpg

        from opspilot.adapters.postgres.database import asyncpg_dsn

        return await asyncpg.connect(asyncpg_dsn(self.url), timeout=5)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await self._conn()
        try:
            return list(await conn.fetch(sql.replace("{s}", f'"{self.schema}"'), *args))
        finally:
            await conn.close()

    async def count(self, project_id: str) -> int:
        rows = await self.fetch("SELECT count(*) AS n FROM {s}.metrics WHERE project_id = $1",
                                project_id)
        return int(rows[0]["n"])

    async def census(self, project_id: str) -> tuple[int, int]:
        """(rows, distinct (timestamp, name, service, value)) of the project."""
        rows = await self.fetch(
            "SELECT count(*) AS n, count(DISTINCT (\"timestamp\", metric_name, service_name,"
            " metric_value)) AS d FROM {s}.metrics WHERE project_id = $1", project_id)
        return int(rows[0]["n"]), int(rows[0]["d"])

    async def value_counts(self, project_id: str) -> dict[float, int]:
        rows = await self.fetch(
            "SELECT metric_value AS v, count(*) AS n FROM {s}.metrics WHERE project_id = $1"
            " GROUP BY 1", project_id)
        return {float(r["v"]): int(r["n"]) for r in rows}

    async def wait_count(self, project_id: str, expected: int, within: float) -> int:
        async def reached() -> bool:
            return await self.count(project_id) >= expected

        await wait_for(reached, within, f"{expected} stored points")
        await asyncio.sleep(2.0)  # late redeliveries would show up now
        return await self.count(project_id)


def assert_stored_exactly(seen: IngestLog, counts: dict[float, int], size: int) -> None:
    """Every point of every 202 is stored; none twice (bar requests re-sent after a 503)."""
    missing = [(n, i) for n in seen.accepted for i in range(size)
               if float(n * size + i) not in counts]
    assert not missing, f"{len(missing)} accepted points lost, e.g. {missing[:5]}"
    doubled = {v: c for v, c in counts.items()
               if c > 1 and int(v) // size not in seen.retried}
    assert not doubled, f"{len(doubled)} points stored more than once, e.g. {list(doubled.items())[:5]}"
    foreign = {v for v in counts if int(v) // size not in seen.accepted
               and int(v) // size not in seen.retried}
    assert not foreign, f"points stored that no request sent: {sorted(foreign)[:5]}"


async def dead_letters(stack: Stack) -> list[Any]:
    from opspilot.adapters.rabbitmq.dead_letters import RabbitMQDeadLetters

    dead = RabbitMQDeadLetters(stack.urls["amqp"], prefix=stack.queue_prefix)
    await dead.connect()
    try:
        return list(await dead.list(100))
    finally:
        await dead.close()


async def worker_metric(proc: Proc, name: str, stream: str) -> float:
    """A counter of a live worker, from its /metrics (0 when not exported yet)."""
    url = proc.ready_url.replace("/healthz", "/metrics")
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(f'{name}{{stream="{stream}"}}'):
            return float(line.split()[-1])
    return 0.0


async def worker_written(proc: Proc, stream: str = "metrics.ingest") -> float:
    return await worker_metric(proc, "opspilot_worker_records_written_total", stream)


# -- fixtures ----------------------------------------------------------------------------


@attrs.define
class Run:
    """The module's shared part: URLs, one migrated schema, one index and cache prefix."""

    urls: dict[str, str]
    schema: str
    index_prefix: str
    cache_prefix: str


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    urls = asyncio.run(probe_services())
    tag = uuid.uuid4().hex[:10]
    shared = Run(urls, f"e2e_{tag}", f"e2e-{tag}-", f"e2e:{tag}:")
    migrate_env = {k: v for k, v in os.environ.items() if not k.startswith("OPSPILOT_")}
    migrate_env.update(OPSPILOT_DATABASE_URL=urls["database"], OPSPILOT_DATABASE_SCHEMA=shared.schema)
    done = subprocess.run([str(BIN), "migrate"], env=migrate_env, capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, f"opspilot migrate failed:\n{done.stdout}\n{done.stderr}"
    try:
        yield shared
    finally:
        asyncio.run(_drop_run(shared))


async def _drop_run(shared: Run) -> None:
    import asyncpg

    from opspilot.adapters.postgres.database import asyncpg_dsn

    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(asyncpg_dsn(shared.urls["database"]), timeout=30)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{shared.schema}" CASCADE')
        finally:
            await conn.close()
    base = shared.urls["opensearch"].rstrip("/")
    with contextlib.suppress(Exception):
        async with aiohttp.ClientSession() as s:
            async with s.delete(f"{base}/{shared.index_prefix}logs-*"):
                pass
            async with s.delete(f"{base}/_index_template/{shared.index_prefix}logs"):
                pass


@pytest.fixture
async def stack(run: Run, tmp_path: Path) -> AsyncIterator[Stack]:
    prefix = f"e2e-{uuid.uuid4().hex[:10]}."
    made = Stack(run.urls, run.schema, run.index_prefix, prefix, run.cache_prefix, tmp_path)
    try:
        yield made
    finally:
        made.stop_all()
        from tests.contract.queue_fixtures import delete_queues

        with contextlib.suppress(Exception):
            await delete_queues(run.urls["amqp"], prefix)


@pytest.fixture
def db(run: Run) -> Db:
    return Db(run.urls["database"], run.schema)


# -- a. ingest → query -------------------------------------------------------------------


async def test_ingested_metrics_and_logs_become_visible_through_the_query_api(
    stack: Stack, db: Db
) -> None:
    project = stack.create_project("e2e-visible")
    _, api = await stack.start_api()
    await stack.start_worker()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=10)
    # 10 minutes × 3 points: values m*10 + k for k in 0..2 at start + m min + k s
    points = [{"name": "cpu", "service": "checkout", "value": float(m * 10 + k),
               "timestamp": (start + timedelta(minutes=m, seconds=k)).isoformat()}
              for m in range(10) for k in range(3)]
    logs = [{"level": "ERROR" if i % 4 == 0 else "INFO", "message": f"e2e line {i} payment",
             "service": "checkout", "timestamp": (start + timedelta(seconds=i)).isoformat(),
             "trace_id": f"trace-{i % 3}"}
            for i in range(25)]
    key = {"X-API-Key": project.api_key}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{api}/api/ingest/metrics", json={"metrics": points}, headers=key) as r:
            assert r.status == 202, await r.text()
            assert (await r.json())["accepted"] == 30
        async with s.post(f"{api}/api/ingest/logs", json={"logs": logs}, headers=key) as r:
            assert r.status == 202, await r.text()
            assert (await r.json())["accepted"] == 25

        window = {"start_time": start.isoformat(), "end_time": (now + timedelta(minutes=1)).isoformat()}

        async def series(aggregation: str) -> dict[str, Any]:
            params = {"metric_name": "cpu", "service_name": "checkout", "aggregation": aggregation,
                      "time_bucket": "1m", **window}
            async with s.get(f"{api}/api/metrics/query", params=params,
                             headers=project.query_headers()) as r:
                assert r.status == 200, await r.text()
                return dict(await r.json())

        async def all_metrics_visible() -> dict[str, Any] | None:
            doc = await series("sum")
            return doc if sum(p["count"] for p in doc["points"]) == 30 else None

        doc = await wait_for(all_metrics_visible, 45, "the 30 points in /api/metrics/query")
        assert [p["timestamp"] for p in doc["points"]] == [
            (start + timedelta(minutes=m)).isoformat() for m in range(10)]
        assert [p["value"] for p in doc["points"]] == [float(30 * m + 3) for m in range(10)]
        assert [p["count"] for p in doc["points"]] == [3] * 10
        maxima = await series("max")
        assert [p["value"] for p in maxima["points"]] == [float(m * 10 + 2) for m in range(10)]

        async def logs_page(**extra: str) -> dict[str, Any]:
            params = {**window, "limit": "100", **extra}
            async with s.get(f"{api}/api/logs/query", params=params,
                             headers=project.query_headers()) as r:
                assert r.status == 200, await r.text()
                return dict(await r.json())

        async def all_logs_visible() -> dict[str, Any] | None:
            page = await logs_page()
            return page if page["total"] == 25 else None

        page = await wait_for(all_logs_visible, 45, "the 25 logs in /api/logs/query")
        assert len(page["logs"]) == 25
        assert sorted(rec["message"] for rec in page["logs"]) == sorted(x["message"] for x in logs)
        errors = await logs_page(level="ERROR")
        assert errors["total"] == 7  # i = 0, 4, …, 24
        assert {rec["level"] for rec in errors["logs"]} == {"ERROR"}
        traced = await logs_page(trace_id="trace-1")
        assert traced["total"] == len([i for i in range(25) if i % 3 == 1])
    # the worker also wrote log metadata to PostgreSQL
    rows = await db.fetch("SELECT count(*) AS n FROM {s}.log_metadata WHERE project_id = $1",
                          project.project_id)
    assert rows[0]["n"] == 25
    assert await dead_letters(stack) == []


# -- b. kill -9 a worker mid-ingest --------------------------------------------------------


async def test_a_worker_killed_mid_ingest_loses_and_doubles_nothing(stack: Stack, db: Db) -> None:
    project = stack.create_project("e2e-kill9")
    _, api = await stack.start_api()
    first = await stack.start_worker()
    base = datetime.now(UTC) - timedelta(minutes=30)
    seen = IngestLog()
    size, requests = 1000, 100
    ingest = asyncio.create_task(
        ingest_metrics(api, project.api_key, range(requests), size, base, seen, concurrency=4))
    # kill once the worker has committed some, while the client is still sending
    await wait_for(lambda: _at_least(db, project.project_id, 10_000), 120, "10,000 stored points",
                   interval=0.1)
    stored_at_kill = await db.count(project.project_id)
    still_sending = not ingest.done()
    first.kill9()
    second = await stack.start_worker()
    await asyncio.wait_for(ingest, 240)
    assert not seen.failed, seen.failed
    assert seen.accepted_points == requests * size
    assert still_sending and stored_at_kill < requests * size, (
        f"the kill came too late to test anything: {stored_at_kill} stored, ingest done")
    stored = await db.wait_count(project.project_id, seen.accepted_points, 180)
    rows, distinct = await db.census(project.project_id)
    assert (stored, rows, distinct) == (seen.accepted_points,) * 3
    assert_stored_exactly(seen, await db.value_counts(project.project_id), size)
    assert await worker_written(second) > 0  # the second worker took over
    assert await dead_letters(stack) == []


async def _at_least(db: Db, project_id: str, n: int) -> bool:
    return await db.count(project_id) >= n


# -- c. competing workers ----------------------------------------------------------------


async def test_two_competing_workers_write_every_point_once(stack: Stack, db: Db) -> None:
    project = stack.create_project("e2e-compete")
    _, api = await stack.start_api()
    workers = [await stack.start_worker(), await stack.start_worker()]
    base = datetime.now(UTC) - timedelta(minutes=20)
    seen = IngestLog()
    size, requests = 1000, 60
    await ingest_metrics(api, project.api_key, range(requests), size, base, seen, concurrency=4)
    assert not seen.failed, seen.failed
    assert seen.accepted_points == requests * size
    stored = await db.wait_count(project.project_id, seen.accepted_points, 180)
    rows, distinct = await db.census(project.project_id)
    assert (stored, rows, distinct) == (seen.accepted_points,) * 3
    assert_stored_exactly(seen, await db.value_counts(project.project_id), size)
    shares = [await worker_written(w) for w in workers]
    assert all(share > 0 for share in shares), f"one worker did all the work: {shares}"
    assert await dead_letters(stack) == []


# -- d. RabbitMQ restart ------------------------------------------------------------------


async def _ingest_across(
    stack: Stack, api: str, project: Project, base: datetime, outage: Any, size: int = 500,
) -> IngestLog:
    """Send requests continuously (2 clients) from before `outage()` starts until 5 more were
    accepted after it ended; `outage` is an async callable doing the damage and the repair."""
    seen = IngestLog()
    stop = asyncio.Event()
    sender = asyncio.create_task(ingest_metrics(
        api, project.api_key, range(10_000), size, base, seen, concurrency=2, stop=stop))
    try:
        await wait_for(lambda: _accepted_at_least(seen, 5), 60, "5 accepted requests", 0.1)
        await outage()
        after = len(seen.accepted)
        await wait_for(lambda: _accepted_at_least(seen, after + 5), 120,
                       "5 more accepted requests after the outage", 0.2)
    finally:
        stop.set()
        await asyncio.wait_for(sender, 180)
    return seen


async def _accepted_at_least(seen: IngestLog, n: int) -> bool:
    return len(seen.accepted) >= n


async def test_nothing_accepted_is_lost_across_a_rabbitmq_restart(stack: Stack, db: Db) -> None:
    if not (SERVICES_DIR / "rabbitmq" / "home" / ".erlang.cookie").exists():
        unavailable("RabbitMQ is not the node scripts/services runs (cannot restart it)")
    project = stack.create_project("e2e-rabbit")
    _, api = await stack.start_api()
    await stack.start_worker()
    base = datetime.now(UTC) - timedelta(minutes=40)
    size = 500

    async def restart_broker() -> None:
        stopped = await asyncio.to_thread(rabbitmqctl, "stop_app")
        assert stopped.returncode == 0, stopped.stderr
        try:
            await asyncio.sleep(3)
        finally:
            started = await asyncio.to_thread(rabbitmqctl, "start_app")
            assert started.returncode == 0, started.stderr

    try:
        seen = await _ingest_across(stack, api, project, base, restart_broker, size)
    finally:
        await _ensure_rabbitmq_up()
    assert not seen.failed, seen.failed
    assert seen.retried, "no request met the outage: the restart tested nothing"
    await db.wait_count(project.project_id, seen.accepted_points, 120)
    assert_stored_exactly(seen, await db.value_counts(project.project_id), size)
    assert await dead_letters(stack) == []


async def _ensure_rabbitmq_up() -> None:
    """The broker answers again (start_app once more, then scripts/services up, if not)."""
    from tests.contract.queue_fixtures import _UNREACHABLE  # noqa: PLC2701

    url = os.environ["OPSPILOT_AMQP_URL"]

    async def answers() -> bool:
        connection = await aio_pika_connect(url)
        await connection.close()
        return True

    try:
        await wait_for(answers, 20, "RabbitMQ to answer")
        return
    except AssertionError:
        pass
    await asyncio.to_thread(rabbitmqctl, "start_app")
    try:
        await wait_for(answers, 30, "RabbitMQ to answer after start_app")
    except AssertionError:
        await asyncio.to_thread(subprocess.run, ["bash", str(ROOT / "scripts" / "services"), "up"],
                                check=False, timeout=300)
    _UNREACHABLE.pop(url, None)


async def aio_pika_connect(url: str) -> Any:
    import aio_pika

    return await aio_pika.connect(url, timeout=3)


# -- e. PostgreSQL down for ~30 s ----------------------------------------------------------


async def test_the_worker_rides_out_a_database_outage(stack: Stack, db: Db) -> None:
    if not (SERVICES_DIR / "pg" / "data").exists() and not (SERVICES_DIR / "pg").is_symlink():
        unavailable("PostgreSQL is not the cluster scripts/services runs (cannot stop it)")
    project = stack.create_project("e2e-pgdown")
    _, api = await stack.start_api()
    worker = await stack.start_worker()
    base = datetime.now(UTC) - timedelta(minutes=50)
    size = 500

    published: dict[int, int] = {}

    async def database_outage() -> None:
        stopped = await asyncio.to_thread(pg_ctl, "-m", "fast", "-t", "60", "-w", "stop")
        assert stopped.returncode == 0, stopped.stderr
        try:
            # The API cannot authenticate ingest without the database (503, the client
            # retries), so the worker gets its work during the outage straight from the queue.
            published.update(await _publish_directly(stack, project, range(50_000, 50_020),
                                                     size, base))
            await asyncio.sleep(30)
            assert worker.alive(), worker.output()
        finally:
            await _start_postgres()

    seen = await _ingest_across(stack, api, project, base, database_outage, size)
    assert not seen.failed, seen.failed
    assert len(published) == 20
    seen.accepted.update(published)
    await db.wait_count(project.project_id, seen.accepted_points, 120)
    assert_stored_exactly(seen, await db.value_counts(project.project_id), size)
    assert worker.alive(), worker.output()
    assert await worker_metric(worker, "opspilot_worker_retries_total", "metrics.ingest") > 0, (
        "the worker never met the outage")
    assert await worker_metric(worker, "opspilot_worker_dead_lettered_total", "metrics.ingest") == 0
    assert await dead_letters(stack) == [], "a valid message was dead-lettered"


async def _publish_directly(
    stack: Stack, project: Project, numbers: range, size: int, base: datetime
) -> dict[int, int]:
    """Batches published to the stack's metrics queue as the API would (confirmed)."""
    from opspilot.adapters.rabbitmq.queue import RabbitMQQueue
    from opspilot.domain.ingest import MetricBatch
    from opspilot.domain.metrics import MetricPoint

    queue = RabbitMQQueue(stack.urls["amqp"], prefix=stack.queue_prefix)
    await queue.connect()
    done: dict[int, int] = {}
    try:
        for n in numbers:
            points = [MetricPoint(project.project_id, base + timedelta(milliseconds=n * size + i),
                                  METRIC, float(n * size + i), SERVICE) for i in range(size)]
            await queue.publish(MetricBatch(uuid.uuid4().hex, project.project_id,
                                            datetime.now(UTC), points))
            done[n] = size
    finally:
        await queue.close()
    return done


async def _start_postgres() -> None:
    started = await asyncio.to_thread(pg_ctl, "-l", pg_log(), "-W", "start")
    import asyncpg

    from opspilot.adapters.postgres.database import asyncpg_dsn

    url = os.environ["OPSPILOT_DATABASE_URL"]

    async def answers() -> bool:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=3)
        await conn.close()
        return True

    try:
        await wait_for(answers, 60, "PostgreSQL to accept connections")
    except AssertionError:
        await asyncio.to_thread(subprocess.run, ["bash", str(ROOT / "scripts" / "services"), "up"],
                                check=False, timeout=300)
        raise AssertionError(
            f"PostgreSQL did not come back after pg_ctl start: {started.stderr}") from None


# -- f. OpenSearch refuses writes for a while ----------------------------------------------


async def _set_index_block(stack: Stack, value: bool | None) -> None:
    url = f"{stack.urls['opensearch'].rstrip('/')}/{stack.index_prefix}logs-*/_settings"
    async with aiohttp.ClientSession() as s, s.put(
        url, json={"index.blocks.write": value}) as r:
        assert r.status == 200, await r.text()


async def test_logs_ride_out_an_opensearch_write_block(stack: Stack) -> None:
    """An operator's write block on the log indices (what a full disk looks like too): the
    worker keeps retrying, dead-letters nothing, and every accepted log appears once the
    block is lifted."""
    project = stack.create_project("e2e-osblock")
    _, api = await stack.start_api()
    worker = await stack.start_worker()
    now = datetime.now(UTC)
    key = {"X-API-Key": project.api_key}

    def logs(first: int, count: int) -> list[dict[str, Any]]:
        return [{"level": "INFO", "message": f"block test line {i}", "service": "checkout",
                 "timestamp": (now - timedelta(milliseconds=i)).isoformat()}
                for i in range(first, first + count)]

    window = {"start_time": (now - timedelta(hours=1)).isoformat(),
              "end_time": (now + timedelta(minutes=1)).isoformat(), "limit": "1"}

    async with aiohttp.ClientSession() as s:
        async def total() -> int:
            async with s.get(f"{api}/api/logs/query", params=window,
                             headers=project.query_headers()) as r:
                assert r.status == 200, await r.text()
                return int((await r.json())["total"])

        async def accept(first: int, count: int) -> None:
            async with s.post(f"{api}/api/ingest/logs", json={"logs": logs(first, count)},
                              headers=key) as r:
                assert r.status == 202, await r.text()

        await accept(0, 100)  # creates today's index, so the block has something to hold
        await wait_for(lambda: _count_at_least(total, 100), 45, "the first 100 logs")
        await _set_index_block(stack, True)
        try:
            for first in range(100, 1100, 250):
                await accept(first, 250)
            await wait_for(lambda: _at_least_metric(worker, "opspilot_worker_retries_total",
                                                    "logs.ingest", 2), 30,
                           "the worker meeting the block")
            assert await total() == 100, "nothing can be written while blocked"
        finally:
            await _set_index_block(stack, None)
        await wait_for(lambda: _count_at_least(total, 1100), 60, "all 1,100 logs after the block")
        assert await total() == 1100
    assert worker.alive(), worker.output()
    assert await worker_metric(worker, "opspilot_worker_dead_lettered_total", "logs.ingest") == 0
    assert await dead_letters(stack) == [], "a valid log batch was dead-lettered"


async def _count_at_least(count: Any, n: int) -> bool | None:
    return True if await count() >= n else None


async def _at_least_metric(proc: Proc, name: str, stream: str, n: float) -> bool | None:
    return True if await worker_metric(proc, name, stream) >= n else None
