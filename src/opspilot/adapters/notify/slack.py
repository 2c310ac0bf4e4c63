"""Slack channels: a message to an incoming-webhook URL (`{"text", "blocks"}`).

`text` is the plain fallback Slack shows in notifications; `blocks` the formatted message.
The URL is the secret (Slack issues one per channel); it goes through the same SSRF guard
and HTTP transport as webhooks.
"""

from __future__ import annotations

from typing import Any

import orjson

from opspilot.adapters.notify.text import detail_lines, headline
from opspilot.adapters.notify.webhook import HttpTransport
from opspilot.domain.alerts import Channel, Notification

EMOJI = {"fired": ":rotating_light:", "resolved": ":white_check_mark:", "test": ":wave:"}


def slack_payload(notification: Notification, base_url: str = "") -> dict[str, Any]:
    title = headline(notification)
    emoji = EMOJI.get(notification.event, ":bell:")
    links = [
        f"<{base_url}{link}|{name}>" for name, link in sorted(notification.links.items())
    ]
    facts = detail_lines(notification, links=False)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *{_escape(title)}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape("\n".join(facts))}},
    ]
    if links:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": " · ".join(links)}
        ]})
    return {"text": title, "blocks": blocks}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackNotifier:
    def __init__(self, transport: HttpTransport, base_url: str = "") -> None:
        self._transport = transport
        self._base_url = base_url.rstrip("/")

    async def send(self, channel: Channel, notification: Notification) -> None:
        body = orjson.dumps(slack_payload(notification, self._base_url))
        await self._transport.post_json(channel.target, body, {})
