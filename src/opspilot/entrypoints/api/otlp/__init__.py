"""OTLP/HTTP ingest (`/v1/metrics`, `/v1/logs`): decode with opentelemetry-proto, map to the
same fields as JSON ingest, then the same use case and queue. See docs/otlp.md."""
