"""Accounts: user e-mails unique, site admins, roles in memberships, named and expiring keys
and tokens (rotation grace, last use), and the audit log of credential changes.

Existing memberships become `owner` (each was its project's only user), existing keys and
tokens are named `default` and never expire, as before.

Revision ID: 0002_accounts
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002_accounts"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE users ADD COLUMN admin boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX ux_users_name ON users (name);
ALTER TABLE memberships ADD COLUMN role text NOT NULL DEFAULT 'owner';
CREATE INDEX ix_memberships_project_id ON memberships (project_id);
ALTER TABLE api_keys ADD COLUMN name text NOT NULL DEFAULT 'default';
ALTER TABLE api_keys ADD COLUMN scope text NOT NULL DEFAULT 'ingest';
ALTER TABLE api_keys ADD COLUMN prefix text NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;
ALTER TABLE tokens ADD COLUMN name text NOT NULL DEFAULT 'default';
ALTER TABLE tokens ADD COLUMN prefix text NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN expires_at timestamptz;
CREATE TABLE audit_log (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    id text PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    project_id text,
    target text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ix_audit_log_project_at ON audit_log (project_id, at DESC, seq DESC);
"""

DOWNGRADE = """
DROP TABLE IF EXISTS audit_log;
ALTER TABLE tokens DROP COLUMN expires_at, DROP COLUMN prefix, DROP COLUMN name;
ALTER TABLE api_keys DROP COLUMN last_used_at, DROP COLUMN expires_at, DROP COLUMN prefix,
    DROP COLUMN scope, DROP COLUMN name;
DROP INDEX IF EXISTS ix_memberships_project_id;
ALTER TABLE memberships DROP COLUMN role;
DROP INDEX IF EXISTS ux_users_name;
ALTER TABLE users DROP COLUMN admin;
"""


def _run(script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _run(UPGRADE)


def downgrade() -> None:
    _run(DOWNGRADE)
