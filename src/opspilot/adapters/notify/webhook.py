"""Webhook channels: a signed JSON POST.

The receiver can check that a request came from OpsPilot and is fresh:

    X-OpsPilot-Timestamp: <unix seconds>
    X-OpsPilot-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

(`verify_signature` below is the reference check.) Headers also carry the event and a
delivery id (`<incident id>:<event>`) that stays the same across retries, so a receiver can
drop duplicates.

`HttpTransport` owns the one `aiohttp.ClientSession` shared by the webhook and Slack
notifiers for their lifetime; its connector resolves names through the SSRF guard.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable, Mapping

import aiohttp
import orjson

from opspilot.adapters.notify.ssrf import GuardedResolver, SsrfGuard, TargetRefused
from opspilot.adapters.redaction import redact_urls
from opspilot.domain.alerts import Channel, Notification
from opspilot.domain.errors import DeliveryFailed

USER_AGENT = "OpsPilot-Alerts/0.1"
SIGNATURE_HEADER = "X-OpsPilot-Signature"
TIMESTAMP_HEADER = "X-OpsPilot-Timestamp"
RETRYABLE_STATUSES = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 300.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    material = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), material, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str, timestamp: str, body: bytes, signature: str,
    now: float | None = None, tolerance: float = 300.0,
) -> bool:
    """The receiver's check: a valid signature over a timestamp at most `tolerance` old."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


class HttpTransport:
    """POSTs JSON to guarded targets. Redirects are refused, not followed (a redirect could
    point anywhere); the timeout bounds the whole request."""

    def __init__(self, guard: SsrfGuard, timeout: float = 5.0) -> None:
        self._guard = guard
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._guard), use_dns_cache=False, limit=100
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,  # a proxy from the environment would bypass the guard
            )

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_json(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Raises DeliveryFailed: retryable for timeouts, connection errors, 5xx, 408/429;
        not retryable for refused targets, redirects and other 4xx."""
        if self._closed:
            raise DeliveryFailed("notifier is shut down", retryable=False)
        target = self._guard.check_url(url)
        await self.start()
        assert self._session is not None
        try:
            async with self._session.post(
                target, data=body, allow_redirects=False,
                headers={"Content-Type": "application/json", **headers},
            ) as response:
                await response.read()
                _raise_for(response)
        except DeliveryFailed:
            raise
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self._timeout:g}s", retryable=True) from None
        except aiohttp.ClientConnectorError as exc:
            refused = _refusal_in(exc)
            if refused is not None:
                raise refused from None
            raise DeliveryFailed(_connect_failure(exc), retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryFailed(redact_urls(f"{type(exc).__name__}: {exc}"),
                                 retryable=True) from None


def _connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, without the address it was made to (aiohttp's text quotes
    the resolved address, which the channel's owner is not to learn)."""
    error = exc.os_error
    why = os.strerror(error.errno) if error.errno else type(error).__name__
    return f"cannot connect to {exc.host}:{exc.port}: {why}"


def _refusal_in(exc: BaseException) -> DeliveryFailed | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DeliveryFailed):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _raise_for(response: aiohttp.ClientResponse) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise TargetRefused(f"HTTP {status}: redirects are not followed", status=status)
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    details: dict[str, object] = {"status": status}
    retry_after = _retry_after(response.headers.get("Retry-After"))
    if retryable and retry_after is not None:
        details["retry_after"] = retry_after
    raise DeliveryFailed(f"HTTP {status} {response.reason or ''}".strip(),
                         retryable=retryable, **details)


def _retry_after(value: str | None) -> float | None:
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value))) if value else None
    except ValueError:
        return None


class WebhookNotifier:
    def __init__(self, transport: HttpTransport, now: Callable[[], float] = time.time) -> None:
        self._transport = transport
        self._now = now

    async def send(self, channel: Channel, notification: Notification) -> None:
        body = orjson.dumps(notification.as_payload())
        timestamp = str(int(self._now()))
        headers = {
            TIMESTAMP_HEADER: timestamp,
            "X-OpsPilot-Event": notification.event,
            "X-OpsPilot-Delivery": f"{notification.incident_id or 'test'}:{notification.event}",
        }
        if channel.secret:
            headers[SIGNATURE_HEADER] = sign(channel.secret, timestamp, body)
        await self._transport.post_json(channel.target, body, headers)
