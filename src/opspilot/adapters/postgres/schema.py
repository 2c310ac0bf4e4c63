"""The PostgreSQL schema as SQLAlchemy Core metadata: the target of migrations.

Migrations (migrations/versions) create it; a test compares a migrated database with this
metadata so the two cannot drift. At run time the adapters use asyncpg with hand-written
SQL and never import this module.

Ids are `text`: the ports' ids are opaque strings (uuid4 text from the id generator, but
tests, fixtures and imports may use others). There are no foreign keys to `projects`: every
row carries its project id and every query filters on it, and the hot tables (`metrics`,
`log_metadata`) would pay a trigger per COPY'd row for a check the ingest path has already
made (the API key names the project).

`metrics` and `log_metadata` are range-partitioned by `timestamp` (daily partitions plus a
DEFAULT one, see partitions.py) on plain PostgreSQL, or hypertables with TimescaleDB.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData()
TS = sa.TIMESTAMP(timezone=True)
NOW = sa.text("now()")

projects = sa.Table(
    "projects", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", TS, nullable=False),
    # migration 0004: the project's own metric retention (NULL: the server's settings)
    sa.Column("metric_values_days", sa.Integer, sa.CheckConstraint("metric_values_days > 0")),
    sa.Column("metric_summary_days", sa.Integer, sa.CheckConstraint("metric_summary_days > 0")),
)

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),  # the e-mail address
    sa.Column("created_at", TS, nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ux_users_name", "name", unique=True),
)

memberships = sa.Table(
    "memberships", metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("project_id", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False, server_default="owner"),
    sa.Index("ix_memberships_project_id", "project_id"),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("project_id", sa.Text, nullable=False, index=True),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),  # SHA-256 hex only
    sa.Column("created_at", TS, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("name", sa.Text, nullable=False, server_default="default"),
    sa.Column("scope", sa.Text, nullable=False, server_default="ingest"),
    sa.Column("prefix", sa.Text, nullable=False, server_default=""),
    sa.Column("expires_at", TS),  # a rotated key's end of grace
    sa.Column("last_used_at", TS),
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False, index=True),
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),  # SHA-256 hex only
    sa.Column("created_at", TS, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("name", sa.Text, nullable=False, server_default="default"),
    sa.Column("prefix", sa.Text, nullable=False, server_default=""),
    sa.Column("expires_at", TS),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False),  # ties in `at`
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("at", TS, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("project_id", sa.Text),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("details", pg.JSONB, nullable=False, server_default=sa.text("'{}'")),
    sa.Index("ix_audit_log_project_at", "project_id", sa.text("at DESC"), sa.text("seq DESC")),
)

metrics = sa.Table(
    "metrics", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("timestamp", TS, nullable=False),
    sa.Column("metric_name", sa.String(100), nullable=False),
    sa.Column("metric_value", sa.Float(53), nullable=False),
    sa.Column("service_name", sa.String(100)),
    sa.Column("tags", pg.JSONB),
    sa.Column("created_at", TS, server_default=NOW),
    # Every read names one series, so name comes before time (see ADR 0004).
    sa.Index("idx_metrics_project_name_time", "project_id", "metric_name",
             sa.text("timestamp DESC")),
    sa.Index("idx_metrics_service", "project_id", "service_name", sa.text("timestamp DESC")),
    sa.Index("idx_metrics_tags", "tags", postgresql_using="gin",
             postgresql_ops={"tags": "jsonb_path_ops"}),
    # finds the closed hours still holding hot points (the compactor), nearly free on COPY
    sa.Index("idx_metrics_time_brin", "timestamp", postgresql_using="brin"),
    postgresql_partition_by="RANGE (timestamp)",
)

# What the ingest protocols said about each metric family (migration 0007): the Prometheus
# API's /api/v1/metadata answers from it.
metric_metadata = sa.Table(
    "metric_metadata", metadata,
    sa.Column("project_id", sa.Text, primary_key=True),
    sa.Column("metric_name", sa.Text, primary_key=True),
    sa.Column("metric_type", sa.Text, nullable=False),
    sa.Column("help", sa.Text, nullable=False, server_default=""),
    sa.Column("unit", sa.Text, nullable=False, server_default=""),
    sa.Column("updated_at", TS, nullable=False, server_default=sa.text("now()")),
)

# The compacted tier (migration 0003, ADR 0017): series dictionary, blocks, summaries.
metric_series = sa.Table(
    "metric_series", metadata,
    sa.Column("series_id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("metric_name", sa.String(100), nullable=False),
    sa.Column("service_name", sa.String(100), nullable=False, server_default=""),
    sa.Column("tags", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Index("idx_metric_series_key", "project_id", "metric_name", "service_name",
             sa.text("md5(tags::text)"), unique=True),
)

metric_blocks = sa.Table(
    "metric_blocks", metadata,
    sa.Column("series_id", sa.BigInteger, primary_key=True),
    sa.Column("period_start", TS, primary_key=True),
    sa.Column("first_ts", TS, nullable=False),
    sa.Column("ts_d4", pg.ARRAY(sa.Integer)),
    sa.Column("ts_o8", pg.ARRAY(sa.BigInteger)),
    sa.Column("v_first", sa.BigInteger),
    sa.Column("v_div", sa.Float(53)),
    sa.Column("v_d2", pg.ARRAY(sa.SmallInteger)),
    sa.Column("v_d4", pg.ARRAY(sa.Integer)),
    sa.Column("v_f8", pg.ARRAY(sa.Float(53))),
    sa.Column("v_o2", pg.ARRAY(sa.SmallInteger)),  # migration 0004: offsets from v_first
    sa.Column("v_o4", pg.ARRAY(sa.Integer)),
)

metric_summaries = sa.Table(
    "metric_summaries", metadata,
    sa.Column("series_id", sa.BigInteger, primary_key=True),
    sa.Column("period_start", TS, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("sum", sa.Float(53), nullable=False),
    sa.Column("min", sa.Float(53), nullable=False),
    sa.Column("max", sa.Float(53), nullable=False),
    sa.Column("sketch_keys", pg.ARRAY(sa.Integer), nullable=False),
    sa.Column("sketch_counts", pg.ARRAY(sa.Integer), nullable=False),
)

metric_tiers = sa.Table(
    "metric_tiers", metadata,
    sa.Column("id", sa.Boolean, primary_key=True, server_default=sa.true()),
    sa.Column("values_before", TS, nullable=False, server_default=sa.text("'-infinity'")),
    sa.CheckConstraint("id", name="metric_tiers_id_check"),
)

# Per project (migration 0004): its raw values are gone before `values_before`.
metric_project_tiers = sa.Table(
    "metric_project_tiers", metadata,
    sa.Column("project_id", sa.Text, primary_key=True),
    sa.Column("values_before", TS, nullable=False),
)

# TimescaleDB (migration 0008): the (project, hour) pairs whose summaries ingest changed.
metric_pending_summaries = sa.Table(
    "metric_pending_summaries", metadata,
    sa.Column("project_id", sa.Text, primary_key=True),
    sa.Column("period_start", TS, primary_key=True),
)

log_metadata = sa.Table(
    "log_metadata", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("log_id", sa.String(100), nullable=False),
    sa.Column("timestamp", TS, nullable=False),
    sa.Column("level", sa.String(10), nullable=False),
    sa.Column("service_name", sa.String(100)),
    sa.Column("created_at", TS, server_default=NOW),
    # A partitioned table's primary key must include the partition key.
    sa.PrimaryKeyConstraint("id", "timestamp", name="log_metadata_pkey"),
    sa.Index("idx_log_metadata_project_time", "project_id", sa.text("timestamp DESC")),
    sa.Index("idx_log_metadata_level", "project_id", "level", sa.text("timestamp DESC")),
    postgresql_partition_by="RANGE (timestamp)",
)

ingest_inbox = sa.Table(
    "ingest_inbox", metadata,
    sa.Column("message_id", sa.Text, primary_key=True),
    sa.Column("stream", sa.Text, nullable=False),
    sa.Column("processed_at", TS, nullable=False, server_default=NOW),
    sa.Index("idx_ingest_inbox_processed", "processed_at"),
)

alert_rules = sa.Table(
    "alert_rules", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("metric_name", sa.String(100), nullable=False),
    sa.Column("window", sa.Interval, nullable=False),
    sa.Column("service_name", sa.String(100)),
    sa.Column("tags", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("aggregation", sa.Text, nullable=False),
    sa.Column("comparator", sa.Text, nullable=False),
    sa.Column("threshold", sa.Float(53), nullable=False),
    sa.Column("for_duration", sa.Interval, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("channels", pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", TS),
    sa.Column("updated_at", TS),
    sa.Index("idx_alert_rules_project", "project_id"),
    sa.Index("idx_alert_rules_enabled", "id", postgresql_where=sa.text("enabled")),
)

rule_states = sa.Table(
    "rule_states", metadata,
    sa.Column("rule_id", sa.Text, primary_key=True),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("since", TS),
    sa.Column("incident_id", sa.Text),
    sa.Column("last_value", sa.Float(53)),
    sa.Column("last_evaluated", TS),
)

channels = sa.Table(
    "channels", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("secret", sa.Text),
    sa.Column("created_at", TS),
    sa.Index("idx_channels_project", "project_id"),
)

incidents = sa.Table(
    "incidents", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("rule_id", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("timeline", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("values", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("links", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("acknowledged_at", TS),
    sa.Column("resolved_at", TS),
    sa.Index("idx_incidents_project_started", "project_id", sa.text("started_at DESC")),
    sa.Index("idx_incidents_project_rule", "project_id", "rule_id"),
)

notification_deliveries = sa.Table(
    "notification_deliveries", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("channel_id", sa.Text, nullable=False),
    sa.Column("incident_id", sa.Text),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index("idx_notification_deliveries_incident", "incident_id", "id"),
)

PARTITIONED = ("metrics", "log_metadata")
