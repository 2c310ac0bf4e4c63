"""Frame-of-reference value arrays for compacted blocks, and per-project metric retention.

`metric_blocks.v_o2` / `v_o4`: a block's values as integer offsets from `v_first` (the
same decimal scaling as the delta arrays), chosen by the compactor when the offsets fit a
type no wider than the deltas would (regular gauges: both int2). A value then decodes
without a running sum (`v_first + o` in a plain projection), so a percentile over whole
blocks reads the values without a window pass (ADR 0017, issue #19). Blocks written before
keep their delta arrays and still decode.

`projects.metric_values_days` / `metric_summary_days`: a project's own retention of raw
metric values and of hourly summaries (NULL: the server's settings). `metric_project_tiers`
records, per project, the time before which its raw values are gone (the read path's
"expired" boundary; `metric_tiers.values_before` stays the default for the others).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATEMENTS = (
    "ALTER TABLE metric_blocks ADD COLUMN v_o2 smallint[], ADD COLUMN v_o4 integer[]",
    "ALTER TABLE projects ADD COLUMN metric_values_days integer"
    " CHECK (metric_values_days > 0),"
    " ADD COLUMN metric_summary_days integer CHECK (metric_summary_days > 0)",
    "CREATE TABLE metric_project_tiers (project_id text PRIMARY KEY,"
    " values_before timestamptz NOT NULL)",
)


def _lz4() -> bool:
    found = op.get_bind().exec_driver_sql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    return bool(found)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
    for column in ("v_o2", "v_o4"):
        op.execute(f"ALTER TABLE metric_blocks ALTER COLUMN {column} SET STORAGE MAIN")
        if _lz4():
            op.execute(f"ALTER TABLE metric_blocks ALTER COLUMN {column} SET COMPRESSION lz4")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS metric_project_tiers")
    op.execute("ALTER TABLE projects DROP COLUMN IF EXISTS metric_values_days,"
               " DROP COLUMN IF EXISTS metric_summary_days")
    op.execute("ALTER TABLE metric_blocks DROP COLUMN IF EXISTS v_o2, DROP COLUMN IF EXISTS v_o4")
