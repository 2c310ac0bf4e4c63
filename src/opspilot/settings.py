"""Settings from `OPSPILOT_*` environment variables. None set: everything in memory."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSPILOT_", extra="ignore")

    # Each URL switches one port to its real adapter.
    database_url: str | None = Field(None, description="postgresql://user:pw@host:port/db")
    opensearch_url: str | None = None
    amqp_url: str | None = None
    redis_url: str | None = None
    ai_url: str | None = Field(None, description="base URL of `opspilot ai`")

    # Isolation of shared services (tests, several installations on one cluster).
    database_schema: str | None = None
    index_prefix: str = "opspilot-"
    queue_prefix: str = ""
    cache_prefix: str = "opspilot:"

    # Accounts and secrets (docs/security.md).
    admin_token: str | None = Field(
        None, description="enables /api/admin/* for callers presenting it (opspilot api)"
    )
    secret_key: str | None = Field(
        None, description="comma-separated Fernet keys, the first current: seals cached "
        "principals and encrypts channel secrets",
    )

    state_dir: str | None = Field(
        None, description="where `serve` leaves its generated admin token "
        "(default $XDG_STATE_HOME/opspilot or ~/.local/state/opspilot)",
    )

    @field_validator("admin_token")
    @classmethod
    def long_enough(cls, value: str | None) -> str | None:
        if not value:  # unset, or set empty (compose's `${OPSPILOT_ADMIN_TOKEN:-}`)
            return None
        if len(value) < 24:
            raise ValueError("OPSPILOT_ADMIN_TOKEN must be at least 24 characters")
        return value

    @field_validator("email_allowed_domains")
    @classmethod
    def domain_list(cls, value: str) -> str:
        from opspilot.domain.recipients import EmailDomains

        EmailDomains.parse(value)  # a typo fails at start-up, not at the first channel
        return value

    # Limits (documented in the README).
    max_query_range_days: int = 90
    max_buckets: int = 11_000
    promql_max_samples: int = 5_000_000  # samples one PromQL query may read
    promql_max_series: int = 10_000  # series one PromQL selector may match
    max_body_bytes: int = 10 * 1024 * 1024
    queue_max_depth: int = 200_000
    ingest_rate: float = 50.0
    ingest_burst: int = 200
    query_rate: float = 20.0
    query_burst: int = 100
    admin_rate: float = 1.0  # /api/admin/* requests per second and client address
    admin_burst: int = 20
    rate_limits_enabled: bool = True
    # What one API process takes on at once (docs/adr/0014-hardening.md, README limits).
    max_inflight_bytes: int = 32 * 1024 * 1024  # request bodies held at once, inflated
    max_connections: int = 1000  # open client connections; more are answered 503 and closed
    http_idle_seconds: float = 15.0  # a connection idle, or still sending its headers
    http_body_seconds: float = 30.0  # reading one request body
    auth_failure_rate: float = 1.0  # 401/403 answers per second and client address
    auth_failure_burst: int = 20
    unknown_credential_seconds: float = 60.0
    # /metrics on the API port answers anyone: series per project id only when enabled.
    metrics_per_project: bool = False  # an unknown key or token is not looked up again

    # Worker.
    worker_batch_records: int = 1000
    worker_flush_seconds: float = 0.2
    worker_prefetch: int = 64

    # Alerts.
    alert_interval_seconds: float = 60.0
    webhook_allowlist: str = ""
    # E-mail channels: recipient domains (`example.com`, `*.example.com`; empty: any domain),
    # and test notifications per hour per channel and per project (0: no cap).
    email_allowed_domains: str = ""
    channel_tests_per_hour: int = 5
    project_channel_tests_per_hour: int = 20
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_sender: str = "opspilot@localhost"
    # Where OpsPilot's API is reached from outside (e.g. https://host/observability when a
    # host mounts it under a prefix): makes the incident links in notifications absolute.
    public_url: str = ""

    # The daily log indices' layout (ADR 0028): one shard, no replica on a single node; on a
    # cluster one primary per data node and one replica, so a node's loss loses no write.
    log_index_shards: int = Field(1, ge=1, le=64)
    log_index_replicas: int = Field(0, ge=0, le=5)

    log_retention_days: int = 30
    metric_retention_days: int = 90  # raw metric values (hot rows and compacted blocks)
    # Hourly summaries (count, sum, min, max, percentile sketch) outlive the values
    # (downsampling, ADR 0017); never shorter than metric_retention_days; 0 keeps them forever.
    metric_summary_retention_days: int = 730

    # Compaction of closed hours into per-series blocks (ADR 0017).
    metric_compaction: bool = True
    metric_compaction_delay_minutes: float = 30.0  # an hour is compacted this long after it ends
    metric_compaction_every_seconds: float = 300.0
    metric_compaction_max_periods: int = 500  # per run
