"""`opspilot` command line: serve, api, worker, alerts, compact, ai, migrate, accounts, demo,
dlq."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from opspilot.entrypoints import cli_accounts
from opspilot.entrypoints.cli_accounts import CliError
from opspilot.entrypoints.signals import until_signalled
from opspilot.settings import Settings

log = logging.getLogger("opspilot")
DEFAULT_SERVER = "http://127.0.0.1:8080"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _log_redacted()
    try:
        return int(asyncio.run(args.run(args)) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"opspilot: {exc}", file=sys.stderr)
        return 2


def _log_redacted() -> None:
    """Log lines (tracebacks too) never show a URL's credentials, path or query."""
    from opspilot.adapters.redaction import RedactingFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opspilot", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="command")

    def command(name: str, run: Callable[[Any], Awaitable[int]], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(run=run)
        return p

    for name, run, help in (
        ("serve", _serve, "API + worker + alert scheduler + AI in one process"),
        ("api", _api, "the HTTP API alone (workers run apart; needs OPSPILOT_AMQP_URL)"),
        ("ai", _ai, "the AI service: /ai/anomaly and /ai/cluster"),
    ):
        p = command(name, run, help)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8081 if name == "ai" else 8080)
    p = command("worker", _worker, "the ingestion worker (needs OPSPILOT_AMQP_URL)")
    _metrics_address(p, 9101)
    p = command("alerts", _alerts, "the alert scheduler and evaluator (every minute)")
    p.add_argument("--once", action="store_true", help="evaluate one tick and exit")
    p.add_argument("--force", action="store_true",
                   help="with --once: evaluate now even if this minute's tick was taken")
    _metrics_address(p, 9102)
    p = command("compact", _compact,
                "compact closed hours of metric points into per-series blocks")
    p.add_argument("--once", action="store_true",
                   help="compact what is due now and exit (else: every few minutes)")
    p = command("migrate", _migrate, "bring the PostgreSQL schema to the latest version")
    cli_accounts.add_commands(command)
    p = command("demo", _demo, "create a demo project and ingest an hour of data")
    p.add_argument("--server", default=DEFAULT_SERVER)
    p.add_argument("--name", default=None)
    p.add_argument("--admin-token", help="else OPSPILOT_ADMIN_TOKEN, else the file `serve` wrote")
    p = command("dlq", _dlq, "inspect or replay dead-lettered ingest messages")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--limit", type=int, default=100)
    return parser


def _metrics_address(p: argparse.ArgumentParser, port: int) -> None:
    # A container's Prometheus scrapes from another pod: it needs --metrics-host 0.0.0.0;
    # loopback stays the default so a bare-metal process exposes nothing by accident.
    p.add_argument("--metrics-host", default="127.0.0.1")
    p.add_argument("--metrics-port", type=int, default=port)


# -- running processes -----------------------------------------------------------------


async def _start_site(app: Any, host: str, port: int) -> Any:
    from opspilot.entrypoints.api.app import start_api_site

    return await start_api_site(app, host, port)


async def _serve(args: Any) -> int:
    from opspilot.container import build_container, start_container, stop_container
    from opspilot.entrypoints.alert_scheduler import run_alert_process
    from opspilot.entrypoints.api.app import create_app
    from opspilot.entrypoints.assembly import api_services
    from opspilot.entrypoints.self_monitoring import start_self_monitoring

    settings = Settings()
    if settings.database_url:  # one-process shape: bring the schema up to date itself
        from opspilot.adapters.postgres.migrate import migrate

        await migrate(settings.database_url, settings.database_schema)
    token_file = None
    if settings.admin_token is None:  # see ADR 0019: a fresh admin token per start
        token, token_file = cli_accounts.write_admin_token(settings, args.port)
        settings = settings.model_copy(update={"admin_token": token})
    if settings.secret_key is None:  # a key kept in the state dir, for data that persists
        settings = settings.model_copy(
            update={"secret_key": cli_accounts.local_secret_key(settings)})
    container = build_container(settings)
    await start_container(container, alerting=True)
    monitoring = None
    try:
        app = create_app(api_services(container))
        # one /metrics (the API's) serves the worker's and the alert engine's instruments too
        monitoring = start_self_monitoring(
            container, container.api_telemetry().registry, worker=True,
            include=[container.worker_telemetry().registry,
                     container.alert_telemetry().registry],
        )
        worker = container.ingest_worker()
        worker_task = asyncio.create_task(worker.run(), name="ingest-worker")
        alerts_stop = asyncio.Event()
        alerts_task = asyncio.create_task(
            run_alert_process(container, False, stop=alerts_stop, metrics_port=None),
            name="alert-scheduler",
        )
        runner = await _start_site(app, args.host, args.port)
        _banner(args.host, args.port, container.config.backends(), token_file)
        await until_signalled()
        log.info("stopping: draining the worker")
        alerts_stop.set()
        worker.request_stop()
        await asyncio.gather(worker_task, alerts_task)
        await runner.cleanup()
    finally:
        if monitoring is not None:
            await monitoring.stop()
        await stop_container(container)
        if token_file is not None:
            token_file.unlink(missing_ok=True)
    return 0


