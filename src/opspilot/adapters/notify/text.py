"""Human-readable renderings of a notification, shared by the Slack and e-mail channels."""

from __future__ import annotations

from opspilot.domain.alerts import Notification

HEADLINES = {"fired": "FIRING", "resolved": "RESOLVED", "test": "TEST"}


def headline(notification: Notification) -> str:
    state = HEADLINES.get(notification.event, notification.event.upper())
    return f"[{state}] {notification.severity}: {notification.title}"


def detail_lines(
    notification: Notification, base_url: str = "", links: bool = True
) -> list[str]:
    lines = [f"When: {notification.at.isoformat()}"]
    if notification.value is not None:
        lines.append(f"Value: {notification.value:g}")
    if notification.incident_id:
        lines.append(f"Incident: {notification.incident_id}")
    lines.append(f"Project: {notification.project_id}")
    for name, link in sorted(notification.links.items()) if links else ():
        lines.append(f"{name.capitalize()}: {base_url}{link}")
    return lines
