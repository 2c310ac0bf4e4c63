"""Hourly summaries on TimescaleDB too: the periods ingest touched, and no raw-data drop policy.

On TimescaleDB the raw points stay in the hypertable (its own compression, no blocks), but
the compaction job still writes `metric_summaries` (ADR 0017) so that summaries outlive the
values. `metric_pending_summaries` holds the (project, hour) pairs that ingest wrote into
since their summaries were last written; the write that adds points adds the pair in the
same transaction, so no point is missed by a summary (late points included). Plain
PostgreSQL keeps the table empty (compaction finds its work in the hot rows it moves).

The retention policy 0001 put on `metrics` is removed: it dropped raw chunks after 90 days
whatever the server's or a project's retention, and before their summaries existed. The
retention job (`Retention`: summaries first, per project) owns it now, as on plain
PostgreSQL. The compression policy stays.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PENDING = """
CREATE TABLE metric_pending_summaries (
    project_id text NOT NULL,
    period_start timestamptz NOT NULL,
    PRIMARY KEY (period_start, project_id)
)"""

# `metrics` is a hypertable of this schema (0001 made it one when the extension was usable).
HYPERTABLE = """
SELECT 1 FROM timescaledb_information.hypertables
WHERE hypertable_schema = current_schema() AND hypertable_name = 'metrics'"""


def _hypertable() -> bool:
    bind = op.get_bind()
    if not bind.exec_driver_sql(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").scalar():
        return False
    return bool(bind.exec_driver_sql(HYPERTABLE).scalar())


# Points written before this revision have no pairs: every hour they hold is summarised by
# the next compaction run (one pass over the hypertable, once).
SEED = """
INSERT INTO metric_pending_summaries (project_id, period_start)
SELECT DISTINCT project_id, date_bin(INTERVAL '1 hour', "timestamp", TIMESTAMPTZ 'epoch')
FROM metrics"""


def upgrade() -> None:
    op.execute(PENDING)
    if _hypertable():
        op.execute("SELECT remove_retention_policy('metrics', if_exists => true)")
        op.execute(SEED)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS metric_pending_summaries")
    if _hypertable():
        op.execute("SELECT add_retention_policy('metrics', INTERVAL '90 days',"
                   " if_not_exists => true)")
