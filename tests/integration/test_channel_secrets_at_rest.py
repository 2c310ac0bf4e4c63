"""Channel secrets on the real PostgreSQL: what a database dump shows (`pg_dump | grep`),
key rotation with `reseal_all`, rows written before encryption."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from opspilot.adapters.secrets import FernetSecretBox
from opspilot.domain.alerts import Channel, ChannelType
from opspilot.domain.errors import ServiceUnavailable
from tests.contract.conftest import fresh_database

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SECRETS = ("TOKENAAA111", "HMACSECRETBBB222", "SLACKCCC333", "LEGACYDDD444")


def _pg_dump() -> str:
    for candidate in (shutil.which("pg_dump"), "/usr/lib/postgresql/15/bin/pg_dump"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("pg_dump not found (PostgreSQL 15 client, installed by scripts/services)")
    raise AssertionError


def _dump(db: object) -> str:
    url, schema = db._dsn, db.schema  # type: ignore[attr-defined]
    done = subprocess.run([_pg_dump(), "-d", url, "-n", schema, "--data-only"],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def _channels() -> list[Channel]:
    return [
        Channel("c-hook", "p1", "hook", ChannelType.WEBHOOK,
                "https://hooks.example.com/in?token=TOKENAAA111", "HMACSECRETBBB222", T0),
        Channel("c-slack", "p1", "slack", ChannelType.SLACK,
                "https://hooks.slack.com/services/T0/B0/SLACKCCC333", None, T0),
        Channel("c-mail", "p1", "mail", ChannelType.EMAIL, "oncall-visible@example.com", None,
                T0),
    ]


async def test_a_database_dump_shows_no_channel_secret_and_rotation_reseals() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    async with fresh_database(secret_box=FernetSecretBox([old])) as db:
        store = db.channel_store
        for channel in _channels():
            await store.save_channel(channel)
        assert await store.list_channels("p1") == sorted(_channels(), key=lambda c: c.name)
        async with db.connection() as conn:  # as a row from before encryption would be
            await conn.execute(
                "INSERT INTO channels (id, project_id, name, type, target, secret, created_at)"
                " VALUES ('c-old', 'p1', 'old', 'webhook', $1, NULL, $2)",
                "https://legacy.example.com/x?k=LEGACYDDD444", T0)
        dump = _dump(db)
        assert "oncall-visible@example.com" in dump  # the dump does hold the table's rows
        assert [s for s in SECRETS[:3] if s in dump] == []
        assert "LEGACYDDD444" in dump

        db.secret_box = FernetSecretBox([new, old])  # new key first, old still readable
        assert await store.reseal_all() == 3  # both sealed rows re-keyed, the legacy one sealed
        dump = _dump(db)
        assert [s for s in SECRETS if s in dump] == []
        db.secret_box = FernetSecretBox([new])  # the old key is no longer needed
        channels = {c.id: c for c in await store.list_channels("p1")}
        assert channels["c-hook"].secret == "HMACSECRETBBB222"
        assert channels["c-old"].target.endswith("LEGACYDDD444")
        db.secret_box = FernetSecretBox([old])  # nor is it enough any more
        with pytest.raises(ServiceUnavailable):
            await store.get_channel("p1", "c-slack")