def _banner(host: str, port: int, backends: dict[str, str], token_file: Any) -> None:
    base = f"http://{host}:{port}"
    in_memory = [port for port, kind in backends.items() if kind in ("memory",)]
    print(f"OpsPilot listening on {base}  (OpenAPI: {base}/api/openapi.json)", flush=True)
    print("adapters: " + ", ".join(f"{k}={v}" for k, v in backends.items()), flush=True)
    if in_memory:
        print(
            "NOTE: " + ", ".join(in_memory) + " data lives in memory and is lost when this "
            "process stops. Set OPSPILOT_*_URL to persist (see README).",
            flush=True,
        )
    where = (f"in {token_file} (readable by you only; new at each start)" if token_file
             else "OPSPILOT_ADMIN_TOKEN")
    print(
        f"admin token: {where}\n"
        "Try it:\n"
        f"  opspilot demo --server {base}\n"
        f"  opspilot create-project my-project --server {base}\n"
        f"  opspilot admin create-user you@example.com --admin --server {base}",
        flush=True,
    )


async def _api(args: Any) -> int:
    from opspilot.container import build_container, start_container, stop_container
    from opspilot.entrypoints.api.app import create_app
    from opspilot.entrypoints.assembly import api_services
    from opspilot.entrypoints.self_monitoring import start_self_monitoring

    settings = Settings()
    if not settings.amqp_url:
        raise CliError("`opspilot api` publishes to RabbitMQ: set OPSPILOT_AMQP_URL "
                       "(or run everything in one process with `opspilot serve`)")
    container = build_container(settings)
    await start_container(container)
    monitoring = start_self_monitoring(container, container.api_telemetry().registry,
                                       worker=False)
    try:
        runner = await _start_site(create_app(api_services(container)), args.host, args.port)
        print(f"OpsPilot API listening on http://{args.host}:{args.port}", flush=True)
        await until_signalled()
        await runner.cleanup()
    finally:
        await monitoring.stop()
        await stop_container(container)
    return 0


async def _worker(args: Any) -> int:
    from opspilot.adapters.prometheus.serving import start_metrics_server
    from opspilot.container import build_container, start_container, stop_container
    from opspilot.entrypoints.self_monitoring import start_self_monitoring

    settings = Settings()
    if not settings.amqp_url:
        raise CliError("`opspilot worker` consumes from RabbitMQ: set OPSPILOT_AMQP_URL")
    container = build_container(settings)
    await start_container(container)
    # queue depth every 5 s, PostgreSQL/OpenSearch exporters every 15 s, the pool collector
    monitoring = start_self_monitoring(container, container.worker_telemetry().registry,
                                       worker=True)
    try:
        worker = container.ingest_worker()
        metrics_runner = await start_metrics_server(
            container.worker_telemetry().registry, args.metrics_host, args.metrics_port
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.request_stop)
        print("OpsPilot worker consuming metrics.ingest and logs.ingest", flush=True)
        await worker.run()
        await metrics_runner.cleanup()
    finally:
        await monitoring.stop()
        await stop_container(container)
    return 0


async def _alerts(args: Any) -> int:
    from opspilot.container import build_container, start_container, stop_container
    from opspilot.entrypoints.alert_scheduler import run_alert_process
    from opspilot.entrypoints.self_monitoring import start_self_monitoring

    settings = Settings()
    if not settings.database_url:
        raise CliError("`opspilot alerts` reads rules from PostgreSQL: set OPSPILOT_DATABASE_URL "
                       "(or run everything in one process with `opspilot serve`)")
    container = build_container(settings)
    await start_container(container, alerting=True)
    monitoring = start_self_monitoring(container, container.alert_telemetry().registry,
                                       worker=False)
    try:
        return await run_alert_process(container, args.once, metrics_port=args.metrics_port,
                                       metrics_host=args.metrics_host, force=args.force)
    finally:
        await monitoring.stop()
        await stop_container(container)


