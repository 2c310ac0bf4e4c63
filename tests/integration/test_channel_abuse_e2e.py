"""Channels cannot be made into a relay or a probe (issue #15 items 10 and 12), on the real
services: two `opspilot api` replicas sharing PostgreSQL and Redis, an SMTP relay of the
test's own (aiosmtpd), and RabbitMQ/OpenSearch as in production.

- a webhook or Slack URL the SSRF guard would refuse at delivery is refused at creation
  (400 naming `target`), without saying what a name resolved to; nothing is stored;
- e-mail recipients outside OPSPILOT_EMAIL_ALLOWED_DOMAINS are refused at creation (the
  send-time check of channels stored before is tests/unit/alerts/test_notifiers.py's);
- the `test` action is capped per channel across replicas (the buckets are in Redis): the
  third test within the hour is a 429 with Retry-After on either replica, and the relay saw
  exactly two messages.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet

from tests.integration import test_pipeline_e2e as pipeline
from tests.integration.test_pipeline_e2e import Stack

run, deployment = pipeline.run, pipeline.stack

pytestmark = pytest.mark.integration


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(sorted(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@pytest.fixture
def relay() -> Any:
    mailbox = Mailbox()
    port = pipeline.free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def _configure(deployment: Stack, smtp_port: int, **extra: str) -> None:
    redis_url = os.environ.get("OPSPILOT_REDIS_URL")
    if not redis_url:
        pipeline.unavailable("OPSPILOT_REDIS_URL not set: the test caps live in Redis")
    deployment.urls["redis"] = str(redis_url)
    deployment.extra_env.update(
        OPSPILOT_SECRET_KEY=Fernet.generate_key().decode(), OPSPILOT_WEBHOOK_ALLOWLIST="",
        OPSPILOT_SMTP_HOST="127.0.0.1", OPSPILOT_SMTP_PORT=str(smtp_port),
        OPSPILOT_EMAIL_ALLOWED_DOMAINS="example.com", OPSPILOT_CHANNEL_TESTS_PER_HOUR="2",
        **extra,
    )


async def _call(session: aiohttp.ClientSession, method: str, url: str, owner: dict[str, str],
                body: Any = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {owner['token']}", "X-Project-ID": owner["project_id"]}
    async with session.request(method, url, json=body, headers=headers) as response:
        raw = await response.read()
        return response.status, (json.loads(raw) if raw else None), response.headers


async def test_channels_refuse_internal_targets_and_foreign_recipients_and_cap_tests(
    deployment: Stack, relay: Any,
) -> None:
    mailbox, smtp_port = relay
    _configure(deployment, smtp_port)
    owner = json.loads(deployment.run("create-project", f"abuse-{uuid.uuid4().hex[:8]}", "--json"))
    _, api_a = await deployment.start_api()
    _, api_b = await deployment.start_api()
    async with aiohttp.ClientSession() as s:
        for target, said in (
            ("http://localhost:9/hook", "'localhost' resolves to an address notifications"),
            ("http://169.254.169.254/latest/meta-data/", "'169.254.169.254' is link-local"),
            ("http://2130706433/", "'2130706433' is loopback"),
        ):
            for kind in ("webhook", "slack"):
                status, doc, _ = await _call(s, "POST", f"{api_a}/api/channels", owner,
                                             {"name": "probe", "type": kind, "url": target})
                assert status == 400, doc
                assert doc["error"]["details"]["field"] == "target"
                assert said in doc["error"]["message"]
                assert "127.0.0.1" not in json.dumps(doc)
        status, doc, _ = await _call(s, "POST", f"{api_b}/api/channels", owner,
                                     {"name": "relay", "type": "email",
                                      "to": "ops@example.com,victim@elsewhere.net"})
        assert status == 400 and doc["error"]["details"]["field"] == "target", doc
        assert "victim@elsewhere.net" in doc["error"]["message"]
        status, listed, _ = await _call(s, "GET", f"{api_b}/api/channels", owner)
        assert status == 200 and listed["channels"] == []  # nothing refused was stored

        status, made, _ = await _call(s, "POST", f"{api_a}/api/channels", owner,
                                      {"name": "ops", "type": "email", "to": "ops@example.com"})
        assert status == 201, made
        test_path = f"/api/channels/{made['id']}/test"
        answers = []
        for api in (api_a, api_b, api_a, api_b):
            status, doc, headers = await _call(s, "POST", api + test_path, owner)
            answers.append((status, doc, headers))
    assert [a[0] for a in answers] == [200, 200, 429, 429], answers
    assert answers[0][1]["ok"] is True and answers[1][1]["ok"] is True
    refused = answers[3]
    assert refused[1]["error"]["details"]["field"] == "channel_id"
    assert int(refused[2]["Retry-After"]) >= 1
    assert mailbox.messages == [["ops@example.com"], ["ops@example.com"]]
