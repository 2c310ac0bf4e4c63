"""Durations, time buckets and time ranges: parsing and the limits that bound a query."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import attrs

from opspilot.domain.errors import LimitExceeded, ValidationError

_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamps the service accepts: buckets are aligned to the Unix epoch and may be up to
# 999,999 days wide, so a bound outside [1970, 5000) could floor or step a bucket past what a
# datetime can hold (year 1 to 9999).
EARLIEST = _EPOCH
LATEST = datetime(5000, 1, 1, tzinfo=UTC)


def parse_duration(text: str, field: str) -> timedelta:
    """`<n>{s,m,h,d}` (e.g. 30s, 5m, 1h, 1d) → timedelta; zero is refused."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValidationError(field, f"expected <n>s|m|h|d such as 1m or 1h, got {text!r}")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValidationError(field, "must be greater than zero")
    return timedelta(seconds=seconds)


_COMPOUND = re.compile(r"^(?=\d)(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?$")


def parse_compound_duration(text: str, field: str) -> timedelta:
    """A Prometheus-style duration, units in descending order (`0s`, `90s`, `1m30s`,
    `2d12h`) → timedelta; zero is allowed (how long a condition must hold)."""
    match = _COMPOUND.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValidationError(field, f"expected a duration such as 0, 90s or 1m30s, got {text!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def require_aware(value: datetime, field: str) -> datetime:
    """A timestamp with a zone, within [EARLIEST, LATEST)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, "timestamp needs a time zone (e.g. 2024-01-01T12:00:00Z)")
    if not EARLIEST <= value < LATEST:
        raise ValidationError(
            field,
            f"timestamp out of range: from {EARLIEST.isoformat()} to before {LATEST.isoformat()}",
        )
    return value


@attrs.frozen
class TimeRange:
    """A half-open range [start, end) of aware datetimes."""

    start: datetime
    end: datetime

    @classmethod
    def checked(
        cls, start: datetime, end: datetime, max_span: timedelta | None = None
    ) -> TimeRange:
        require_aware(start, "start_time")
        require_aware(end, "end_time")
        if end <= start:
            raise ValidationError("end_time", "must be after start_time")
        if max_span is not None and end - start > max_span:
            raise LimitExceeded(
                "end_time",
                f"range longer than the maximum of {format_duration(max_span)}",
                max=format_duration(max_span),
            )
        return cls(start, end)

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@attrs.frozen
class Bucketing:
    """Fixed-width buckets aligned to the Unix epoch (same as `date_bin(width, ts, epoch)`)."""

    width: timedelta

    @classmethod
    def parse(cls, text: str, field: str = "time_bucket") -> Bucketing:
        return cls(parse_duration(text, field))

    @property
    def label(self) -> str:
        return format_duration(self.width)

    def floor(self, moment: datetime) -> datetime:
        """The start of `moment`'s bucket, in UTC. Aligned to the Unix epoch whatever the
        offset of `moment` (1h buckets of a +05:30 window start on the UTC hour), and
        computed on absolute time, so zones with DST do not shift buckets."""
        steps = (moment - _EPOCH) // self.width
        return _EPOCH + steps * self.width

    def count_over(self, window: TimeRange) -> int:
        first = self.floor(window.start)
        return int((window.end - first) / self.width + 0.999999)

    def check_count(self, window: TimeRange, max_buckets: int) -> None:
        if self.count_over(window) > max_buckets:
            raise LimitExceeded(
                "time_bucket",
                f"{self.count_over(window)} buckets over the range; the maximum is {max_buckets}",
                max=max_buckets,
            )

    def starts_over(self, window: TimeRange) -> list[datetime]:
        starts, moment = [], self.floor(window.start)
        while moment < window.end:
            starts.append(moment)
            moment += self.width
        return starts


def utc_day_start(moment: datetime) -> datetime:
    """Midnight UTC of the day `moment` falls on: the unit retention drops data in."""
    utc = moment.astimezone(UTC)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)
