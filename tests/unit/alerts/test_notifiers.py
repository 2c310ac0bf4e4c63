"""Notifiers against real local peers: an SMTP server (aiosmtpd) and HTTP receivers on
127.0.0.1, allow-listed for these tests."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from opspilot.adapters.notify.dispatch import ChannelNotifier, build_channel_notifier
from opspilot.adapters.notify.email import SmtpNotifier
from opspilot.adapters.notify.ssrf import Allowlist, SsrfGuard
from opspilot.adapters.notify.webhook import HttpTransport
from opspilot.application.alerting import RuleSpec
from opspilot.domain.alerts import Channel, ChannelType, Notification
from opspilot.domain.errors import DeliveryFailed
from opspilot.domain.recipients import EmailDomains
from tests.unit.alerts.harness import MINUTE, T0, Engine

P = "project-a"
SECRET = "s3cret-s3cret-s3cret"
SPIKE = [50.0] * 20 + [200.0] * 20  # 30 s apart: 200 from minute 10


class Receiver:
    """An HTTP peer recording every request; `script` gives the status of each answer."""

    def __init__(self, script: list[int] | None = None, delay: float = 0.0) -> None:
        self.script = list(script or [])
        self.delay = delay
        self.requests: list[tuple[dict[str, str], bytes, int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.script.pop(0) if self.script else 200
        self.requests.append((dict(request.headers), body, status))
        if self.delay:
            await asyncio.sleep(self.delay)
        if status in (301, 302, 307):
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status, text="ok" if status < 300 else "no")

    @property
    def delivered(self) -> list[bytes]:
        return [body for _, body, status in self.requests if 200 <= status < 300]


@pytest.fixture
async def http_peer(aiohttp_server: Any) -> Any:
    receivers: dict[str, Receiver] = {}
    app = web.Application()

    async def route(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        receivers.setdefault(name, Receiver())
        return await receivers[name].handle(request)

    app.router.add_post("/{name}", route)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    return base, receivers


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@pytest.fixture
async def notifier(smtp: tuple[Mailbox, int]) -> AsyncIterator[ChannelNotifier]:
    built = build_channel_notifier("127.0.0.1", "127.0.0.1", smtp[1], "alerts@opspilot.test")
    await built.start()
    yield built
    await built.close()


def _signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


async def _engine_with(notifier: Any, targets: list[tuple[str, ChannelType, str, str | None]]
                       ) -> tuple[Engine, list[str]]:
    engine = Engine(notifier=notifier)
    await engine.write(P, "latency", SPIKE)
    ids = []
    for name, kind, target, secret in targets:
        channel = await engine.alerts.create_channel(P, name, kind, target, secret)
        ids.append(channel.id)
    await engine.alerts.create_rule(P, RuleSpec(
        name="latency high", metric_name="latency", service_name="api", threshold=100.0,
        channels=tuple(ids)))
    return engine, ids


async def _run_until_fired(engine: Engine) -> Any:
    for minute in range(1, 16):
        await engine.evaluate_at(T0 + minute * MINUTE)
    (incident,) = await engine.incidents.list_incidents(P)
    return incident


async def test_webhook_slack_and_email_each_receive_the_incident(
    http_peer: Any, smtp: tuple[Mailbox, int], notifier: ChannelNotifier
) -> None:
    base, receivers = http_peer
    mailbox, _ = smtp
    engine, _ = await _engine_with(notifier, [
        ("hook", ChannelType.WEBHOOK, f"{base}/hook", SECRET),
        ("slack", ChannelType.SLACK, f"{base}/slack", None),
        ("mail", ChannelType.EMAIL, "oncall@example.com, lead@example.com", None),
    ])
    incident = await _run_until_fired(engine)

    (headers, body, _), = receivers["hook"].requests
    timestamp = headers["X-OpsPilot-Timestamp"]
    assert headers["X-OpsPilot-Signature"] == _signature(SECRET, timestamp, body)
    assert headers["X-OpsPilot-Signature"] != _signature("wrong-secret-wrong", timestamp, body)
    assert abs(int(timestamp) - time.time()) < 60
    assert headers["X-OpsPilot-Delivery"] == f"{incident.id}:fired"
    import orjson

    payload = orjson.loads(body)
    assert payload["event"] == "fired" and payload["incident_id"] == incident.id
    assert payload["links"]["metrics"].startswith("/api/metrics/query?")

    (_, slack_body, _), = receivers["slack"].requests
    slack = orjson.loads(slack_body)
    assert slack["text"].startswith("[FIRING] warning: latency high")
    assert any(b["type"] == "section" for b in slack["blocks"])
    assert "X-OpsPilot-Signature" not in receivers["slack"].requests[0][0]

    (recipients, raw), = mailbox.messages
    mail = message_from_bytes(raw)
    assert recipients == ["oncall@example.com", "lead@example.com"]
    assert mail["Subject"].startswith("[OpsPilot] [FIRING] warning: latency high")
    assert mail["From"] == "alerts@opspilot.test"
    assert incident.id in mail.get_payload()
    attempts = await engine.incidents.deliveries(incident.id)
    assert [a.ok for a in attempts] == [True, True, True]


async def test_a_receiver_failing_twice_gets_the_notification_once_after_three_attempts(
    http_peer: Any, notifier: ChannelNotifier
) -> None:
    base, receivers = http_peer
    receivers["flaky"] = Receiver(script=[500, 500])
    engine, (channel_id,) = await _engine_with(notifier, [
        ("flaky", ChannelType.WEBHOOK, f"{base}/flaky", SECRET)])
    incident = await _run_until_fired(engine)
    assert len(await engine.incidents.list_incidents(P)) == 1
    assert [status for _, _, status in receivers["flaky"].requests] == [500, 500, 200]
    assert len(receivers["flaky"].delivered) == 1
    attempts = await engine.incidents.deliveries(incident.id)
    assert [(a.channel_id, a.attempt, a.ok) for a in attempts] == [
        (channel_id, 1, False), (channel_id, 2, False), (channel_id, 3, True)]
    assert attempts[0].detail.startswith("HTTP 500")
    assert engine.sleeps.delays == [0.01, 0.02]  # capped exponential backoff between tries


async def test_a_client_error_is_not_retried(http_peer: Any, notifier: ChannelNotifier) -> None:
    base, receivers = http_peer
    receivers["gone"] = Receiver(script=[410])
    engine, _ = await _engine_with(notifier, [("gone", ChannelType.WEBHOOK, f"{base}/gone", None)])
    incident = await _run_until_fired(engine)
    (attempt,) = await engine.incidents.deliveries(incident.id)
    assert not attempt.ok and attempt.detail.startswith("HTTP 410")
    assert len(receivers["gone"].requests) == 1


async def test_redirects_are_not_followed(http_peer: Any, notifier: ChannelNotifier) -> None:
    base, receivers = http_peer
    receivers["moved"] = Receiver(script=[302])
    engine, _ = await _engine_with(notifier, [
        ("moved", ChannelType.WEBHOOK, f"{base}/moved", None)])
    incident = await _run_until_fired(engine)
    (attempt,) = await engine.incidents.deliveries(incident.id)
    assert not attempt.ok and "redirect" in attempt.detail
    assert list(receivers) == ["moved"]  # nothing asked for /elsewhere


async def test_localhost_is_refused_without_the_allowlist(http_peer: Any, smtp: Any) -> None:
    base, receivers = http_peer
    port = base.rsplit(":", 1)[1]
    strict = build_channel_notifier("", "127.0.0.1", smtp[1], "alerts@opspilot.test")
    try:
        engine, _ = await _engine_with(strict, [
            ("local", ChannelType.WEBHOOK, f"http://localhost:{port}/local", None),
            ("literal", ChannelType.WEBHOOK, f"http://0x7f.1:{port}/literal", None)])
        incident = await _run_until_fired(engine)
    finally:
        await strict.close()
    attempts = await engine.incidents.deliveries(incident.id)
    assert len(attempts) == 2 and not any(a.ok for a in attempts)
    by_channel = {a.channel_id: a.detail for a in attempts}
    literal, named = by_channel["id-2"], by_channel["id-1"]
    assert "'0x7f.1' is loopback" in literal  # the caller's own spelling, read as an address
    # a name's resolution is the server's to know: neither the address nor its kind is said
    assert "'localhost' resolves to an address notifications may not reach" in named
    assert "127.0.0.1" not in named and "loopback" not in named
    assert receivers == {}


async def test_a_slow_receiver_times_out_as_retryable(http_peer: Any) -> None:
    base, receivers = http_peer
    receivers["slow"] = Receiver(delay=2.0)
    transport = HttpTransport(SsrfGuard(Allowlist.parse("127.0.0.1")), timeout=0.2)
    notifier = ChannelNotifier(transport, SmtpNotifier("127.0.0.1", 1, "a@b"))
    channel = Channel("c1", P, "slow", ChannelType.WEBHOOK, f"{base}/slow")
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await notifier.send(channel, _test_notification())
    finally:
        await notifier.close()
    assert caught.value.retryable is True and "no answer" in caught.value.message


async def test_smtp_refusal_is_permanent_and_an_absent_relay_retryable(
    smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    mailbox.refuse.add("nobody@example.com")
    channel = Channel("c1", P, "mail", ChannelType.EMAIL, "nobody@example.com")
    with pytest.raises(DeliveryFailed) as refused:
        await SmtpNotifier("127.0.0.1", port, "alerts@opspilot.test").send(
            channel, _test_notification())
    assert refused.value.retryable is False and "550" in refused.value.message
    with pytest.raises(DeliveryFailed) as absent:
        await SmtpNotifier("127.0.0.1", _free_port(), "alerts@opspilot.test", timeout=2).send(
            channel, _test_notification())
    assert absent.value.retryable is True
    assert mailbox.messages == []


async def test_channel_test_reports_the_outcome(http_peer: Any, notifier: ChannelNotifier) -> None:
    base, receivers = http_peer
    engine, _ = await _engine_with(notifier, [])
    good = await engine.alerts.create_channel(P, "good", ChannelType.WEBHOOK, f"{base}/t", SECRET)
    bad = await engine.alerts.create_channel(P, "bad", ChannelType.WEBHOOK,
                                             "http://169.254.169.254/latest")
    ok = await engine.alerts.test_channel(P, good.id)
    refused = await engine.alerts.test_channel(P, bad.id)
    assert ok.ok and ok.detail == "delivered"
    assert not refused.ok and "link-local" in refused.detail
    import orjson

    assert orjson.loads(receivers["t"].requests[0][1])["event"] == "test"


def _test_notification() -> Notification:
    return Notification("test", P, None, None, "hello", "info", None, T0)


async def test_email_sends_only_to_the_allowed_domains(smtp: tuple[Mailbox, int]) -> None:
    """A channel stored before OPSPILOT_EMAIL_ALLOWED_DOMAINS was narrowed: the allowed
    recipients get the message, the others do not, and the attempt says so without a retry."""
    mailbox, port = smtp
    channel = Channel("c1", P, "mail", ChannelType.EMAIL,
                      "ops@example.com, oncall@team.example.com, someone@elsewhere.net")
    notifier = SmtpNotifier("127.0.0.1", port, "alerts@opspilot.test",
                            allowed=EmailDomains.parse("example.com, *.example.com"))
    with pytest.raises(DeliveryFailed) as partly:
        await notifier.send(channel, _test_notification())
    assert partly.value.retryable is False
    assert "not sent to 1 of 3 recipients" in partly.value.message
    assert [sorted(to) for to, _ in mailbox.messages] == [
        ["oncall@team.example.com", "ops@example.com"]]
    only_outside = Channel("c2", P, "mail", ChannelType.EMAIL, "x@elsewhere.net")
    with pytest.raises(DeliveryFailed):
        await notifier.send(only_outside, _test_notification())
    assert len(mailbox.messages) == 1  # nothing sent at all


async def test_a_refused_connection_does_not_name_the_resolved_address() -> None:
    """`localhost` is allow-listed by name; the failure says host and port as given, never
    the address the name resolved to (aiohttp's own text quotes it)."""
    transport = HttpTransport(SsrfGuard(Allowlist.parse("localhost")), timeout=5)
    notifier = ChannelNotifier(transport, SmtpNotifier("127.0.0.1", 1, "a@b"))
    channel = Channel("c1", P, "closed", ChannelType.WEBHOOK, f"http://localhost:{_free_port()}/x")
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await notifier.send(channel, _test_notification())
    finally:
        await notifier.close()
    assert caught.value.retryable is True
    assert caught.value.message.startswith("cannot connect to localhost:")
    assert "127.0.0.1" not in caught.value.message and "::1" not in caught.value.message
