"""OpsPilot's own telemetry on Prometheus: every instrument, collector and exporter, and the
small server that serves a registry.

- `api`, `worker`, `alerts`, `ai`: each process role's instruments on its own registry. The
  use cases report through the observer ports (`WorkerObserver`, `AlertObserver`,
  `RetentionObserver`, `CompactionObserver` in `opspilot.domain.ports`) and the API's and
  AI service's middlewares and handlers through `ApiTelemetry`'s and `AiTelemetry`'s hook
  methods: nothing outside this package touches an instrument.
- `exporters`: collectors of the stores and the queue (PostgreSQL, OpenSearch, the asyncpg
  pool, the queue depth), read in the background, never on a scrape.
- `monitoring`: the background task that refreshes the exporters.
- `serving`: one /metrics for several registries, and the side server of the worker and
  the alert process.
"""
