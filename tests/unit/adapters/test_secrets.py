"""Channel secrets at rest (Fernet, key rotation) and secrets kept out of log lines."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet

from opspilot.adapters.redaction import RedactingFormatter, redact_urls
from opspilot.adapters.secrets import (
    SEALED_PREFIX,
    FernetSecretBox,
    MissingSecretBox,
    principal_seal_secret,
    secret_box,
)
from opspilot.domain.alerts import Channel, ChannelType
from opspilot.domain.errors import ServiceUnavailable

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"


def _key() -> str:
    return Fernet.generate_key().decode()


def test_a_sealed_secret_is_opaque_and_opens_with_the_key() -> None:
    box = FernetSecretBox([_key()])
    sealed = box.seal(SLACK)
    assert sealed.startswith(SEALED_PREFIX) and "XXXXSECRETXXXX" not in sealed
    assert box.open(sealed) == SLACK
    assert box.seal(SLACK) != sealed  # a fresh IV each time
    assert box.open("https://legacy.example/plain") == "https://legacy.example/plain"


def test_rotation_keeps_old_values_readable_and_reseals_them_under_the_new_key() -> None:
    old, new = _key(), _key()
    sealed_old = FernetSecretBox([old]).seal("s3cret")
    both = FernetSecretBox([new, old])
    assert both.open(sealed_old) == "s3cret"
    resealed = both.reseal(sealed_old)
    assert FernetSecretBox([new]).open(resealed) == "s3cret"
    with pytest.raises(ServiceUnavailable):
        FernetSecretBox([new]).open(sealed_old)  # the old key is needed until resealed
    assert FernetSecretBox([new]).open(both.reseal("plain")) == "plain"


def test_without_a_key_nothing_secret_is_stored_in_the_clear() -> None:
    box = secret_box(None)
    assert isinstance(box, MissingSecretBox)
    with pytest.raises(ServiceUnavailable) as refused:
        box.seal("s3cret")
    assert "OPSPILOT_SECRET_KEY" in refused.value.message
    with pytest.raises(ServiceUnavailable):
        box.open(FernetSecretBox([_key()]).seal("x"))


def test_a_key_that_is_not_a_fernet_key_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="Fernet key"):
        secret_box("not-a-key")


def test_the_principal_seal_key_is_shared_by_equal_settings_only() -> None:
    key = _key()
    assert principal_seal_secret(key) == principal_seal_secret(f"{key},{_key()}")
    assert principal_seal_secret(key) != principal_seal_secret(_key())
    assert principal_seal_secret(None) != principal_seal_secret(None)  # random per process


@pytest.mark.parametrize(("text", "shown"), [
    (f"POST {SLACK} failed", "POST https://hooks.slack.com/… failed"),
    ("https://user:pw@hooks.example.com:8443/x?token=abc", "https://hooks.example.com:8443/…"),
    ("url='https://h.example/a?b=c'", "url='https://h.example/…'"),
    ("no url here", "no url here"),
    ("https://h.example/", "https://h.example/"),
])
def test_urls_lose_credentials_path_and_query(text: str, shown: str) -> None:
    assert redact_urls(text) == shown


def test_log_lines_and_channel_reprs_carry_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    channel = Channel("c1", "p1", "ops", ChannelType.WEBHOOK, SLACK, secret="hmac-key-123456")
    assert "XXXXSECRETXXXX" not in repr(channel) and "hmac-key" not in repr(channel)
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "delivery to %s failed: %s",
                               (channel, f"ClientResponseError url={SLACK}"), None)
    try:
        raise RuntimeError(f"while posting {SLACK}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    line = RedactingFormatter("%(message)s").format(record)
    assert "XXXXSECRETXXXX" not in line and "hmac-key" not in line
    assert "hooks.slack.com" in line