async def _compact(args: Any) -> int:
    from opspilot.container import build_container, start_container, stop_container
    from opspilot.entrypoints.alert_scheduler import periodic_loop

    # only PostgreSQL is needed: the other connections are not opened
    settings = Settings(opensearch_url=None, amqp_url=None, redis_url=None, ai_url=None)
    if not settings.database_url:
        raise CliError("compaction works on PostgreSQL: set OPSPILOT_DATABASE_URL "
                       "(`opspilot serve` compacts its in-memory store itself)")
    container = build_container(settings)
    await start_container(container, alerting=True)  # the tick lock
    try:
        job = container.compaction()
        if args.once:
            report = await job.run_once(container.clock().now())
            print(json.dumps({"periods": report.periods, "points": report.points,
                              "backlog": report.backlog,
                              "seconds": round(report.seconds, 3)}), flush=True)
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await periodic_loop(job.run, job.policy.every, container.clock(), stop, "compaction")
        return 0
    finally:
        await stop_container(container)


async def _ai(args: Any) -> int:
    from opspilot.entrypoints.ai_service import run_ai_service

    await run_ai_service(args.host, args.port)
    return 0


async def _migrate(args: Any) -> int:
    from opspilot.adapters.postgres.migrate import migrate

    settings = Settings()
    if not settings.database_url:
        raise CliError("set OPSPILOT_DATABASE_URL to the PostgreSQL to migrate")
    await migrate(settings.database_url, settings.database_schema)
    print("schema is at the latest version", flush=True)
    return 0


# -- demo data ------------------------------------------------------------------------------


async def _demo(args: Any) -> int:
    from opspilot.entrypoints import demo

    name = args.name or f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    project = await cli_accounts.new_project(name, args.server, admin_token=args.admin_token)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    key = {"X-API-Key": project["api_key"]}
    points = list(demo.metric_points(now))
    logs = list(demo.log_records(now))
    for chunk in demo.chunks(points):
        await cli_accounts.call(args.server, "POST", "/api/ingest/metrics", {"metrics": chunk}, key)
    for chunk in demo.chunks(logs):
        await cli_accounts.call(args.server, "POST", "/api/ingest/logs", {"logs": chunk}, key)
    query = {"Authorization": f"Bearer {project['token']}", "X-Project-ID": project["project_id"]}
    await cli_accounts.call(args.server, "POST", "/api/rules", demo.RULE, query)
    base = args.server.rstrip("/")
    auth = f"-H 'Authorization: Bearer {project['token']}' -H 'X-Project-ID: {project['project_id']}'"
    print(f"demo project {name}: {len(points)} metric points and {len(logs)} logs ingested,"
          f" alert rule {demo.RULE['name']!r} created (the scheduler opens its incident)")
    print(json.dumps(project))
    print(f"Explorer: {base}/ui/  (sign in with the token above)")
    print("Look around:")
    print(f"  curl -s {auth} '{base}/api/metrics/query?metric_name=latency_ms_p95&service_name=checkout&time_bucket=5m'")
    print(f"  curl -s {auth} '{base}/api/metrics/anomalies?metric_name=latency_ms_p95&service_name=checkout&time_bucket=1m'")
    print(f"  curl -s {auth} '{base}/api/logs/query?level=ERROR&search=database&limit=5'")
    print(f"  curl -s {auth} '{base}/api/logs/error-spikes?time_bucket=1m'")
    print(f"  curl -s {auth} '{base}/api/logs/patterns?limit=3000'")
    return 0


async def _dlq(args: Any) -> int:
    from opspilot.container import build_container, start_container, stop_container

    settings = Settings()
    if not settings.amqp_url:
        raise CliError("dead letters live in RabbitMQ: set OPSPILOT_AMQP_URL")
    # only the dead-letter connection is needed: the other URLs are not opened
    container = build_container(Settings(database_url=None, opensearch_url=None,
                                         redis_url=None, ai_url=None))
    await start_container(container, dead_letters=True)
    dead = container.dead_letters()
    try:
        if args.action == "replay":
            print(f"replayed {await dead.replay(args.limit)} messages")
            return 0
        for letter in await dead.list(args.limit):
            print(json.dumps({"id": letter.id, "stream": letter.stream, "reason": letter.reason,
                              "bytes": len(letter.body), "at": str(letter.at)}))
    finally:
        await stop_container(container)
    return 0


if __name__ == "__main__":
    sys.exit(main())
