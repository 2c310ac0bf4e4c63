"""`GuardedTargets`: the ChannelTargets port, refusing at a channel's creation what the
notifier would refuse at every send (ADR 0014, issue #15 items 10 and 12).

Webhook and Slack URLs go through the same SSRF guard as deliveries (scheme, credentials,
literal addresses, and every address the host name resolves to now); e-mail recipients
through the recipients policy. The reasons never quote a resolved address.
"""

from __future__ import annotations

import asyncio

from opspilot.adapters.notify.ssrf import Allowlist, SsrfGuard, TargetRefused
from opspilot.domain.alerts import ChannelType
from opspilot.domain.errors import DeliveryFailed
from opspilot.domain.recipients import EmailDomains, recipients

# A creation waits at most this long for DNS; a name still unresolved is left to the
# send-time guard (as one that does not resolve at all is).
RESOLVE_SECONDS = 3.0


class GuardedTargets:
    def __init__(self, guard: SsrfGuard, email_domains: EmailDomains,
                 resolve_seconds: float = RESOLVE_SECONDS) -> None:
        self._guard = guard
        self._email_domains = email_domains
        self._resolve_seconds = resolve_seconds

    async def refusal(self, channel_type: ChannelType, target: str) -> str | None:
        if channel_type is ChannelType.EMAIL:
            return self._email_refusal(target)
        try:
            async with asyncio.timeout(self._resolve_seconds):
                await self._guard.check(target)
        except TargetRefused as exc:
            return exc.message
        except (DeliveryFailed, TimeoutError):  # does not resolve now: delivery retries it
            return None
        return None

    def _email_refusal(self, target: str) -> str | None:
        refused = self._email_domains.refused(recipients(target))
        if not refused:
            return None
        return (f"{', '.join(refused)}: not in the allowed recipient domains "
                f"(OPSPILOT_EMAIL_ALLOWED_DOMAINS: {self._email_domains.describe()})")


def guarded_targets(allowlist: str, email_domains: str) -> GuardedTargets:
    """For the container: the settings' allow-list and recipients policy."""
    return GuardedTargets(SsrfGuard(Allowlist.parse(allowlist)), EmailDomains.parse(email_domains))
