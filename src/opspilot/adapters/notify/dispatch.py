"""`ChannelNotifier`: the Notifier port, sending through the adapter of each channel type."""

from __future__ import annotations

from collections.abc import AsyncIterator

from opspilot.adapters.notify.email import SmtpNotifier
from opspilot.adapters.notify.slack import SlackNotifier
from opspilot.adapters.notify.ssrf import Allowlist, SsrfGuard
from opspilot.adapters.notify.webhook import HttpTransport, WebhookNotifier
from opspilot.domain.alerts import Channel, ChannelType, Notification
from opspilot.domain.errors import DeliveryFailed
from opspilot.domain.ports import Notifier
from opspilot.domain.recipients import EmailDomains


class ChannelNotifier:
    """Implements Notifier. `start()` opens the HTTP session, `close()` closes it (once)."""

    def __init__(
        self, transport: HttpTransport, email: SmtpNotifier, base_url: str = ""
    ) -> None:
        self._transport = transport
        self._senders: dict[ChannelType, Notifier] = {
            ChannelType.WEBHOOK: WebhookNotifier(transport),
            ChannelType.SLACK: SlackNotifier(transport, base_url),
            ChannelType.EMAIL: email,
        }

    async def send(self, channel: Channel, notification: Notification) -> None:
        sender = self._senders.get(channel.type)
        if sender is None:
            raise DeliveryFailed(f"no sender for channel type {channel.type}", retryable=False)
        await sender.send(channel, notification)

    async def start(self) -> None:
        await self._transport.start()

    async def close(self) -> None:
        await self._transport.close()


def build_channel_notifier(
    allowlist: str,
    smtp_host: str,
    smtp_port: int,
    smtp_sender: str,
    *,
    http_timeout: float = 5.0,
    base_url: str = "",
    email_domains: str = "",
) -> ChannelNotifier:
    guard = SsrfGuard(Allowlist.parse(allowlist))
    email = SmtpNotifier(smtp_host, smtp_port, smtp_sender, base_url=base_url,
                         allowed=EmailDomains.parse(email_domains))
    return ChannelNotifier(HttpTransport(guard, http_timeout), email, base_url)


async def channel_notifier_resource(
    allowlist: str, smtp_host: str, smtp_port: int, smtp_sender: str, base_url: str = "",
    email_domains: str = "",
) -> AsyncIterator[ChannelNotifier]:
    """For the container: `providers.Resource(channel_notifier_resource, ...)`. `base_url`
    (the API's public URL) makes the incident links in messages absolute; `email_domains`
    is OPSPILOT_EMAIL_ALLOWED_DOMAINS."""
    notifier = build_channel_notifier(
        allowlist, smtp_host, smtp_port, smtp_sender, base_url=base_url,
        email_domains=email_domains,
    )
    await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.close()
