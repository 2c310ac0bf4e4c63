"""E-mail channels: a plain-text message through the configured SMTP relay.

smtplib runs in a worker thread (`asyncio.to_thread`), one connection per message: alert
mail is rare and a pooled SMTP connection would only add idle-timeout failures. The relay
is the operator's (settings), not the user's, so it needs no SSRF guard; the user only
chooses recipient addresses, and those only within the operator's recipients policy
(`OPSPILOT_EMAIL_ALLOWED_DOMAINS`), checked again here at every send.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from opspilot.adapters.notify.text import detail_lines, headline
from opspilot.domain.alerts import Channel, Notification
from opspilot.domain.errors import DeliveryFailed
from opspilot.domain.recipients import EmailDomains, recipients


def build_message(
    sender: str, recipients: list[str], notification: Notification, base_url: str = ""
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"[OpsPilot] {headline(notification)}"[:250]
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="opspilot")
    if notification.incident_id:
        message["X-OpsPilot-Incident"] = notification.incident_id
    lines = [headline(notification), "", *detail_lines(notification, base_url)]
    message.set_content("\n".join(lines))
    return message


class SmtpNotifier:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        timeout: float = 10.0,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        base_url: str = "",
        allowed: EmailDomains = EmailDomains(),
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout = timeout
        self._username = username
        self._password = password
        self._starttls = starttls
        self._base_url = base_url.rstrip("/")
        self._allowed = allowed

    async def send(self, channel: Channel, notification: Notification) -> None:
        wanted = recipients(channel.target)
        refused = self._allowed.refused(wanted)
        allowed = [a for a in wanted if a not in refused]
        if allowed:
            message = build_message(self._sender, allowed, notification, self._base_url)
            await asyncio.to_thread(self._send_sync, message, allowed)
        if refused:  # stored before the policy changed; the others got it, so no retry
            raise DeliveryFailed(
                f"not sent to {len(refused)} of {len(wanted)} recipients: outside "
                "OPSPILOT_EMAIL_ALLOWED_DOMAINS", retryable=False, refused=refused,
            )

    def _send_sync(self, message: EmailMessage, recipients: list[str]) -> None:
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password or "")
                refused = smtp.send_message(message, self._sender, recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryFailed(f"every recipient refused: {codes}",
                                 retryable=all(400 <= c < 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryFailed(f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}",
                                 retryable=400 <= exc.smtp_code < 500) from None
        except (smtplib.SMTPException, OSError) as exc:  # connect, timeout, disconnect
            raise DeliveryFailed(f"SMTP relay unavailable: {type(exc).__name__}: {exc}",
                                 retryable=True) from None
        if refused:
            # Some recipients got it; retrying would send the others a duplicate.
            raise DeliveryFailed(f"some recipients refused: {sorted(refused)}", retryable=False)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
