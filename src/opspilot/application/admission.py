"""How much request data one process holds at once.

Parsing a JSON ingest body costs several times its size in Python objects (12 concurrent
9 MB ingests took an API from 390 MB to a 900 MB peak), so the API reserves each body's
(inflated) size here before reading it, and answers 503 with Retry-After when the budget is
spent instead of growing without bound.
"""

from __future__ import annotations

from opspilot.domain.errors import ServiceUnavailable


class ByteBudget:
    """A counter of bytes in flight, shared by the requests of one process (one event loop:
    no lock needed, no await between the check and the update)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the budget must be at least one byte")
        self.limit = limit
        self.in_use = 0

    def take(self, size: int) -> int:
        """Reserve `size` bytes; ServiceUnavailable (503, Retry-After) when they do not fit.
        A single body larger than the whole budget is admitted when nothing else is in
        flight, so the budget never refuses what the body-size limit allows."""
        if self.in_use and self.in_use + size > self.limit:
            raise ServiceUnavailable(
                f"the server is busy reading other requests ({self.in_use} of {self.limit}"
                " bytes in flight); retry shortly", retry_after=1.0, field="body",
            )
        self.in_use += size
        return size

    def give_back(self, size: int) -> None:
        self.in_use = max(0, self.in_use - size)
