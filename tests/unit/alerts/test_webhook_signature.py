"""`verify_signature`, the reference check a webhook receiver runs (adapters/notify/webhook.py
documents it): it accepts what OpsPilot signs and nothing else."""

from __future__ import annotations

import hashlib
import hmac

from opspilot.adapters.notify.webhook import sign, verify_signature

SECRET = "s3cret-s3cret-s3cret"
BODY = b'{"event":"fired"}'
NOW = 1_709_294_400.0
STAMP = str(int(NOW))


def test_a_signature_over_the_timestamp_and_raw_body_is_accepted() -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), STAMP.encode() + b"." + BODY,
                                    hashlib.sha256).hexdigest()
    assert sign(SECRET, STAMP, BODY) == expected
    assert verify_signature(SECRET, STAMP, BODY, expected, now=NOW + 299)


def test_another_body_secret_timestamp_or_age_is_refused() -> None:
    good = sign(SECRET, STAMP, BODY)
    assert not verify_signature(SECRET, STAMP, BODY + b" ", good, now=NOW)
    assert not verify_signature("another-secret-entirely", STAMP, BODY, good, now=NOW)
    assert not verify_signature(SECRET, str(int(NOW) + 1), BODY, good, now=NOW)
    assert not verify_signature(SECRET, STAMP, BODY, good, now=NOW + 301)  # replayed later
    assert not verify_signature(SECRET, STAMP, BODY, good, now=NOW - 301)  # from the future
    assert not verify_signature(SECRET, "yesterday", BODY, good, now=NOW)
