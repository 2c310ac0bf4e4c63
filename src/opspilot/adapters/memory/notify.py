"""A notifier that records what it was asked to send (the embedded default's channels)."""

from __future__ import annotations

import attrs

from opspilot.domain.alerts import Channel, Notification


@attrs.frozen
class Sent:
    channel: Channel
    notification: Notification


class RecordingNotifier:
    def __init__(self) -> None:
        self.sent: list[Sent] = []

    async def send(self, channel: Channel, notification: Notification) -> None:
        self.sent.append(Sent(channel, notification))
