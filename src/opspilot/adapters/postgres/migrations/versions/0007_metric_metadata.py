"""Metric metadata: what OTLP (data kind, description, unit) and remote-write (metadata) said
about each metric family of a project, the latest description winning; the Prometheus API's
/api/v1/metadata answers from it (ADR 0016).

Revision ID: 0007
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE metric_metadata (
    project_id text NOT NULL,
    metric_name text NOT NULL,
    metric_type text NOT NULL,
    help text NOT NULL DEFAULT '',
    unit text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, metric_name)
)""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS metric_metadata")
