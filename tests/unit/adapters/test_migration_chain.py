"""The migrations form one line: helpers add revisions in parallel, and two revisions on the
same parent would leave two heads, where `migrate` (upgrade to "head") refuses every
database. Caught here, without a server, before anything lands."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from opspilot.adapters.postgres.migrate import alembic_config


def test_the_migrations_have_one_head_and_no_branch() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1, scripts.get_heads()
    parents = [r.down_revision for r in scripts.walk_revisions()]
    assert len(parents) == len(set(map(str, parents))), "two revisions share a parent"
