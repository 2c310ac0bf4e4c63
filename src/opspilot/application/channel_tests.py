"""How many test notifications a caller may have sent (issue #15 item 10).

The "test" action sends a real notification to a channel's target on demand; without a cap
a member could make OpsPilot mail (or POST to) an address as often as they like. Each
channel, and each project (so that making more channels does not raise the cap), has a
token bucket in the shared RateLimiter that refills over an hour.

A limiter that cannot answer fails this check closed (503), unlike the request rate limits:
a test notification is never urgent, and the cap is the only thing between a member and
the relay.
"""

from __future__ import annotations

import attrs

from opspilot.domain.errors import RateLimited
from opspilot.domain.ports import RateLimiter

HOUR = 3600.0


@attrs.frozen
class ChannelTestCap:
    """At most `per_channel` test sends an hour per channel and `per_project` per project
    (each a burst that refills evenly over the hour); 0 turns that cap off."""

    limiter: RateLimiter
    per_channel: int = 5
    per_project: int = 20

    async def take(self, project_id: str, channel_id: str) -> None:
        """Counts one test send; raises RateLimited (429, Retry-After) past either cap and
        ServiceUnavailable when the limiter cannot answer."""
        # The channel's bucket first: a send it refuses then costs the project nothing, so
        # one channel tested too often does not use up its project's other channels.
        buckets = (
            (f"channel-test:{project_id}:{channel_id}", self.per_channel, "channel"),
            (f"channel-test:{project_id}", self.per_project, "project"),
        )
        for key, per_hour, scope in buckets:
            if per_hour <= 0:
                continue
            decision = await self.limiter.hit(key, per_hour / HOUR, per_hour)
            if not decision.allowed:
                raise RateLimited(
                    f"at most {per_hour} test notifications an hour per {scope}",
                    retry_after=decision.retry_after, field="channel_id",
                )
