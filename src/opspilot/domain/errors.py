"""One error hierarchy for the domain and application layers.

Adapters translate driver exceptions into these; the API maps each to an HTTP status and the
standard body `{"error": {"code", "message", "details"}}` in one middleware.
"""

from __future__ import annotations

from typing import Any


class OpsPilotError(Exception):
    code = "error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}


class ValidationError(OpsPilotError):
    """Input that breaks a documented rule. `field` names the offending input."""

    code = "invalid_input"

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(f"{field}: {message}", {"field": field, **details})
        self.field = field


class LimitExceeded(ValidationError):
    code = "limit_exceeded"


class QueryExecutionError(OpsPilotError):
    """A well-formed query that cannot be answered for this data (PromQL's `execution`
    errors: many-to-many matching, duplicate label sets)."""

    code = "execution"


class QueryTimeout(OpsPilotError):
    """A query that ran past its time budget (the caller's `timeout` or the server's) and was
    cancelled (PromQL's `timeout` error)."""

    code = "timeout"


class Unauthenticated(OpsPilotError):
    code = "unauthenticated"


class Forbidden(OpsPilotError):
    code = "forbidden"


class NotFound(OpsPilotError):
    code = "not_found"


class Conflict(OpsPilotError):
    code = "conflict"


class UnsupportedMediaType(OpsPilotError):
    code = "unsupported_media_type"


class RateLimited(OpsPilotError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float, **details: Any) -> None:
        super().__init__(message, {"retry_after": retry_after, **details})
        self.retry_after = retry_after


class ServiceUnavailable(OpsPilotError):
    """A backing service (broker, store, AI) cannot take or answer the request now."""

    code = "service_unavailable"

    def __init__(self, message: str, retry_after: float = 5.0, **details: Any) -> None:
        super().__init__(message, {"retry_after": retry_after, **details})
        self.retry_after = retry_after


class TransientStoreError(ServiceUnavailable):
    """A write or read failed for a reason that may pass (connection lost, timeout)."""

    code = "store_unavailable"


class RecordsRejected(OpsPilotError):
    """A store refused the data itself (PostgreSQL data error, OpenSearch mapping refusal):
    writing the same records again cannot succeed, so the worker spends no retry on them;
    it isolates the records at fault and dead-letters only those."""

    code = "records_rejected"


class DeliveryFailed(OpsPilotError):
    """A notification did not arrive. `retryable` says whether trying again may help."""

    code = "delivery_failed"

    def __init__(self, message: str, retryable: bool = True, **details: Any) -> None:
        super().__init__(message, {"retryable": retryable, **details})
        self.retryable = retryable
