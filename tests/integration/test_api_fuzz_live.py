"""Schemathesis against the live API on the real services (issue #15 item 9).

`opspilot api` and `opspilot worker` run as processes on PostgreSQL, RabbitMQ, Redis and
OpenSearch (a schema, index, queue and cache prefix of this module's own). The `schemathesis`
CLI reads the API's served /api/openapi.json and runs with `--checks all` once per caller:

    admin-token  the operator (OPSPILOT_ADMIN_TOKEN)
    owner, admin, member, viewer   a personal token with that role in the project
    ingest-key   the project's API key
    anonymous    no credentials at all

Each run must end with no failure: no 5xx, no undocumented status, content type or header,
every body as its schema says, 4xx for schema-invalid input, 401 without credentials, etc.
The one check that is turned off is `positive_data_acceptance`, and only for the operations
whose document lists rules the schema cannot state (`x-rules-beyond-schema`: end_time after
start_time, a cursor the server issued, timestamps within the retention, ...): there
schema-valid input may rightly be a 400. Everything else runs everywhere.

Bounded by default (OPSPILOT_FUZZ=short, a few minutes in CI): the coverage phase (every
boundary value of every parameter) for the operator, fuzzing and stateful phases with a few
examples per operation for every caller. OPSPILOT_FUZZ=long runs every phase for every caller
with 100 examples per operation (`scripts/test fuzz`). OPSPILOT_FUZZ_SEED fixes the seed
(default: a fixed one, so a CI failure reproduces).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.fernet import Fernet

from tests.integration import test_pipeline_e2e as pipeline

pytestmark = pytest.mark.integration

ST = Path(sys.executable).parent / "schemathesis"
MODE = os.environ.get("OPSPILOT_FUZZ", "short")
SEED = os.environ.get("OPSPILOT_FUZZ_SEED", "15009")
ADMIN_TOKEN = "fuzz-admin-token-" + uuid.uuid4().hex
ROOT = Path(__file__).resolve().parents[2]
# protobuf bodies for the protocol doors (schemathesis_hooks.py), importable from the root
HOOKS_ENV = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))}


@attrs.frozen
class Plan:
    phases: str
    examples: int
    timeout: float  # seconds for one caller's run before the test fails


PLANS: dict[str, dict[str, Plan]] = {
    "short": {
        "admin-token": Plan("coverage,fuzzing,stateful", 5, 600),
        "default": Plan("fuzzing,stateful", 5, 300),
    },
    "long": {"default": Plan("examples,coverage,fuzzing,stateful", 100, 3600)},
}
CALLERS = ("anonymous", "ingest-key", "viewer", "member", "admin", "owner", "admin-token")


def plan_for(caller: str) -> Plan:
    plans = PLANS[MODE]
    return plans.get(caller, plans["default"])


# -- the deployment ----------------------------------------------------------------------


@attrs.define
class Live:
    stack: pipeline.Stack
    base: str
    project: str = ""
    headers: dict[str, dict[str, str]] = attrs.field(factory=dict)


def _call(base: str, method: str, path: str, body: Any = None,
          headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(base + path, method=method, headers={
        "Content-Type": "application/json", **(headers or {})},
        data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


def _provision(live: Live) -> None:
    """A project, a member of each role, and data in every store for the queries to read."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = _call(live.base, "POST", "/api/admin/projects",
                 {"name": f"fuzz-{uuid.uuid4().hex[:8]}"}, admin)
    project, owner = made["project_id"], made["token"]
    live.project = project
    scoped = {"X-Project-ID": project}
    tokens = {"owner": owner}
    for role in ("admin", "member", "viewer"):
        invited = _call(live.base, "POST", f"/api/projects/{project}/members",
                        {"email": f"{role}-{uuid.uuid4().hex[:6]}@example.com", "role": role},
                        {"Authorization": f"Bearer {owner}"})
        tokens[role] = invited["token"]
    live.headers = {
        "anonymous": {},
        "ingest-key": {"X-API-Key": made["api_key"]},
        "admin-token": {**admin, **scoped},
        **{role: {"Authorization": f"Bearer {t}", **scoped} for role, t in tokens.items()},
    }
    key = {"X-API-Key": made["api_key"]}
    now = datetime.now(UTC)
    _call(live.base, "POST", "/api/ingest/metrics", {"metrics": [
        {"name": "A", "service": "0", "value": float(i), "tags": {"0": "0"},
         "timestamp": (now - timedelta(minutes=i)).isoformat()} for i in range(30)]}, key)
    _call(live.base, "POST", "/api/ingest/logs", {"logs": [
        {"level": "ERROR" if i % 3 else "INFO", "message": f"fuzz line {i}", "service": "0",
         "trace_id": "0", "timestamp": (now - timedelta(minutes=i)).isoformat()}
        for i in range(30)]}, key)
    owner_headers = live.headers["owner"]
    channel = _call(live.base, "POST", "/api/channels",
                    {"name": "mail", "type": "email", "to": "ops@example.com"}, owner_headers)
    _call(live.base, "POST", "/api/rules", {"name": "r", "metric_name": "A", "threshold": 1.0,
                                            "channels": [channel["id"]]}, owner_headers)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    urls = asyncio.run(pipeline.probe_services())
    if "redis" not in urls:
        pipeline.unavailable("OPSPILOT_REDIS_URL not set")
    tag = uuid.uuid4().hex[:10]
    run = pipeline.Run(urls, f"fuzz_{tag}", f"fuzz-{tag}-", f"fuzz:{tag}:")
    workdir = Path(os.environ.get("OPSPILOT_FUZZ_DIR", "build/fuzz")) / tag
    workdir.mkdir(parents=True, exist_ok=True)
    stack = pipeline.Stack(urls, run.schema, run.index_prefix, f"fuzz-{tag}.", run.cache_prefix,
                           workdir.resolve())
    # Limits far above what the fuzzing sends: a 429 would stand in front of the code under
    # test (the limits themselves are tested elsewhere). The channel test cap stays.
    stack.extra_env.update(
        OPSPILOT_ADMIN_TOKEN=ADMIN_TOKEN, OPSPILOT_SECRET_KEY=Fernet.generate_key().decode(),
        OPSPILOT_QUERY_RATE="100000", OPSPILOT_QUERY_BURST="100000",
        OPSPILOT_INGEST_RATE="100000", OPSPILOT_INGEST_BURST="100000",
        OPSPILOT_ADMIN_RATE="100000", OPSPILOT_ADMIN_BURST="100000",
        OPSPILOT_AUTH_FAILURE_RATE="100000", OPSPILOT_AUTH_FAILURE_BURST="100000",
    )
    try:
        stack.run("migrate", timeout=300)
        _, base = asyncio.run(stack.start_api())
        asyncio.run(stack.start_worker())
        live = Live(stack, base)
        _provision(live)
        yield live
    finally:
        stack.stop_all()
        asyncio.run(pipeline._drop_run(run))  # noqa: SLF001 (the pipeline module's cleanup)
        with contextlib.suppress(Exception):
            from tests.contract.queue_fixtures import delete_queues

            asyncio.run(delete_queues(urls["amqp"], stack.queue_prefix))


