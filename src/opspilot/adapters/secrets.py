"""Server secrets from `OPSPILOT_SECRET_KEY`: the key that seals cached principals, and the
Fernet keys (MultiFernet: the first encrypts, all decrypt) that encrypt channel secrets at
rest. `cryptography` does the cryptography (AES-128-CBC + HMAC-SHA256, versioned tokens)."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from opspilot.domain.errors import ServiceUnavailable

SEALED_PREFIX = "fernet:"


def secret_keys(setting: str | None) -> list[str]:
    """`OPSPILOT_SECRET_KEY`: comma-separated keys, the first one current."""
    return [k.strip() for k in (setting or "").split(",") if k.strip()]


def new_secret_key() -> str:
    return Fernet.generate_key().decode()


def principal_seal_secret(setting: str | None) -> bytes:
    """Derived from the current secret key, so every replica configured alike trusts each
    other's cache entries. Without a key: random per process, which is safe (entries of
    other processes fail to verify and are looked up again) but shares no cache."""
    keys = secret_keys(setting)
    if not keys:
        return os.urandom(32)
    return hmac.new(keys[0].encode(), b"opspilot principal cache", hashlib.sha256).digest()


class FernetSecretBox:
    """Implements SecretBox with MultiFernet. A key that is not a Fernet key (32 url-safe
    base64 bytes) is refused at start-up, not at the first channel."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one key")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError) as exc:
            raise ValueError(
                "OPSPILOT_SECRET_KEY: each comma-separated key must be a Fernet key "
                "(`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)") from exc

    def seal(self, plaintext: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(SEALED_PREFIX):
            return stored  # written before encryption; `opspilot secrets rotate` seals it
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX):].encode()).decode()
        except InvalidToken:
            raise ServiceUnavailable("a stored secret does not decrypt with any key of "
                                     "OPSPILOT_SECRET_KEY", retry_after=60.0) from None

    def reseal(self, stored: str) -> str:
        if not stored.startswith(SEALED_PREFIX):
            return self.seal(stored)
        try:
            token = self._fernet.rotate(stored[len(SEALED_PREFIX):].encode())
        except InvalidToken:
            raise ServiceUnavailable("a stored secret does not decrypt with any key of "
                                     "OPSPILOT_SECRET_KEY", retry_after=60.0) from None
        return SEALED_PREFIX + token.decode()


class MissingSecretBox:
    """No key configured: nothing secret can be stored or read back (503 naming the
    setting), rather than stored in the clear."""

    def seal(self, plaintext: str) -> str:
        raise self._refusal()

    def open(self, stored: str) -> str:
        if stored.startswith(SEALED_PREFIX):
            raise self._refusal()
        return stored

    def reseal(self, stored: str) -> str:
        raise self._refusal()

    @staticmethod
    def _refusal() -> ServiceUnavailable:
        return ServiceUnavailable("channel secrets are encrypted at rest: set "
                                  "OPSPILOT_SECRET_KEY (see docs/security.md)",
                                  retry_after=60.0, setting="OPSPILOT_SECRET_KEY")


def secret_box(setting: str | None) -> FernetSecretBox | MissingSecretBox:
    keys = secret_keys(setting)
    return FernetSecretBox(keys) if keys else MissingSecretBox()
