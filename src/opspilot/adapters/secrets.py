"""Server secrets: the key that seals cached principals (and, with `cryptography`, the
channel secrets' encryption), from `OPSPILOT_SECRET_KEY`."""

from __future__ import annotations

import hashlib
import hmac
import os


def secret_keys(setting: str | None) -> list[str]:
    """`OPSPILOT_SECRET_KEY`: comma-separated keys, the first one current."""
    return [k.strip() for k in (setting or "").split(",") if k.strip()]


def principal_seal_secret(setting: str | None) -> bytes:
    """Derived from the current secret key, so every replica configured alike trusts each
    other's cache entries. Without a key: random per process, which is safe (entries of
    other processes fail to verify and are looked up again) but shares no cache."""
    keys = secret_keys(setting)
    if not keys:
        return os.urandom(32)
    return hmac.new(keys[0].encode(), b"opspilot principal cache", hashlib.sha256).digest()