# -- the schemathesis configuration -------------------------------------------------------


def config_toml(document: dict[str, Any], project: str) -> str:
    """Per operation, `positive_data_acceptance` off where the document says schema-valid
    input may still be refused; the project's id in every `{project_id}` path."""
    lines = [
        "[checks]",
        "enabled = true  # every check: `--checks all` (a CLI option would override the below)",
        "",
        "[parameters]",
        f'"path.project_id" = "{project}"',
        "",
    ]
    for path, methods in sorted(document["paths"].items()):
        for method, operation in sorted(methods.items()):
            if not excused(operation):
                continue
            lines += [
                "[[operations]]",
                f'include-name = "{method.upper()} {path}"',  # exactly this operation
                "checks.positive_data_acceptance.enabled = false",
                "",
            ]
    return "\n".join(lines)


def excused(operation: dict[str, Any]) -> bool:
    """Schema-valid input may be refused: the document lists rules beyond the schema, or the
    body is binary (a protocol's protobuf message, which JSON Schema cannot describe)."""
    content = operation.get("requestBody", {}).get("content", {})
    binary = any(c.get("schema", {}).get("format") == "binary" for c in content.values())
    return bool(operation.get("x-rules-beyond-schema")) or binary


def _document(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/api/openapi.json", timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_the_configuration_turns_off_one_check_only_where_the_document_says(
    live: Live,
) -> None:
    document = _document(live.base)
    text = config_toml(document, live.project)
    let_off = [(p, m) for p, ms in document["paths"].items() for m, op in ms.items()
               if excused(op)]
    assert text.count("[[operations]]") == len(let_off)
    assert text.count("checks.") == len(let_off)  # no other check is touched
    assert "[checks]\nenabled = true" in text  # ...and all of them run elsewhere
    # what the fuzzing relies on: the rules are stated where a reader of the document sees them
    for path, method in let_off:
        operation = document["paths"][path][method]
        assert "Rules the schema cannot state" in operation.get("description", "") or all(
            c["schema"].get("description") for c in operation["requestBody"]["content"].values())
    # ...and operations without such rules keep every check
    assert ("/api/channels/{channel_id}/test", "post") not in let_off


@pytest.mark.parametrize("caller", CALLERS)
def test_the_live_api_answers_by_its_own_document(live: Live, caller: str, tmp_path: Path) -> None:
    plan = plan_for(caller)
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_toml(_document(live.base), live.project))
    headers = [arg for name, value in live.headers[caller].items()
               for arg in ("-H", f"{name}: {value}")]
    command = [
        str(ST), "--no-color", "--config-file", str(config), "run",
        f"{live.base}/api/openapi.json", "--phases", plan.phases,
        "--max-examples", str(plan.examples), "--seed", SEED,
        # one worker: with two threads, CPython 3.11 sometimes failed inside schemathesis'
        # coverage phase ("SystemError: AST constructor recursion depth mismatch")
        "--workers", "1",
        "--request-timeout", "60", "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(tmp_path / "report"), *headers,
    ]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=plan.timeout,
                              check=False, cwd=tmp_path, env=HOOKS_ENV)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ({caller}) ran past {plan.timeout:.0f}s:\n"
                    f"{(exc.stdout or b'')[-4000:]!r}")
    summary = done.stdout[done.stdout.rfind("SUMMARY"):] if "SUMMARY" in done.stdout else ""
    print(f"\n--- schemathesis as {caller}: {time.monotonic() - started:.0f}s, exit "
          f"{done.returncode}\n{summary}")
    assert done.returncode == 0, (
        f"schemathesis as {caller} found failures (seed {SEED}):\n{done.stdout[-20000:]}\n"
        f"{done.stderr[-3000:]}\n--- api output ---\n{live.stack.procs[0].output()}"
    )
    assert "Test cases:" in done.stdout  # it ran, rather than failing to start
