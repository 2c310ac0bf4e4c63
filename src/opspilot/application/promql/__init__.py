"""PromQL over the metric store: the Prometheus HTTP API\x27s use cases (ADR 0016)."""
