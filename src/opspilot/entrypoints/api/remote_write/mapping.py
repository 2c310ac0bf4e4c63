"""Remote-write series → metric points (docs/otlp.md, "Prometheus remote-write").

`__name__` → metric name; every other label → a tag, kept as given (`job`, `instance`,
`service` included), so that the original label set is the name plus the tags; the
service is the `service` label, else the `job` label. NaN samples are not values: the
staleness markers Prometheus sends when a series disappears (and any other NaN) are
skipped and counted; other samples outside JSON ingest's limits are refused.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from opspilot.application.ingest import TimeCheck
from opspilot.domain.timewindow import LATEST
from opspilot.entrypoints.api.otlp.mapped import Mapped, MetricIn
from opspilot.entrypoints.api.otlp.values import (
    MAX_SERVICE_LENGTH,
    Refused,
    check_name,
    check_tags,
    check_value,
)
from opspilot.entrypoints.api.remote_write.metadata import decoded_metadata

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_MS = int((LATEST - EPOCH).total_seconds() * 1000)


def service_of(labels: dict[str, str]) -> str | None:
    service = labels.get("service") or labels.get("job") or None
    if service is not None and len(service) > MAX_SERVICE_LENGTH:
        raise Refused("labels.service", f"the service (`service`, else `job` label): at most"
                                        f" {MAX_SERVICE_LENGTH} characters")
    return service


def map_write(request: Any, times: TimeCheck) -> Mapped:
    mapped = Mapped()
    mapped.metadata, _ = decoded_metadata(request.metadata)
    stamps: dict[int, tuple[datetime, str | None]] = {}
    for si, series in enumerate(request.timeseries):
        where = f"timeseries[{si}]"
        if series.histograms:
            mapped.refuse(f"{where}.histograms", "native histograms are not supported: send"
                          " classic histograms (`_bucket` series)", len(series.histograms))
        try:
            tags = {label.name: label.value for label in series.labels}
            name = check_name(tags.pop("__name__", ""), "labels.__name__")
            service = service_of(tags)
            check_tags(tags, "labels")
        except Refused as refused:
            mapped.refuse(f"{where}.{refused.field}", refused.message, len(series.samples))
            continue
        for ni, sample in enumerate(series.samples):
            value = sample.value
            if math.isnan(value):
                mapped.skipped += 1
                continue
            try:
                check_value(value, "value")
                moment = _stamp(sample.timestamp, stamps, times)
            except Refused as refused:
                mapped.refuse(f"{where}.samples[{ni}].{refused.field}", refused.message)
                continue
            mapped.records.append(MetricIn(name, value, moment, service, tags))
    return mapped


def _stamp(millis: int, cache: dict[int, tuple[datetime, str | None]], times: TimeCheck) -> datetime:
    found = cache.get(millis)
    if found is None:
        if not 0 < millis < LATEST_MS:
            found = (EPOCH, "milliseconds since the epoch, from 1970 to before 5000")
        else:
            moment = EPOCH + timedelta(milliseconds=millis)
            found = (moment, times.problem(moment))
        cache[millis] = found
    if found[1] is not None:
        raise Refused("timestamp", found[1])
    return found[0]
